"""A parity harness for any (torch module, NNX module) pair, not only the multi-task model.

Give it the two modules, one loss per framework and inputs per framework;
the conversion table between their tensors is derived from the modules
(`jaxmtl.parity.derive`) unless you pass one (rows of
`jaxmtl.parity.tables.Entry`). It returns `Check` objects, and
`report.write_report` turns them into report.md. `jaxmtl parity` runs the
multi-task model through this same engine (`multitask_port.py`):

    pair = make_pair(torch_mlp, nnx_mlp, None, torch_loss, jax_loss, dtype="float64",
                     example=(jax_inputs, torch_inputs))
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
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import jax
import numpy as np
import optax
from flax import nnx

from jaxmtl import cpu_compiler
from jaxmtl.parity.checks import Check, check_from_errs
from jaxmtl.parity.curves import COMPARE_STEPS, TrainingRun, curve_checks
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.config import require_x64
from jaxmtl.data_parallel import DataParallel, check_batch, put_batch, put_replicated
from jaxmtl.parity.tables import TableConversion
from jaxmtl.trees import flatten_state, tree_rel_errs, unflatten_like

InputPair = tuple[Any, Any]  # (JAX inputs pytree, torch inputs pytree of numpy arrays)


class Conversion(Protocol):
    """torch numpy state_dict <-> {"params": {jax name: array}, "batch_stats": {...}}.

    `tables.TableConversion` is the one implementation in jaxmtl; a hand-written
    object works too, but only a table conversion (with `.table` rows) gets the
    per-layer localisation.
    """

    def to_jax(self, state_dict: Mapping[str, np.ndarray],
               collections: tuple[str, ...] = ...) -> dict[str, dict[str, np.ndarray]]: ...

    def to_torch(self, flat: Mapping[str, Mapping[str, np.ndarray]],
                 collections: tuple[str, ...]) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class OptimizerPair:
    """The same optimizer in both libraries: torch_fn(parameters) -> torch.optim.Optimizer.

    `torch_before_step(parameters)` runs between backward() and step(), e.g.
    torch.nn.utils.clip_grad_norm_ (which optax expresses inside the chain).

    A project with train steps of its own passes them instead of the textbook
    loop, so the steps it ships are the ones checked:
      jax_step(params, batch_stats, opt_state, jax_inputs) -> (params, batch_stats, opt_state, loss)
      torch_step(module, optimizer, torch_inputs (numpy)) -> loss (float)
    `optax_tx.init(params)` still gives the JAX optimizer state.
    """

    name: str
    torch_fn: Callable[[Any], Any]
    optax_tx: optax.GradientTransformation
    torch_before_step: Callable[[Any], Any] | None = None
    jax_step: Callable | None = None
    torch_step: Callable | None = None


class PairSpec(NamedTuple):
    """Everything the harness needs about a port: what `jaxmtl parity --pair module:function`
    expects `function(dtype)` to return, and what `jaxmtl.testing.assert_port_parity` takes.

    The torch module must already be in `dtype`; the NNX module only supplies
    structure (it may be abstract). `table=None` derives the conversion table.
    """

    torch_module: Any
    nnx_module: Any
    torch_loss: Callable          # (module, torch inputs as tensors, train) -> (loss, {name: tensor})
    jax_loss: Callable            # (model, JAX inputs, train) -> (loss, {name: array})
    batches: Sequence             # of InputPair: batches[0] for the single-point checks
    optimizers: Sequence = ()     # of OptimizerPair, trained on `batches` (cycled) for `steps`
    table: Any = None
    loss_parts: Mapping[str, float] | None = None
    validate: Callable[[Any], None] | None = None
    name: str = "port"


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
    forward_fn: Callable = None       # jit: (params, stats, rest, inputs, train) -> (loss, (outputs, stats))
    grad_fn: Callable = None          # (params, stats, rest, inputs) -> ((loss, (outputs, stats)), grads), train mode
    loss_parts: Mapping[str, float] = dataclasses.field(default_factory=dict)  # output -> weight in loss
    part_grad_fn: Callable | None = None  # (params, stats, rest, inputs) -> {part: grads}, jitted inside
    dp: DataParallel | None = None    # set by `data_parallel_pair`: the JAX side runs sharded

    def place_inputs(self, jax_inputs):
        """JAX inputs as the JAX side runs them: split along their first axis over dp's devices."""
        return jax_inputs if self.dp is None else put_batch(jax_inputs, self.dp)

    def replicate(self, tree):
        return tree if self.dp is None else put_replicated(tree, self.dp)

    def reset_torch(self) -> None:
        """Back to the initial weights and buffers, no gradients."""
        from torch_ref.convert import load_into_torch

        load_into_torch(self.torch_module, self.initial_state)
        self.torch_module.zero_grad(set_to_none=True)


