"""Per-layer-shape micro-benchmark: each conv formulation for forward, dX and dW.

For every distinct conv shape of the tiny / small / resnet18 models (batch
N = B*T frames), times under jit:
  fwd: y = conv(x, W)                xla | im2col (patches @ W) | shift (sum of k*k view @ W[i,j])
  dx:  transpose of conv in x, at dY xla (XLA's transposed conv) | im2col (col2im) | shift (k*k dY @ W[i,j]^T, padded, summed)
  dw:  transpose of conv in W, at dY xla (kernel-gradient conv) | im2col (patches^T dY) | shift (k*k view^T @ dY),
       behind the step's fused BatchNorm/ReLU producer (the measured plan times it the same way)
plus im2colT (patches built transposed) and, for stride-2 convs, s2d (a
stride-1 conv on space-to-depth blocks) in every direction, compiled with
jaxmtl's XLA:CPU options (jaxmtl/cpu_compiler.py), and records the winner of
each direction (the functions are jaxmtl/nn/conv_plan.py's, which measures the plan the same
way). `python -m benchmarks convshapes` writes results.json with the table; the fallback rule is
checked against these winners (the "plan_agrees" column). torch's own
convolution is timed on the same shapes, in a process of its own started
before any JAX work (benchmarks/conv_shapes_torch.py), and each config's rows
are summed, weighted by how many layers share a shape, into the convolution
time of one training step: JAX with the fallback rule, JAX with the
per-direction winners, torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import reduce
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.timing import aot_compile, machine_info, time_budgeted, time_interleaved, write_results
from jaxmtl.config import ModelConfig, get_config
from jaxmtl.nn.conv_plan import DIRECTIONS, ConvShape, direction_fn, rule_plan
from jaxmtl.nn.conv_impl import FORMULATIONS, out_size, shifted
from jaxmtl.nn.pooling import max_pool2d


def conv_shapes(cfg: ModelConfig) -> list[dict[str, Any]]:
    """Distinct conv shapes of the model's ResNet, with how many layers share each."""
    n, size = cfg.batch_size * cfg.seq_len, cfg.image_size
    shapes: dict[tuple, dict[str, Any]] = {}

    def add(name, h, cin, cout, k, s, p):
        key = (n, h, cin, cout, k, s, p)
        if key in shapes:
            shapes[key]["count"] += 1
        else:
            shapes[key] = dict(config=cfg.name, layer=name, n=n, h=h, cin=cin, cout=cout,
                               k=k, stride=s, pad=p, count=1)

    add("stem", size, cfg.in_channels, cfg.widths[0], 7, 2, 3)
    h = out_size(out_size(size, 7, 2, 3), 3, 2, 1)
    cin = cfg.widths[0]
    for i, w in enumerate(cfg.widths):
        s = 1 if i == 0 else 2
        add(f"layer{i + 1}.0.conv1", h, cin, w, 3, s, 1)
        if s != 1 or cin != w:
            add(f"layer{i + 1}.0.downsample", h, cin, w, 1, s, 0)
        h = out_size(h, 3, s, 1)
        for _ in range(3):  # layerN.0.conv2, layerN.1.conv1, layerN.1.conv2
            add(f"layer{i + 1}.x.conv", h, w, w, 3, 1, 1)
        cin = w
    return list(shapes.values())


def conv_shape(row: dict[str, Any], dtype: str = "float32") -> ConvShape:
    """The planner's ConvShape of a `conv_shapes` row (square maps)."""
    return ConvShape(row["n"], row["h"], row["h"], row["cin"], row["cout"], row["k"], row["stride"], row["pad"], dtype)


def measure_shape(shape: dict[str, Any], budget_s: float, dtype=jnp.float32) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    row = dict(shape)
    conv = conv_shape(shape, jnp.dtype(dtype).name)
    for direction in DIRECTIONS:
        times = {}
        for method in conv.candidates():
            fn, specs = direction_fn(direction, method, conv)
            args = [jnp.asarray(rng.standard_normal(a.shape), dtype) for a in specs]
            compiled, _ = aot_compile(fn, *args)
            times[method] = time_budgeted(lambda: compiled(*args), budget_s)
        row[direction] = times
        row[f"{direction}_winner"] = min(times, key=lambda m: times[m]["median"])
    plan = rule_plan(conv)
    row["plan"] = list(plan)
    row["plan_agrees"] = [plan[i] == row[f"{d}_winner"] for i, d in enumerate(DIRECTIONS)]
    # Time lost by the plan against the per-direction winner (seconds, per layer).
    row["plan_loss_s"] = sum(row[d][plan[i]]["median"] - row[d][row[f"{d}_winner"]]["median"]
                             for i, d in enumerate(DIRECTIONS))
    return row


