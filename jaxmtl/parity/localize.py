"""Where a port goes wrong: every layer's inputs, outputs, state and gradients, side by side.

One train-mode forward and backward per framework on the same inputs and
weights, with each layer (a module owning tensors, `jaxmtl.parity.layers`)
observed on its first call:
- torch: a forward pre-hook hands the layer a clone of each floating input and
  a forward hook hands the rest of the network a clone of its output, so
  `torch.autograd.grad` can take the gradient with respect to both (and an
  in-place op downstream, like ReLU(inplace=True), cannot overwrite what was captured);
- JAX: `layers.intercept_calls` adds a zero to each floating input and output,
  and `jax.grad` with respect to those zeros gives the same two gradients.
The gradient "with respect to a layer's input" is the one that flows back
through that layer alone (not through other consumers of the same tensor).

Per layer, relative errors (`jaxmtl.trees.rel_err`, torch the reference) of:
input, output, state after the forward (buffers, e.g. BatchNorm running
statistics), gradient w.r.t. the output, gradient w.r.t. the input, and the
gradient of its own parameters. Activations are compared in JAX's layout;
a torch activation of a channels-first layer (Conv, BatchNorm) has its
channel axis moved last, others are compared as they are or reshaped when
only a unit axis differs (nn.GRU's h_n (1, B, H) against (B, H)).

The verdicts:
- forward: the first layer, in call order, whose output or state is out of
  tolerance while its input is within it. If the input already differs, the
  divergence entered outside the parameterised layers, before this one.
- backward (only when the forward agrees at every layer, since a forward
  divergence changes every gradient after it): the first layer, in backward
  (reverse call) order, whose input gradient or parameter gradient is out of
  tolerance while the gradient reaching its output is within it.
A quantity the two sides cannot put side by side (different numbers of arrays,
shapes that do not correspond) is not compared: it is left empty with a note,
never counted as a divergence.
Layers are paired through the pair's conversion table (torch module of each
row <-> JAX module of the same row).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmtl.parity.layers import intercept_calls, torch_layers
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.trees import flatten_state, rel_err

CHANNELS_FIRST = ("Conv1d", "Conv2d", "Conv3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
                  "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "GroupNorm")


class LayerErrors(NamedTuple):
    torch_name: str
    jax_name: str
    type: str
    input: float
    output: float
    state: float | None         # None: the layer has no buffers
    grad_output: float
    grad_input: float | None    # None: no floating input
    grad_params: float | None   # None: no parameters
    note: str = ""              # why a quantity could not be compared (then it is None)


class Divergence(NamedTuple):
    layer: str              # the torch name of the layer
    direction: str          # "forward" or "backward"
    what: str               # the quantity that is out of tolerance
    error: float
    inside: bool            # False: the divergence entered before this layer, outside any layer

    def describe(self) -> str:
        if self.inside:
            return f"first divergent layer {self.layer} ({self.direction})"
        if self.direction == "forward":
            return (f"first divergent layer {self.layer} (forward; its input already differs: the "
                    f"divergence enters outside the parameterised layers, before it)")
        return (f"first divergent layer {self.layer} (backward; the gradient reaching its output already "
                f"differs: the divergence enters between it and the loss, outside the parameterised layers)")


class Localisation(NamedTuple):
    layers: tuple           # of LayerErrors, in call order
    tolerance: float
    forward: Divergence | None
    backward: Divergence | None

    @property
    def first(self) -> Divergence | None:
        return self.forward or self.backward


def layer_map(conversion) -> dict[str, str]:
    """{torch module name: JAX module path} from the rows of a table conversion."""
    table = getattr(conversion, "table", None)
    if table is None:
        raise ValueError("localisation needs a table conversion (rows of jaxmtl.parity.tables.Entry)")
    out = {}
    for e in table:
        out.setdefault(e.torch_key.rpartition(".")[0], e.jax_key.rpartition("/")[0])
    return out


def _is_float(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


# ---- torch ---------------------------------------------------------------------------------

def _map_tensors(out, fn):
    """`out` with fn applied to every tensor, through nested tuples, lists and dicts, in order
    (nn.LSTM returns (output, (h_n, c_n)); the JAX side flattens with jax.tree the same way)."""
    import torch

    if torch.is_tensor(out):
        return fn(out)
    if isinstance(out, (tuple, list)):
        mapped = [_map_tensors(o, fn) for o in out]
        return type(out)(*mapped) if hasattr(out, "_fields") else type(out)(mapped)
    if isinstance(out, dict):
        return {k: _map_tensors(out[k], fn) for k in sorted(out)}  # jax.tree's key order
    return out


def _torch_trace(pair, torch_in, names: set[str]):
    """{name: (inputs, outputs, input grads, output grads)} as numpy, and {param: grad}."""
    import torch

    from jaxmtl.parity.harness import to_torch

    module = pair.torch_module.train()
    layers = torch_layers(module)
    seen_in, seen_out, handles = {}, {}, []

    def fresh(a):
        return a.clone() if a.requires_grad else a.detach().clone().requires_grad_(True)

    def pre(name):
        def hook(_m, args):
            if name in seen_in:
                return None
            args = tuple(fresh(a) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
            seen_in[name] = [a for a in args if torch.is_tensor(a) and a.is_floating_point()]
            return args
        return hook

    def post(name):
        def hook(_m, _args, out):
            if name in seen_out:
                return None
            captured = []
            out = _map_tensors(out, lambda t: captured.append(t) or t.clone())
            seen_out[name] = captured
            return out
        return hook

    for name in names:
        m = layers[name][1]
        handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
    try:
        loss, _ = pair.torch_loss(module, to_torch(torch_in), True)
    finally:
        for h in handles:
            h.remove()
    pnames, params = zip(*module.named_parameters())
    order = list(seen_in)
    targets = [t for n in order for t in seen_in[n] + seen_out[n]]
    grads = torch.autograd.grad(loss, [*targets, *params], allow_unused=True)
    numpy = lambda t: t.detach().numpy()  # noqa: E731
    zeros_or = lambda g, t: np.zeros(tuple(t.shape), numpy(t).dtype) if g is None else g.numpy()  # noqa: E731
    trace, i = {}, 0
    for n in order:
        k_in, k_out = len(seen_in[n]), len(seen_out[n])
        g_in, g_out = grads[i:i + k_in], grads[i + k_in:i + k_in + k_out]
        trace[n] = ([numpy(t) for t in seen_in[n]], [numpy(t) for t in seen_out[n]],
                    [zeros_or(g, t) for g, t in zip(g_in, seen_in[n])],
                    [zeros_or(g, t) for g, t in zip(g_out, seen_out[n])])
        i += k_in + k_out
    param_grads = {n: zeros_or(g, p) for n, p, g in zip(pnames, params, grads[len(targets):])}
    return order, trace, param_grads


# ---- JAX -----------------------------------------------------------------------------------

def _jax_trace(pair, jax_in, paths: set[str]):
    """{path: (inputs, outputs, input grads, output grads)}, param grads, new stats (numpy)."""

    def run(params, d_in, d_out, record):
        model = nnx.merge(pair.graphdef, params, pair.batch_stats, pair.rest, copy=True)
        seen = {}

        def on_call(path, _module, call, args, kwargs):
            if path not in paths:
                return call(*args, **kwargs)
            floats = [i for i, a in enumerate(args) if _is_float(a)]
            args = list(args)
            for j, i in enumerate(floats):
                args[i] = args[i] + d_in[path][j] if d_in is not None else args[i]
            out = call(*args, **kwargs)
            leaves, treedef = jax.tree.flatten(out)
            if d_out is not None:
                leaves = [x + d for x, d in zip(leaves, d_out[path])]
            seen[path] = ([args[i] for i in floats], leaves)
            return jax.tree.unflatten(treedef, leaves)

        with intercept_calls(model, on_call):
            loss, _ = pair.jax_loss(model, jax_in, True)
        record.update(seen)
        return loss, nnx.state(model, nnx.BatchStat)

    shapes = {}
    jax.eval_shape(lambda p: run(p, None, None, shapes), pair.params)
    zeros = lambda tree: [jnp.zeros(x.shape, x.dtype) for x in tree]  # noqa: E731
    d_in = {p: zeros(v[0]) for p, v in shapes.items()}
    d_out = {p: zeros(v[1]) for p, v in shapes.items()}

    def loss_fn(params, d_in, d_out):
        values = {}
        loss, stats = run(params, d_in, d_out, values)
        return loss, (stats, values)  # the layer values leave the trace as aux, never as side effects

    (_, (stats, values)), (g_params, g_in, g_out) = jax.value_and_grad(
        loss_fn, argnums=(0, 1, 2), has_aux=True)(pair.params, d_in, d_out)
    arr = lambda xs: [np.asarray(x) for x in xs]  # noqa: E731
    trace = {p: (arr(values[p][0]), arr(values[p][1]), arr(g_in[p]), arr(g_out[p])) for p in values}
    return trace, flatten_state(g_params), flatten_state(stats)


# ---- comparison ----------------------------------------------------------------------------

def _as_jax_layout(t: np.ndarray, j: np.ndarray, layer_type: str) -> np.ndarray:
    """The torch activation `t` in the layout of the JAX one `j` (see the module docstring)."""
    candidates = []
    if layer_type in CHANNELS_FIRST and t.ndim >= 3:
        candidates.append(np.moveaxis(t, 1, -1))
    candidates.append(t)
    if t.size == j.size:
        candidates.append(t.reshape(j.shape))
    for c in candidates:
        if c.shape == j.shape:
            return c
    raise ValueError(f"activation shapes do not correspond: torch {t.shape}, JAX {j.shape}")


def _leaves_err(ts: list, js: list, layer_type: str, what: str, notes: list) -> float | None:
    """Max rel_err over corresponding arrays; None (with a note) when there is nothing to compare
    or the two sides cannot be put side by side: not comparable is not the same as divergent."""
    if not ts and not js:
        return None
    if len(ts) != len(js):
        notes.append(f"{what}: torch gives {len(ts)} arrays, JAX {len(js)}")
        return None
    try:
        return max(rel_err(j, _as_jax_layout(t, j, layer_type)) for t, j in zip(ts, js))
    except ValueError as e:
        notes.append(f"{what}: {e}")
        return None


def _group_err(errs: dict[str, float], prefix: str) -> float | None:
    vals = [v for k, v in errs.items() if k.rpartition(".")[0] == prefix]
    return max(vals, key=lambda v: math.inf if v != v else v) if vals else None


def _out(x: float | None, tol: float) -> bool:
    """Out of tolerance; NaN is out, None (nothing to compare) is not."""
    return x is not None and not (x <= tol)


def localize(pair, inputs, tolerance: float | None = None) -> Localisation:
    """Per-layer errors of one train-mode forward/backward on `inputs` and the first divergences."""
    from torch_ref.convert import state_dict_numpy

    tol = TOLERANCES[pair.dtype] if tolerance is None else tolerance
    mapping = layer_map(pair.conversion)
    pair.reset_torch()
    order, t_trace, t_pgrads = _torch_trace(pair, inputs[1], set(mapping))
    t_state = state_dict_numpy(pair.torch_module)
    pair.reset_torch()
    j_trace, j_pgrads, j_stats = _jax_trace(pair, inputs[0], set(mapping.values()))
    named_grads = pair.conversion.to_torch({"params": j_pgrads}, ("params",))
    grad_errs = {k: rel_err(v, t_pgrads[k]) for k, v in named_grads.items()}
    stats = pair.conversion.to_torch({"batch_stats": j_stats}, ("batch_stats",)) if j_stats else {}
    state_errs = {k: rel_err(v, t_state[k]) for k, v in stats.items()}
    types = {n: layer.type for n, (layer, _) in torch_layers(pair.torch_module).items()}
    rows = []
    for name in order:
        path = mapping[name]
        if path not in j_trace:
            raise ValueError(f"torch layer {name} ran but its JAX counterpart {path} was never called")
        t_in, t_out, t_gin, t_gout = t_trace[name]
        j_in, j_out, j_gin, j_gout = j_trace[path]
        kind, notes = types[name], []
        errs = [_leaves_err(t, j, kind, what, notes) for t, j, what in
                ((t_in, j_in, "input"), (t_out, j_out, "output"), (t_gout, j_gout, "grad_output"),
                 (t_gin, j_gin, "grad_input"))]
        rows.append(LayerErrors(name, path, kind, errs[0], errs[1], _group_err(state_errs, name), errs[2],
                                errs[3], _group_err(grad_errs, name), "; ".join(dict.fromkeys(notes))))
    forward = _first_forward(rows, tol)
    # A forward divergence changes every gradient after it: the backward is localised only
    # when the forward agrees everywhere.
    return Localisation(tuple(rows), tol, forward, None if forward else _first_backward(rows, tol))


def _first_forward(rows, tol) -> Divergence | None:
    for r in rows:
        for what in ("output", "state"):
            err = getattr(r, what)
            if _out(err, tol):
                return Divergence(r.torch_name, "forward", what, err, not _out(r.input, tol))
    return None


def _first_backward(rows, tol) -> Divergence | None:
    for r in reversed(rows):
        if _out(r.grad_output, tol):
            return Divergence(r.torch_name, "backward", "grad_output", r.grad_output, False)
        for what in ("grad_input", "grad_params"):
            err = getattr(r, what)
            if _out(err, tol):
                return Divergence(r.torch_name, "backward", what, err, True)
    return None


COLUMNS = ("input", "output", "state", "grad_output", "grad_input", "grad_params")


def markdown_table(loc: Localisation) -> list[str]:
    """The per-layer table of report.md (errors out of tolerance in bold, the first divergences marked)."""
    fmt = lambda x: "-" if x is None else (f"**{x:.2e}**" if _out(x, loc.tolerance) else f"{x:.2e}")  # noqa: E731
    marks = {}
    for d in (loc.forward, loc.backward):
        if d is not None:
            marks.setdefault(d.layer, []).append(f"first divergent ({d.direction})")
    lines = ["| # | torch layer | JAX layer | type | " + " | ".join(COLUMNS) + " | |",
             "| --- " * (len(COLUMNS) + 5) + "|"]
    for i, r in enumerate(loc.layers):
        remarks = marks.get(r.torch_name, []) + ([f"not compared: {r.note}"] if r.note else [])
        lines.append(f"| {i} | `{r.torch_name}` | `{r.jax_name}` | {r.type} | "
                     + " | ".join(fmt(getattr(r, c)) for c in COLUMNS) + f" | {'; '.join(remarks)} |")
    return lines


def plot_layer_errors(loc: Localisation, path) -> None:
    """layer_errors.png: forward and backward errors per layer along the network, the tolerance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-18
    xs = np.arange(len(loc.layers))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.18 * len(xs) + 3), 4.5))
    for col, style in (("output", "o-"), ("state", "s"), ("grad_output", "v--"), ("grad_input", "^:")):
        pts = [(x, getattr(r, col)) for x, r in zip(xs, loc.layers) if getattr(r, col) is not None]
        if pts:
            ax.semilogy([x for x, _ in pts], [max(y, floor) if y == y and y != math.inf else 1e3 for _, y in pts],
                        style, ms=4, lw=1, label=col, alpha=0.85)
    ax.axhline(loc.tolerance, color="red", ls="--", lw=1.5, label=f"tolerance {loc.tolerance:.0e}")
    for d, color in ((loc.forward, "black"), (loc.backward, "purple")):
        if d is not None:
            i = [r.torch_name for r in loc.layers].index(d.layer)
            ax.axvline(i, color=color, lw=1, alpha=0.6)
            ax.annotate(f"{d.direction}: {d.layer}", (i, loc.tolerance), rotation=90, fontsize=8,
                        va="bottom", ha="right", color=color)
    ax.set_xticks(xs)
    ax.set_xticklabels([r.torch_name for r in loc.layers], rotation=90, fontsize=6)
    ax.set_ylabel("relative error (0 drawn at 1e-18)")
    ax.set_title("Per-layer parity, call order (left) to loss (right)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def as_json(loc: Localisation) -> dict[str, Any]:
    return {"tolerance": loc.tolerance,
            "forward": loc.forward._asdict() if loc.forward else None,
            "backward": loc.backward._asdict() if loc.backward else None,
            "layers": [r._asdict() for r in loc.layers]}