def derive_pair_table(torch_module, nnx_module, torch_loss: Callable, jax_loss: Callable,
                      example: InputPair, dtype: str) -> list:
    """The conversion table of a pair, derived from one eval-mode forward of each loss on `example`."""
    from jaxmtl.parity.derive import derive_table

    return derive_table(torch_module, nnx_module,
                        lambda m: torch_loss(m.eval(), to_torch(example[1]), False),
                        lambda m: jax_loss(m, example[0], False), dtype)


def make_pair(torch_module, nnx_module, table: Sequence | Conversion | None, torch_loss: Callable,
              jax_loss: Callable, *, dtype: str = "float64",
              validate: Callable[[Any], None] | None = None, example: InputPair | None = None,
              loss_parts: Mapping[str, float] | None = None) -> PortPair:
    """Converts the torch weights into the NNX module's structure and builds the jitted functions.

    `table` is a list of Entry rows, any object with to_jax/to_torch, or None:
    then the table is derived from the modules by one forward on `example`.
    `validate(jax_inputs)` runs on every input before anything is compiled.
    `loss_parts` {output name: weight}: outputs of both losses that are weighted
    parts of the total; each gets a gradient check of its own (grad/<part>), and
    grad/weighted_sum checks that the weighted part gradients add up to the total.
    """
    from torch_ref.convert import state_dict_numpy

    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {sorted(TOLERANCES)}, got {dtype!r}")
    require_x64(dtype, "float64 parity")
    initial = state_dict_numpy(torch_module)
    if table is None:
        if example is None:
            raise ValueError("make_pair needs a table or example=(jax_inputs, torch_inputs) to derive one")
        check_inputs_dtype(dtype, validate, example, "example")
        table = derive_pair_table(torch_module, nnx_module, torch_loss, jax_loss, example, dtype)
    conversion = table if hasattr(table, "to_jax") else TableConversion(tuple(table))
    graphdef, p_template, s_template, rest = nnx.split(nnx_module, nnx.Param, nnx.BatchStat, ...)
    flat = conversion.to_jax(initial)
    params = unflatten_like(p_template, flat["params"])
    stats = unflatten_like(s_template, flat.get("batch_stats", {}))

    def run(p, s, r, inputs, train):
        # copy=True: fresh Variables inside the trace, so BatchNorm-style in-place
        # statistic updates do not leak tracers into the caller's state.
        model = nnx.merge(graphdef, p, s, r, copy=True)
        loss, outputs = jax_loss(model, inputs, train)
        return loss, (outputs, nnx.state(model, nnx.BatchStat))

    parts = dict(loss_parts or {})

    def weighted(p, s, r, inputs, weights):
        # weights = (w_total, {part: w_part}), given at run time, so that one compilation
        # serves the total's gradient (1, zeros) and each part's (0, one-hot): the part
        # gradients cost one backward each but no compilation of their own.
        w_total, w_parts = weights
        loss, (outputs, stats) = run(p, s, r, inputs, True)
        return w_total * loss + sum(w_parts[k] * outputs[k] for k in parts), (loss, (outputs, stats))

    weighted_grad = cpu_compiler.jit(jax.value_and_grad(weighted, has_aux=True))

    def one_hot(p, key):
        dtype = jax.tree.leaves(p)[0].dtype
        return np.asarray(key is None, dtype), {q: np.asarray(q == key, dtype) for q in parts}

    def grad_fn(p, s, r, inputs):
        (_, aux), grads = weighted_grad(p, s, r, inputs, one_hot(p, None))
        return aux, grads

    def part_grads(p, s, r, inputs):
        return {k: weighted_grad(p, s, r, inputs, one_hot(p, k))[1] for k in parts}

    # Compiled as jaxmtl compiles its own steps (jaxmtl/cpu_compiler.py), so a port
    # is checked on the build it trains with.
    forward_fn = cpu_compiler.jit(run, static_argnums=4)
    return PortPair(torch_module, graphdef, params, stats, rest, conversion, torch_loss, jax_loss,
                    dtype, validate, initial, forward_fn, grad_fn, parts, part_grads if parts else None)


