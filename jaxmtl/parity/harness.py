"""A parity harness for any (torch module, NNX module) pair, not only the multi-task model.

Give it the two modules, the conversion table between their parameters (a
list of `torch_ref.convert.Entry` rows, laid out by `LAYOUTS`), one loss per
framework and inputs per framework; it returns the same `Check` objects as
`jaxmtl parity` and `report.write_report` turns them into the same report:

    pair = make_pair(torch_mlp, nnx_mlp, table, torch_loss, jax_loss, dtype="float64")
    checks = compare(pair, [(jax_inputs, torch_inputs)], optimizers=[sgd_pair], steps=3)

Weights start in torch and are converted to JAX, so a difference comes from
the computation, never from the initialisation. The NNX module only supplies
structure: it may be abstract (`nnx.eval_shape(lambda: Model(...))`).

Loss functions (they own the train/eval switch of their framework's model):
    jax_loss(model, inputs, train: bool) -> (loss, {output name: array})
    torch_loss(module, inputs, train: bool) -> (loss, {output name: tensor})
The harness calls `module.train(train)` on the torch side before torch_loss.

torch is imported lazily inside functions: importing this module needs no torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import numpy as np
import optax
from flax import nnx

from jaxmtl import cpu_compiler
from jaxmtl.parity.checks import Check, check_from_errs
from jaxmtl.parity.curves import CURVE_TOLERANCES
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.trees import flatten_state, tree_rel_errs, unflatten_like

# N-step training tolerances are the training-curve ones (curves.py: 1e-8 in float64,
# 1e-3 in float32 from the measured float32 drift over 100 steps of `tiny`).
TRAIN_TOLERANCES: dict[str, float] = {d: t["curve"] for d, t in CURVE_TOLERANCES.items()}

InputPair = tuple[Any, Any]  # (JAX inputs pytree, torch inputs pytree of numpy arrays)


class Conversion(Protocol):
    """torch numpy state_dict <-> {"params": {jax name: array}, "batch_stats": {...}}."""

    def to_jax(self, state_dict: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]: ...

    def to_torch(self, flat: Mapping[str, Mapping[str, np.ndarray]],
                 collections: tuple[str, ...]) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class TableConversion:
    """The table-driven conversion of torch_ref/convert.py, for any table."""

    table: tuple                       # of torch_ref.convert.Entry
    layouts: Mapping[str, tuple] | None = None  # kind -> (to_jax, to_torch, shape); default LAYOUTS

    def _layouts(self) -> Mapping[str, tuple]:
        from torch_ref.convert import LAYOUTS

        return self.layouts if self.layouts is not None else LAYOUTS

    def to_jax(self, state_dict, collections=("params", "batch_stats")):
        from torch_ref.convert import _check_keys

        rows = [e for e in self.table if e.collection in collections]
        _check_keys(state_dict, {e.torch_key: tuple(e.torch_shape) for e in rows}, "torch")
        out: dict[str, dict[str, np.ndarray]] = {c: {} for c in collections}
        for e in rows:
            out[e.collection][e.jax_key] = self._layouts()[e.kind][0](np.asarray(state_dict[e.torch_key]))
        return out

    def to_torch(self, flat, collections=("params", "batch_stats")):
        from torch_ref.convert import _check_keys

        rows = [e for e in self.table if e.collection in collections]
        for c in collections:
            _check_keys(flat.get(c, {}), {e.jax_key: self._layouts()[e.kind][2](tuple(e.torch_shape))
                                          for e in rows if e.collection == c}, f"JAX {c}")
        return {e.torch_key: self._layouts()[e.kind][1](np.asarray(flat[e.collection][e.jax_key]))
                for e in rows}


@dataclasses.dataclass(frozen=True)
class OptimizerPair:
    """The same optimizer in both libraries: torch_fn(parameters) -> torch.optim.Optimizer.

    `torch_before_step(parameters)` runs between backward() and step(), e.g.
    torch.nn.utils.clip_grad_norm_ (which optax expresses inside the chain).
    """

    name: str
    torch_fn: Callable[[Any], Any]
    optax_tx: optax.GradientTransformation
    torch_before_step: Callable[[Any], Any] | None = None


@dataclasses.dataclass
class PortPair:
    """A torch module and its NNX port with identical weights, plus compiled JAX functions."""

    torch_module: Any
    graphdef: Any
    params: Any
    batch_stats: Any
    rest: Any
    conversion: Conversion
    torch_loss: Callable
    jax_loss: Callable
    dtype: str
    validate: Callable[[Any], None] | None
    initial_state: dict[str, np.ndarray]
    forward_fn: Callable = None       # jit: (params, stats, rest, inputs, train) -> (loss, outputs, stats)
    grad_fn: Callable = None          # jit value_and_grad of the train-mode loss

    def reset_torch(self) -> None:
        from torch_ref.convert import load_into_torch

        load_into_torch(self.torch_module, self.initial_state)
        self.torch_module.zero_grad(set_to_none=True)


def make_pair(torch_module, nnx_module, table: Sequence | Conversion, torch_loss: Callable,
              jax_loss: Callable, *, dtype: str = "float64",
              validate: Callable[[Any], None] | None = None) -> PortPair:
    """Converts the torch weights into the NNX module's structure and builds the jitted functions.

    `table` is a list of Entry rows (or any object with to_jax/to_torch).
    `validate(jax_inputs)` runs on every input before anything is compiled.
    """
    from torch_ref.convert import state_dict_numpy

    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {sorted(TOLERANCES)}, got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 parity needs jax_enable_x64: call set_full_precision('float64') first")
    conversion = table if hasattr(table, "to_jax") else TableConversion(tuple(table))
    graphdef, p_template, s_template, rest = nnx.split(nnx_module, nnx.Param, nnx.BatchStat, ...)
    initial = state_dict_numpy(torch_module)
    flat = conversion.to_jax(initial)
    params = unflatten_like(p_template, flat["params"])
    stats = unflatten_like(s_template, flat.get("batch_stats", {}))

    def run(p, s, r, inputs, train):
        # copy=True: fresh Variables inside the trace, so BatchNorm-style in-place
        # statistic updates do not leak tracers into the caller's state.
        model = nnx.merge(graphdef, p, s, r, copy=True)
        loss, outputs = jax_loss(model, inputs, train)
        return loss, (outputs, nnx.state(model, nnx.BatchStat))

    # Compiled as jaxmtl compiles its own steps (jaxmtl/cpu_compiler.py), so a port
    # is checked on the build it trains with.
    forward_fn = cpu_compiler.jit(run, static_argnums=4)
    grad_fn = cpu_compiler.jit(jax.value_and_grad(lambda p, s, r, x: run(p, s, r, x, True), has_aux=True))
    return PortPair(torch_module, graphdef, params, stats, rest, conversion, torch_loss, jax_loss,
                    dtype, validate, initial, forward_fn, grad_fn)


# ---- inputs ----------------------------------------------------------------------------

def check_inputs(pair: PortPair, inputs: InputPair, where: str = "inputs") -> None:
    """One clear ValueError before any compilation: the user's validator, then dtype and finiteness."""
    jax_in, torch_in = inputs
    if pair.validate is not None:
        pair.validate(jax_in)
    for side, tree in (("JAX", jax_in), ("torch", torch_in)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            arr = np.asarray(leaf)
            name = f"{where} ({side}){jax.tree_util.keystr(path)}"
            if np.issubdtype(arr.dtype, np.floating):
                if arr.dtype != np.dtype(pair.dtype):
                    raise ValueError(f"{name} has dtype {arr.dtype}, the pair runs in {pair.dtype}")
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"{name} holds a non-finite value at index "
                                     f"{tuple(np.argwhere(~np.isfinite(arr))[0])}")