def _maxpool_reduce_window(x: jax.Array) -> jax.Array:
    """MaxPool2d(3, 2, 1) as lax.reduce_window: its gradient is XLA's select_and_scatter."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))


# jaxmtl's former max_pool2d: the same forward (max_pool2d's own) and tie rule, the winner
# kept as a per-tap mask. The tangent is sum over taps t of where(winner == t, view_t(dx), 0),
# so reverse mode adds k*k padded terms, and XLA:CPU fuses the winner's compare chain into
# each of them (a second copy of the padded input feeds it); max_pool2d's gathered index
# replaced it.
_maxpool_tap_masks = jax.custom_jvp(max_pool2d.fun, nondiff_argnums=(1, 2, 3))


@_maxpool_tap_masks.defjvp
def _maxpool_tap_masks_jvp(kernel_size, stride, padding, primals, tangents):
    (x,), (dx,) = primals, tangents
    views = shifted(x, kernel_size, stride, padding, pad_value=-jnp.inf)
    out = reduce(jnp.maximum, views)
    winner = jnp.full(out.shape, len(views) - 1, jnp.int8)
    for t in range(len(views) - 2, -1, -1):  # last to first: the first maximum wins
        winner = jnp.where(views[t] == out, jnp.asarray(t, jnp.int8), winner)
    dviews = shifted(dx, kernel_size, stride, padding)
    return out, sum(jnp.where(winner == t, dv, jnp.zeros_like(dv)) for t, dv in enumerate(dviews))


def maxpool_study(cfg: ModelConfig, budget_s: float) -> dict[str, Any]:
    """The stem's max-pool: lax.reduce_window, per-tap masks and jaxmtl's max_pool2d (all route ties like torch).

    Timed two ways: the pool's own forward+backward (output and the input
    gradient of a given cotangent), and the whole training step of `cfg` with
    the model's pool swapped (interleaved rounds); the model's choice follows
    the whole step.
    """
    import jaxmtl.model as model_mod
    from benchmarks import steps_impl as S

    n, h = cfg.batch_size * cfg.seq_len, out_size(cfg.image_size, 7, 2, 3)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((n, h, h, cfg.widths[0])), jnp.float32)
    row: dict[str, Any] = {"config": cfg.name, "shape": list(x.shape)}
    variants = {"reduce_window": lambda a, kernel_size, stride, padding: _maxpool_reduce_window(a),
                "tap_masks": _maxpool_tap_masks, "index": max_pool2d}
    steps = {}
    g = jnp.asarray(np.random.default_rng(1).standard_normal((n, h // 2, h // 2, cfg.widths[0])), jnp.float32)
    for name, f in variants.items():
        def fwd_bwd(a, g, f=f):
            # A given cotangent: a scalar loss such as sum(sin(pool)) would put
            # its own backward (recomputing the pool per element) into the figure.
            out, pull = jax.vjp(lambda a_: f(a_, 3, 2, 1), a)
            return out, pull(g)[0]
        compiled, _ = aot_compile(fwd_bwd, x, g)
        row[name] = time_budgeted(lambda: compiled(x, g), budget_s)
        original = model_mod.max_pool2d
        model_mod.max_pool2d = f  # only while tracing this step
        try:
            step, args = S.jax_setup(cfg)
            compiled_step, _ = aot_compile(step, *args)
        finally:
            model_mod.max_pool2d = original
        steps[name] = (lambda c=compiled_step, a=args: c(*a))
    row["step"] = time_interleaved(steps, 20 * budget_s, min_reps=10)
    return row


def torch_rows(shapes: list[dict[str, Any]], budget_s: float) -> dict[str, Any]:
    """torch's forward/dX/dW stats per shape, measured by benchmarks/conv_shapes_torch.py in its own process."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.conv_shapes_torch", json.dumps(shapes), str(budget_s)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the torch conv-shapes worker failed (status {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def directions_needed(row: dict[str, Any]) -> tuple[str, ...]:
    """The directions a training step computes for this shape: the stem's input is the images, so
    neither framework computes its dX."""
    return tuple(d for d in DIRECTIONS if not (row["layer"] == "stem" and d == "dx"))