def data_parallel_pair(pair: PortPair, dp: DataParallel) -> PortPair:
    """`pair` with its JAX side data-parallel over dp's devices (`jaxmtl parity --devices N`).

    Parameters, statistics and optimizer states are replicated; every JAX input is
    split along its first axis (the batch), so a batch must divide over the devices
    (`check_inputs`). The same jitted functions run; XLA inserts the collectives.
    The torch side still runs the whole batch on one device: what a correct data-parallel
    port computes.
    """
    return dataclasses.replace(pair, params=put_replicated(pair.params, dp),
                               batch_stats=put_replicated(pair.batch_stats, dp),
                               rest=put_replicated(pair.rest, dp), dp=dp)


# ---- inputs ----------------------------------------------------------------------------

def check_inputs_dtype(dtype: str, validate, inputs: InputPair, where: str = "inputs") -> None:
    """One clear ValueError before any compilation: the user's validator, then dtype and finiteness."""
    jax_in, torch_in = inputs
    if validate is not None:
        validate(jax_in)
    for side, tree in (("JAX", jax_in), ("torch", torch_in)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            arr = np.asarray(leaf)
            name = f"{where} ({side}){jax.tree_util.keystr(path)}"
            if np.issubdtype(arr.dtype, np.floating):
                if arr.dtype != np.dtype(dtype):
                    raise ValueError(f"{name} has dtype {arr.dtype}, the pair runs in {dtype}")
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"{name} holds a non-finite value at index "
                                     f"{tuple(np.argwhere(~np.isfinite(arr))[0])}")


def check_inputs(pair: PortPair, inputs: InputPair, where: str = "inputs") -> None:
    check_inputs_dtype(pair.dtype, pair.validate, inputs, where)
    if pair.dp is not None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(inputs[0])[0]:
            shape = np.shape(leaf)
            if not shape:
                raise ValueError(f"{where} (JAX){jax.tree_util.keystr(path)} is a scalar: with --devices every "
                                 "JAX input is split along its first (batch) axis")
            check_batch(shape[0], pair.dp.devices)


def to_torch(tree):
    """A pytree of numpy arrays as torch tensors (copies)."""
    import torch

    return jax.tree.map(lambda a: torch.from_numpy(np.array(a)), tree)



# ---- the torch side --------------------------------------------------------------------

def _torch_run(pair: PortPair, torch_in, train: bool, grads: bool):
    """(outputs with "loss", {"total" and each loss part: grads} or None) in numpy.

    Gradients by parameter name; a parameter a loss does not reach gets zeros.
    The part backward calls share one graph, hence retain_graph.
    """
    import torch

    module = pair.torch_module.train(train)
    with torch.set_grad_enabled(grads):
        loss, outputs = pair.torch_loss(module, to_torch(torch_in), train)
    out = {k: v.detach().numpy() for k, v in outputs.items()}
    out["loss"] = loss.detach().numpy()
    if not grads:
        return out, None
    names, params = zip(*module.named_parameters())
    result = {}
    for name, target in [*((k, outputs[k]) for k in pair.loss_parts), ("total", loss)]:
        gs = torch.autograd.grad(target, params, allow_unused=True, retain_graph=name != "total")
        result[name] = {n: (np.zeros(tuple(p.shape), p.detach().numpy().dtype) if g is None else g.numpy())
                        for n, p, g in zip(names, params, gs)}
    return out, result


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


def _jax_out(pair: PortPair, loss, outputs) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v) for k, v in outputs.items()}
    out["loss"] = np.asarray(loss)
    for k, v in out.items():  # a silent float32 <-> float64 promotion would make the check meaningless
        if np.issubdtype(v.dtype, np.floating) and v.dtype != np.dtype(pair.dtype):
            raise TypeError(f"JAX output {k} has dtype {v.dtype}, the pair runs in {pair.dtype}")
    return out