def _to_torch(tree):
    import torch

    return jax.tree.map(lambda a: torch.from_numpy(np.array(a)), tree)


# ---- the torch side --------------------------------------------------------------------

def _torch_run(pair: PortPair, torch_in, train: bool, grads: bool):
    """(loss, outputs, grads or None) in numpy; grads by parameter name, unused -> zeros."""
    import torch

    module = pair.torch_module.train(train)
    with torch.set_grad_enabled(grads):
        loss, outputs = pair.torch_loss(module, _to_torch(torch_in), train)
    out = {k: v.detach().numpy() for k, v in outputs.items()}
    out["loss"] = loss.detach().numpy()
    if not grads:
        return out, None
    names, params = zip(*module.named_parameters())
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return out, {n: (np.zeros(tuple(p.shape), p.detach().numpy().dtype) if g is None else g.numpy())
                 for n, p, g in zip(names, params, gs)}


def _torch_state(pair: PortPair, collection: str) -> dict[str, np.ndarray]:
    """The torch state entries that the table files under `collection`, e.g. BN running stats."""
    from torch_ref.convert import state_dict_numpy

    keys = set(pair.conversion.to_torch(_jax_flat(pair, pair.params, pair.batch_stats), (collection,)))
    return {k: v for k, v in state_dict_numpy(pair.torch_module).items() if k in keys}


def _jax_flat(pair: PortPair, params, stats) -> dict[str, dict[str, np.ndarray]]:
    return {"params": flatten_state(params), "batch_stats": flatten_state(stats)}


def _named(pair: PortPair, flat: Mapping[str, np.ndarray], collection: str) -> dict[str, np.ndarray]:
    """JAX flat {name: array} of one collection renamed (and laid out) as torch."""
    return pair.conversion.to_torch({collection: flat}, (collection,))


def _jax_out(loss, outputs) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v) for k, v in outputs.items()}
    out["loss"] = np.asarray(loss)
    return out


def _has_stats(pair: PortPair) -> bool:
    return bool(flatten_state(pair.batch_stats))


