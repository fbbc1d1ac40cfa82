"""Markdown tables from a finished run's results.json files (for benchmarks/README.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MODES = ("jax_jit", "jax_jit_rule", "jax_eager", "torch_eager", "torch_compile", "torch_func", "jax_jit_bf16",
         "torch_eager_bf16")


# What each variant of convshapes' max-pool study is, by its key in results.json.
MAXPOOL_LABELS = {"reduce_window": "select_and_scatter gradient", "tap_masks": "first-max mask per tap",
                  "index": "jaxmtl max_pool2d, gathered first-max index"}


def _allocator(m: dict) -> str:
    if m.get("allocator") == "mimalloc":
        return "mimalloc (preloaded)"
    return "glibc, " + ("keeps freed memory" if m.get("malloc_keeps_freed_memory") else "default settings")


def jit_compile_cell(mode: dict[str, Any]) -> str:
    """JAX jit's compile seconds, saying so when they include measuring conv plans (an empty plan cache)."""
    measured = sum(p.get("source") == "measured" for p in mode.get("conv_plans") or [])
    return f"{mode.get('compile_s', 0):.1f}" + (f" (incl. measuring {measured} conv plans)" if measured else "")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _ms(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "-"
    return f"{stat['median'] * 1e3:.1f} ({stat['min'] * 1e3:.0f}-{stat['max'] * 1e3:.0f}, n={stat['reps']})"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _table(title: str | None, header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown lines: optional '### title', the header row, its separator, the rows, a blank line."""
    head = [f"### {title}", ""] if title else []
    return head + ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] \
        + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def markdown(out: Path) -> str:
    lines: list[str] = []
    top = _load(out / "results.json") or {}
    m = top.get("machine") or {}
    if m:
        lines += [f"Machine: {m.get('cpu_model')} ({', '.join(m.get('cpu_flags', []))}), {m.get('cores')} cores; "
                  f"XLA threads {m.get('xla_threads')}, torch threads {m.get('torch_threads')} "
                  f"(interop {m.get('torch_interop_threads')}); jax {m.get('jax')}, jaxlib {m.get('jaxlib')}, "
                  f"flax {m.get('flax')}, optax {m.get('optax')}, torch {m.get('torch')}, numpy {m.get('numpy')}; "
                  f"allocator (jaxmtl/cpu_malloc.py): {_allocator(m)}; "
                  f"XLA compiler options (jaxmtl/cpu_compiler.py): {m.get('xla_compiler_options')}; "
                  f"load average at start {m.get('load_average')}; wall time {top.get('wall_s', 0) / 60:.1f} min.", ""]
    steps = [r for r in (_load(out / "step" / c / "results.json") for c in ("tiny", "small", "resnet18")) if r]
    if steps:
        lines += _table("Training step (float32, the *_bf16 modes bfloat16 compute; median ms (min-max, reps))",
                        ["config", *MODES, "jit compile s", "torch.compile compile s"],
                        [[r["config"], *(_ms(r["modes"].get(k, {}).get("step")) for k in MODES),
                          jit_compile_cell(r["modes"].get("jax_jit", {})),
                          f"{r['modes'].get('torch_compile', {}).get('compile_s', 0):.1f}"] for r in steps])
        lines += _table(None, ["config", "jit vs jit on the fallback conv rule", "jit vs JAX eager",
                               "jit vs torch eager", "jit vs torch.compile",
                                      "jit vs torch.func", "bf16: jit vs torch eager (autocast)",
                                      "break-even steps vs JAX eager", "samples/s jit",
                                      "samples/s torch eager", "load avg start/end"],
                               [[r["config"], _x(r["speedups"].get("jit_vs_jax_jit_rule")),
                                 _x(r["speedups"].get("jit_vs_jax_eager")),
                                 _x(r["speedups"].get("jit_vs_torch_eager")),
                                 _x(r["speedups"].get("jit_vs_torch_compile")),
                                 _x(r["speedups"].get("jit_vs_torch_func")),
                                 _x(r["speedups"].get("jit_bf16_vs_torch_eager_bf16")),
                                 _x(r["break_even_steps"].get("vs_jax_eager")),
                                 f"{r['modes']['jax_jit']['samples_per_s']:.1f}",
                                 f"{r['modes'].get('torch_eager', {}).get('samples_per_s', float('nan')):.1f}",
                                 f"{r.get('load_average_start')} / {r.get('load_average_end')}"] for r in steps])
    xo = _load(out / "crossover" / "results.json")
    if xo:
        xm = list(xo["rows"][0]["modes"])  # the modes the sweep timed
        lines += _table(f"Crossover: {xo['config']}'s shapes ({xo['image_size']}x{xo['image_size']}, widths "
                        f"{xo['widths']}, T={xo['seq_len']}) against batch size B; median ms, GFLOP/s in brackets",
                        ["B", "GFLOP/step", *xm, "jit vs torch eager", "jit vs torch.compile"],
                        [[str(r["batch_size"]), f"{r['gflop_per_step']:.2f}",
                          *(f"{r['modes'][m]['step']['median'] * 1e3:.1f} ({r['modes'][m]['gflops']:.0f})" for m in xm),
                          _x(r["speedups"].get("jit_vs_torch_eager")), _x(r["speedups"].get("jit_vs_torch_compile"))]
                         for r in xo["rows"]])
        lines.append("Fit t(B) = t0 + c * B per mode; B_half = t0 / c is the crossover from overhead-bound to "
                     "kernel-bound: " + "; ".join(
                         f"{m} t0 {f['t0_s'] * 1e3:.1f} ms, c {f['per_sample_s'] * 1e3:.2f} ms/sample, B_half "
                         + ("-" if f["b_half"] is None else f"{f['b_half']:.1f}") for m, f in xo["fits"].items()) + ".")
        lines.append("")
    b = _load(out / "bptt" / "results.json")
    if b:
        vs = b["variants"]
        lines += _table(f"BPTT, GRU alone (B={b['batch_size']}, in={b['gru_input']}, H={b['gru_hidden']}), fwd+bwd",
                        ["T", *(f"{v} compile s" for v in vs), *(f"{v} ms" for v in vs), "torch nn.GRU ms"],
                        [[str(r["T"]), *(f"{r[v]['compile_s']:.2f}" for v in vs),
                          *(f"{r[v]['step']['median'] * 1e3:.2f}" for v in vs),
                          f"{r['torch_gru']['step']['median'] * 1e3:.2f}"] for r in b["rows"]])
    mem = _load(out / "memory" / "results.json")
    if mem:
        lines += _table(f"Memory, {mem['config']} training step",
                        ["remat", "XLA temp MiB", "vs none", "peak RSS MiB", "step ms", "time vs none", "compile s"],
                        [[r["variant"], f"{r['memory_analysis_mb']['temp_size_in_bytes']:.1f}",
                          f"{-r['temp_saving_vs_none'] * 100:+.1f}%", f"{r['peak_rss_mb']:.0f}",
                          f"{r['step']['median'] * 1e3:.1f}", f"{r['time_cost_vs_none']:.2f}x",
                          f"{r['compile_s']:.1f}"] for r in mem["rows"]])
    eff = _load(out / "efficiency" / "results.json")
    if eff:
        ceilings = eff["matmul_ceilings"]
        title = "; ".join(f"{d} JAX {c['jax_gflops']:.1f}, torch {c.get('torch_gflops', float('nan')):.1f}"
                          for d, c in ceilings.items())
        n = next(iter(ceilings.values()))["n"]
        lines += _table(f"Efficiency (GFLOP/s and % of the float32 / bf16 matmul ceilings, {n}^2 in this run: "
                        f"{title} GFLOP/s)",
                        ["config", "analytic GFLOP/step", "XLA cost_analysis GFLOP", *MODES],
                        [[r["config"], f"{r['analytic_flops']['total'] / 1e9:.2f}",
                          f"{(r['xla_cost_analysis_flops'] or float('nan')) / 1e9:.2f}",
                          *(f"{r['modes'][k]['gflops']:.1f} ({r['modes'][k]['fraction_of_float32_ceiling'] * 100:.0f}% / "
                            f"{r['modes'][k]['fraction_of_bfloat16_ceiling'] * 100:.0f}%)"
                            if k in r["modes"] else "-" for k in MODES)] for r in eff["rows"]])
    cs = _load(out / "conv_shapes" / "results.json")
    if cs:
        from jaxmtl.nn.conv_impl import FORMULATIONS

        rows = [[r["config"], f"{r['layer']} (x{r['count']})", str(r["n"]), str(r["h"]), f"{r['cin']}->{r['cout']}",
                 f"{r['k']}/{r['stride']}",
                 *("/".join(f"{r[d][f]['median'] * 1e3:.1f}" if f in r[d] else "-" for f in FORMULATIONS) + f" **{r[d + '_winner']}**"
                   for d in ("fwd", "dx", "dw")),
                 "/".join(r["plan"]), f"{r['plan_loss_s'] * 1e3:.1f}"] for r in cs["rows"]]
        lines += _table("Conv formulations per shape (median ms per direction: " + " / ".join(FORMULATIONS)
                        + "; winner; the fallback rule `rule_plan`)",
                        ["config", "layer", "N", "HxW", "Cin->Cout", "k/s", "fwd", "dx", "dw", "plan", "plan loss ms"],
                        rows)
        if all("torch" in r for r in cs["rows"]):
            from benchmarks.conv_shapes import DIRECTIONS, torch_comparison_cells

            lines += _table("Conv time per shape against torch (median ms: JAX with the rule / JAX's winner / "
                            "torch's own convolution, NCHW, each in its own process)",
                            ["config", "layer", *DIRECTIONS],
                            [[r["config"], f"{r['layer']} (x{r['count']})", *torch_comparison_cells(r)]
                             for r in cs["rows"]])
            for name, t in cs["step_conv_totals"].items():
                lines.append(f"Convolutions of one {name} training step (shapes x layers sharing them, without the "
                             f"stem's dX): JAX rule {t['jax_rule_s'] * 1e3:.1f} ms, JAX per-direction winners "
                             f"{t['jax_best_s'] * 1e3:.1f} ms, torch {t['torch_s'] * 1e3:.1f} ms.")
                lines.append("")
        for p in cs.get("maxpool", []):
            names = list(p["step"])
            lines.append(f"Max-pool 3x3/2 fwd+bwd, {p['config']} {p['shape']}: "
                         + " / ".join(f"{v} ({MAXPOOL_LABELS.get(v, v)})" for v in names) + ": "
                         + " / ".join(f"{p[v]['median'] * 1e3:.1f}" for v in names)
                         + " ms; the whole training step with each (interleaved): "
                         + " / ".join(f"{p['step'][v]['median'] * 1e3:.1f}" for v in names) + " ms.")
            lines.append("")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench_out", help="directory of a finished `all` run")


def run(args: argparse.Namespace) -> str:
    text = markdown(Path(args.out))
    (Path(args.out) / "summary.md").write_text(text)
    print(text)
    return text