def _has_stats(pair: PortPair) -> bool:
    return bool(flatten_state(pair.batch_stats))


# ---- the checks ------------------------------------------------------------------------

def forward_checks(pair: PortPair, inputs: InputPair, *, train: bool = True) -> list[Check]:
    """forward/train (+ batch_stats after that forward, if the model has any) or forward/eval."""
    check_inputs(pair, inputs)
    tol = TOLERANCES[pair.dtype]
    pair.reset_torch()
    loss, (outputs, stats) = pair.forward_fn(pair.params, pair.batch_stats, pair.rest,
                                             pair.place_inputs(inputs[0]), train)
    torch_out, _ = _torch_run(pair, inputs[1], train, grads=False)
    checks = [check_from_errs(f"forward/{'train' if train else 'eval'}",
                              tree_rel_errs(_jax_out(pair, loss, outputs), torch_out), tol)]
    if train and _has_stats(pair):
        checks.append(check_from_errs("batch_stats", tree_rel_errs(
            _named(pair, flatten_state(stats), "batch_stats"), _torch_state(pair, "batch_stats")), tol))
    return checks


def gradient_checks(pair: PortPair, inputs: InputPair) -> list[Check]:
    """grad/total: the gradient of the train-mode loss for every parameter tensor; with loss
    parts also grad/<part> each, and grad/weighted_sum (JAX's weighted parts add up to its total)."""
    check_inputs(pair, inputs)
    tol = TOLERANCES[pair.dtype]
    pair.reset_torch()
    jax_in = pair.place_inputs(inputs[0])
    (_, _), grads = pair.grad_fn(pair.params, pair.batch_stats, pair.rest, jax_in)
    _, torch_grads = _torch_run(pair, inputs[1], True, grads=True)
    jax_named = {"total": _named(pair, flatten_state(grads), "params")}
    if pair.loss_parts:
        part_grads = pair.part_grad_fn(pair.params, pair.batch_stats, pair.rest, jax_in)
        jax_named.update({k: _named(pair, flatten_state(g), "params") for k, g in part_grads.items()})
    checks = [check_from_errs(f"grad/{k}", tree_rel_errs(jax_named[k], torch_grads[k]), tol)
              for k in ["total", *pair.loss_parts]]
    if pair.loss_parts:
        summed = {n: sum(w * jax_named[k][n] for k, w in pair.loss_parts.items()) for n in jax_named["total"]}
        checks.append(check_from_errs("grad/weighted_sum", tree_rel_errs(summed, jax_named["total"]), tol))
    return checks