# ---- the checks ------------------------------------------------------------------------

def forward_checks(pair: PortPair, inputs: InputPair, *, train: bool = True) -> list[Check]:
    """forward/train (+ batch_stats after that forward, if the model has any) or forward/eval."""
    check_inputs(pair, inputs)
    tol = TOLERANCES[pair.dtype]
    pair.reset_torch()
    loss, (outputs, stats) = pair.forward_fn(pair.params, pair.batch_stats, pair.rest, inputs[0], train)
    torch_out, _ = _torch_run(pair, inputs[1], train, grads=False)
    checks = [check_from_errs(f"forward/{'train' if train else 'eval'}",
                              tree_rel_errs(_jax_out(loss, outputs), torch_out), tol)]
    if train and _has_stats(pair):
        checks.append(check_from_errs("batch_stats", tree_rel_errs(
            _named(pair, flatten_state(stats), "batch_stats"), _torch_state(pair, "batch_stats")), tol))
    return checks


def gradient_checks(pair: PortPair, inputs: InputPair) -> list[Check]:
    """grad/total: the gradient of the train-mode loss for every parameter tensor."""
    check_inputs(pair, inputs)
    pair.reset_torch()
    (_, _), grads = pair.grad_fn(pair.params, pair.batch_stats, pair.rest, inputs[0])
    _, torch_grads = _torch_run(pair, inputs[1], True, grads=True)
    return [check_from_errs("grad/total", tree_rel_errs(
        _named(pair, flatten_state(grads), "params"), torch_grads), TOLERANCES[pair.dtype])]


def training_checks(pair: PortPair, batches: Sequence[InputPair], opt: OptimizerPair,
                    tolerance: float | None = None) -> list[Check]:
    """len(batches) optimizer steps on each side: curve/<name>, params_after/<name>, batch_stats_after/<name>.

    torch runs the textbook loop (zero_grad, backward, step); JAX reuses the
    pair's compiled gradient and applies the optax update, jitted on its own.
    """
    for i, b in enumerate(batches):
        check_inputs(pair, b, f"batch {i}")
    tol = TRAIN_TOLERANCES[pair.dtype] if tolerance is None else tolerance
    pair.reset_torch()
    module = pair.torch_module.train()
    torch_opt = opt.torch_fn(module.parameters())
    params, stats = pair.params, pair.batch_stats
    opt_state = opt.optax_tx.init(params)
    update = cpu_compiler.jit(lambda g, o, p: _apply(opt.optax_tx, g, o, p))
    jax_curve, torch_curve = {}, {}
    for i, (jax_in, torch_in) in enumerate(batches):
        (loss, (_, stats)), grads = pair.grad_fn(params, stats, pair.rest, jax_in)
        params, opt_state = update(grads, opt_state, params)
        jax_curve[f"step {i}"] = np.asarray(loss)
        torch_opt.zero_grad()
        t_loss, _ = pair.torch_loss(module, _to_torch(torch_in), True)
        t_loss.backward()
        if opt.torch_before_step is not None:
            opt.torch_before_step(module.parameters())
        torch_opt.step()
        torch_curve[f"step {i}"] = t_loss.detach().numpy()
    checks = [check_from_errs(f"curve/{opt.name}", tree_rel_errs(jax_curve, torch_curve), tol)]
    from torch_ref.convert import state_dict_numpy

    torch_sd = state_dict_numpy(module)
    jax_named = _named(pair, flatten_state(params), "params")
    checks.append(check_from_errs(f"params_after/{opt.name}", tree_rel_errs(
        jax_named, {k: torch_sd[k] for k in jax_named}), tol))
    if _has_stats(pair):
        jax_stats = _named(pair, flatten_state(stats), "batch_stats")
        checks.append(check_from_errs(f"batch_stats_after/{opt.name}", tree_rel_errs(
            jax_stats, {k: torch_sd[k] for k in jax_stats}), tol))
    return checks


def _apply(tx: optax.GradientTransformation, grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def compare(pair: PortPair, batches: Sequence[InputPair], *, eval_forward: bool = True,
            optimizers: Sequence[OptimizerPair] = (), steps: int = 0) -> list[Check]:
    """forward/train, batch_stats, forward/eval, grad/total on batches[0]; then `steps`
    training steps per optimizer pair on batches[0..steps) (cycled)."""
    if not batches:
        raise ValueError("compare needs at least one (jax_inputs, torch_inputs) pair")
    for i, b in enumerate(batches):  # every input is checked before the first compilation
        check_inputs(pair, b, f"batch {i}")
    checks = forward_checks(pair, batches[0], train=True)
    if eval_forward:
        checks += forward_checks(pair, batches[0], train=False)
    checks += gradient_checks(pair, batches[0])
    train_batches = [batches[i % len(batches)] for i in range(steps)]
    for opt in optimizers if steps else ():
        checks += training_checks(pair, train_batches, opt)
    return checks