def step_conv_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per config, the convolution seconds of one training step (per-shape medians x layers sharing
    the shape): {"jax_rule_s", "jax_best_s", "torch_s"}."""
    totals: dict[str, dict[str, float]] = {}
    for r in rows:
        t = totals.setdefault(r["config"], {"jax_rule_s": 0.0, "jax_best_s": 0.0, "torch_s": 0.0})
        for d in directions_needed(r):
            t["jax_rule_s"] += r["count"] * r[d][r["plan"][DIRECTIONS.index(d)]]["median"]
            t["jax_best_s"] += r["count"] * r[d][r[f"{d}_winner"]]["median"]
            t["torch_s"] += r["count"] * r["torch"][d]["median"]
    return totals


def torch_comparison_cells(row: dict[str, Any]) -> list[str]:
    """Per direction "JAX rule / JAX winner / torch" in ms, marked where the step does not compute it."""
    return [f"{row[d][row['plan'][i]]['median'] * 1e3:.2f}/{row[d][row[d + '_winner']]['median'] * 1e3:.2f}/"
            f"{row['torch'][d]['median'] * 1e3:.2f}" + ("" if d in directions_needed(row) else " (unused)")
            for i, d in enumerate(DIRECTIONS)]


def print_torch_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'config':9}{'layer':22}{'x':>3}  " + "  ".join(f"{d + ' JAX rule/best/torch ms':30}" for d in DIRECTIONS))
    for r in rows:
        print(f"{r['config']:9}{r['layer']:22}{r['count']:3}  " + "  ".join(f"{c:30}" for c in torch_comparison_cells(r)))
    for name, t in step_conv_totals(rows).items():
        print(f"{name}: convolutions of one training step, JAX rule {t['jax_rule_s'] * 1e3:.1f} ms, JAX per-direction "
              f"winners {t['jax_best_s'] * 1e3:.1f} ms, torch {t['torch_s'] * 1e3:.1f} ms")


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'config':9}{'layer':22}{'N':>4}{'HxW':>6}{'Cin':>5}{'Cout':>5}{'k/s':>5}  "
          + "  ".join(f"{d + ': ' + '/'.join(FORMULATIONS) + ' ms (win)':34}" for d in DIRECTIONS) + "  plan")
    for r in rows:
        cells = []
        for d in DIRECTIONS:
            cells.append("/".join(f"{r[d][m]['median'] * 1e3:.2f}" if m in r[d] else "-" for m in FORMULATIONS)
                         + f" ({r[d + '_winner']})")
        print(f"{r['config']:9}{r['layer']:22}{r['n']:4}{r['h']:>6}{r['cin']:5}{r['cout']:5}"
              f"{r['k']:>3}/{r['stride']}  " + "  ".join(f"{c:34}" for c in cells) + "  " + "/".join(r["plan"])
              + ("" if all(r["plan_agrees"]) else f"  (loss {r['plan_loss_s'] * 1e3:.2f} ms)"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", default="tiny,small,resnet18")
    p.add_argument("--budget", type=float, default=0.3, help="seconds of timing per formulation")
    p.add_argument("--out", default="bench_out/conv_shapes")


def run(args: argparse.Namespace) -> dict[str, Any]:
    shapes = [s for name in args.configs.split(",") for s in conv_shapes(get_config(name))]
    torch_side = torch_rows(shapes, args.budget)  # first: no JAX work has started threads yet
    rows = []
    for shape, t in zip(shapes, torch_side["rows"]):
        rows.append({**measure_shape(shape, args.budget), "torch": t})
        print_table(rows[-1:])
    print_table(rows)
    print_torch_table(rows)
    pools = [maxpool_study(get_config(name), args.budget) for name in args.configs.split(",")]
    for p in pools:
        names = list(p["step"])  # the study's variants, in its order
        print(f"max-pool fwd+bwd {p['config']:9} {p['shape']}, {' / '.join(names)}: "
              + " / ".join(f"{p[v]['median'] * 1e3:.2f}" for v in names) + " ms; whole training step with each: "
              + " / ".join(f"{p['step'][v]['median'] * 1e3:.1f}" for v in names) + " ms")
    results = {"machine": machine_info(), "torch_threads": torch_side["torch_threads"], "rows": rows,
               "step_conv_totals": step_conv_totals(rows), "maxpool": pools}
    write_results(args.out, results)
    return results