def default_jax_step(pair: PortPair, tx: optax.GradientTransformation) -> Callable:
    def apply(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    update = cpu_compiler.jit(apply)

    def step(params, stats, opt_state, jax_in):
        (loss, (_, stats)), grads = pair.grad_fn(params, stats, pair.rest, jax_in)
        params, opt_state = update(grads, opt_state, params)
        return params, stats, opt_state, loss

    return step


def default_torch_step(pair: PortPair, opt: OptimizerPair) -> Callable:
    def step(module, optimizer, torch_in):
        optimizer.zero_grad()
        loss, _ = pair.torch_loss(module.train(), to_torch(torch_in), True)
        loss.backward()
        if opt.torch_before_step is not None:
            opt.torch_before_step(module.parameters())
        optimizer.step()
        return float(loss.detach())

    return step


def training_run(pair: PortPair, batches: Sequence[InputPair], opt: OptimizerPair,
                 compare_at: int | None = None) -> TrainingRun:
    """len(batches) optimizer steps on each side from the pair's initial weights.

    Parameters and statistics are compared after `compare_at` steps (default:
    the last), the loss at every step up to it. The pair is left reset.
    """
    from torch_ref.convert import state_dict_numpy

    for i, b in enumerate(batches):
        check_inputs(pair, b, f"batch {i}")
    compare_at = min(compare_at or len(batches), len(batches))
    jax_step = opt.jax_step or default_jax_step(pair, opt.optax_tx)
    params, stats, opt_state = pair.params, pair.batch_stats, pair.replicate(opt.optax_tx.init(pair.params))
    jax_losses = []
    for i, (jax_in, _) in enumerate(batches):
        params, stats, opt_state, loss = jax_step(params, stats, opt_state, pair.place_inputs(jax_in))
        jax_losses.append(float(loss))
        if i + 1 == compare_at:
            jax_params = _named(pair, flatten_state(params), "params")
            jax_stats = _named(pair, flatten_state(stats), "batch_stats") if _has_stats(pair) else {}
    pair.reset_torch()
    module = pair.torch_module.train()
    torch_opt = opt.torch_fn(module.parameters())
    torch_step = opt.torch_step or default_torch_step(pair, opt)
    torch_losses = []
    for i, (_, torch_in) in enumerate(batches):
        torch_losses.append(float(torch_step(module, torch_opt, torch_in)))
        if i + 1 == compare_at:
            torch_sd = state_dict_numpy(module)
    pair.reset_torch()
    return TrainingRun(opt.name, np.array(jax_losses), np.array(torch_losses), compare_at,
                       tree_rel_errs(jax_params, {k: torch_sd[k] for k in jax_params}),
                       tree_rel_errs(jax_stats, {k: torch_sd[k] for k in jax_stats}))


def training_checks(pair: PortPair, batches: Sequence[InputPair], opt: OptimizerPair,
                    compare_at: int | None = None) -> list[Check]:
    """curve/<name>, params_after/<name> and (with statistics) batch_stats_after/<name>."""
    return curve_checks(training_run(pair, batches, opt, compare_at), pair.dtype)


def compare(pair: PortPair, batches: Sequence[InputPair], *, eval_forward: bool = True,
            optimizers: Sequence[OptimizerPair] = (), steps: int = 0,
            train_batches: Sequence[InputPair] | None = None, compare_at: int | None = None,
            runs: list | None = None) -> list[Check]:
    """forward/train, batch_stats, forward/eval, grad/total (and parts) on batches[0]; then `steps`
    training steps per optimizer pair on `train_batches` (default: batches[0..steps), cycled).

    `compare_at` (default COMPARE_STEPS[dtype]: all steps in float64, 3 in float32, see
    curves.py) limits the compared steps. `runs`, if given, receives each TrainingRun (for curves.png).
    """
    if not batches:
        raise ValueError("compare needs at least one (jax_inputs, torch_inputs) pair")
    train_batches = list(train_batches) if train_batches is not None else \
        [batches[i % len(batches)] for i in range(steps)]
    for i, b in enumerate([*batches, *train_batches]):  # every input is checked before the first compilation
        check_inputs(pair, b, f"batch {i}")
    checks = forward_checks(pair, batches[0], train=True)
    if eval_forward:
        checks += forward_checks(pair, batches[0], train=False)
    checks += gradient_checks(pair, batches[0])
    for opt in optimizers if train_batches else ():
        run = training_run(pair, train_batches, opt, COMPARE_STEPS[pair.dtype] if compare_at is None else compare_at)
        if runs is not None:
            runs.append(run)
        checks += curve_checks(run, pair.dtype)
    return checks


def load_pair_spec(name: str, dtype: str) -> PairSpec:
    """`package.module:function` -> function(dtype), checked to be a PairSpec; ValueError otherwise.

    Modules resolve from the current directory too, as `python -m` would.
    """
    import importlib
    import os
    import sys

    module_name, sep, func_name = name.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"a pair is named package.module:function (e.g. mypkg.port:pair_spec), got {name!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"pair {name!r}: cannot import {module_name!r} ({e})") from e
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"pair {name!r}: module {module_name!r} has no function {func_name!r}")
    spec = fn(dtype)
    if not isinstance(spec, PairSpec):
        raise ValueError(f"pair {name!r} returned {type(spec).__name__!r}, not a jaxmtl.parity.harness.PairSpec")
    return spec


def pair_from_spec(spec: PairSpec, dtype: str) -> PortPair:
    """`make_pair` on a PairSpec (the table derived from spec.batches[0] when spec.table is None)."""
    if not spec.batches:
        raise ValueError(f"pair {spec.name!r} has no batches: give at least one (jax_inputs, torch_inputs)")
    return make_pair(spec.torch_module, spec.nnx_module, spec.table, spec.torch_loss, spec.jax_loss,
                     dtype=dtype, validate=spec.validate, example=spec.batches[0], loss_parts=spec.loss_parts)
