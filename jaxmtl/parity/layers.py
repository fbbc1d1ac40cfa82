"""Layers as the parity harness sees them: the modules that own state, in the order they run.

A *layer* is a module that owns parameters or buffers directly: a torch
module with `parameters(recurse=False)` or `buffers(recurse=False)`, an NNX
module with `nnx.Param` / `nnx.BatchStat` attributes. Containers (Sequential,
a ResNet block, the whole model) are not layers; stateless functions (ReLU,
pooling) are not layers either.

The call order of layers is observed during one forward pass:
- torch: `register_forward_pre_hook` / `register_forward_hook` on every layer;
- NNX: `intercept_calls` wraps `__call__` of every layer's class for the
  duration of a `with` block and routes each call through a callback, which
  may record the call, read its inputs and outputs, or add to them (the
  localiser adds zero perturbations to take gradients with respect to each
  layer's input and output). It works under `jax.eval_shape`, `jax.jit` and
  `jax.grad`, since the callback runs while the function is traced.
Only a layer's first call is reported; later calls of a shared layer pass through.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, NamedTuple

from flax import nnx

from jaxmtl.trees import path_name

COLLECTIONS = {nnx.BatchStat: "batch_stats", nnx.Param: "params"}  # checked in this order


class Tensor(NamedTuple):
    name: str          # local name inside its layer: "weight", "kernel", "running_mean"
    collection: str    # "params" or "batch_stats"
    shape: tuple


class Layer(NamedTuple):
    name: str          # torch module name "backbone.conv1" / JAX path "backbone/conv1"
    type: str          # class name: "Conv2d"
    tensors: tuple     # of Tensor, in declaration order


def _collection(variable) -> str | None:
    for cls, name in COLLECTIONS.items():
        if isinstance(variable, cls):
            return name
    return None


def nnx_variables(module) -> list[Tensor]:
    """The Param / BatchStat attributes a module owns directly (not its submodules')."""
    out = []
    for name, v in vars(module).items():
        if isinstance(v, nnx.Variable) and _collection(v) is not None:
            out.append(Tensor(name, _collection(v), tuple(v.get_value().shape)))
    return out


def nnx_layers(model) -> dict[str, tuple[Layer, Any]]:
    """{JAX path: (Layer, module)} for every NNX module that owns variables, in declaration order."""
    out = {}
    for path, m in nnx.iter_modules(model):
        tensors = nnx_variables(m)
        if tensors:
            name = path_name(path)
            out[name] = (Layer(name, type(m).__name__, tuple(tensors)), m)
    return out


def torch_layers(module) -> dict[str, tuple[Layer, Any]]:
    """{torch module name: (Layer, module)} for every torch module owning tensors, in declaration order.

    Tensors are the module's entries of `state_dict()` (non-persistent buffers are not state).
    """
    state = module.state_dict(keep_vars=True)
    params = {k for k, _ in module.named_parameters()}
    out = {}
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        local = [k[len(prefix):] for k in state if k.startswith(prefix) and "." not in k[len(prefix):]]
        if local:
            tensors = tuple(Tensor(n, "params" if prefix + n in params else "batch_stats",
                                   tuple(state[prefix + n].shape)) for n in local)
            out[name] = (Layer(name, type(m).__name__, tensors), m)
    return out


OnCall = Callable[[str, Any, Callable, tuple, dict], Any]  # (path, module, call, args, kwargs) -> output


@contextlib.contextmanager
def intercept_calls(model, on_call: OnCall) -> Iterator[None]:
    """Routes the first call of every NNX layer of `model` through `on_call` while the block runs.

    `call(*args, **kwargs)` runs the layer's own `__call__`; `on_call` returns
    what the layer call returns. The classes are restored on exit.
    """
    layers = nnx_layers(model)
    paths = {id(m): name for name, (_, m) in layers.items()}
    classes = list(dict.fromkeys(type(m) for _, m in layers.values()))
    originals = {cls: (cls.__dict__.get("__call__"), cls.__call__) for cls in classes}  # before any patch
    seen: set[str] = set()

    def make_wrapper(original):
        def wrapper(self, *args, **kwargs):
            path = paths.get(id(self))
            if path is None or path in seen:  # not a layer of this model, or a later/nested call
                return original(self, *args, **kwargs)
            seen.add(path)
            return on_call(path, self, lambda *a, **k: original(self, *a, **k), args, kwargs)

        return wrapper

    for cls, (_, original) in originals.items():
        cls.__call__ = make_wrapper(original)
    try:
        yield
    finally:
        for cls, (own, _) in originals.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


def nnx_call_order(model, run: Callable[[Any], Any], dtype=None) -> list[str]:
    """The JAX paths of `model`'s layers in the order `run(model)` first calls them.

    Runs abstractly (`jax.eval_shape`): no array is computed, and `model` may be
    abstract (`nnx.eval_shape(lambda: Model(...))`). `dtype`: the floating
    state is taken in this dtype (that of the inputs), default as it is.
    """
    import jax
    import jax.numpy as jnp

    graphdef, state = nnx.split(model)
    if dtype is not None:
        state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype)
                             if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    order: list[str] = []

    def record(path, module, call, args, kwargs):
        order.append(path)
        return call(*args, **kwargs)

    def forward(state):
        m = nnx.merge(graphdef, state)
        with intercept_calls(m, record):
            run(m)

    jax.eval_shape(forward, state)
    return order


def torch_call_order(module, run: Callable[[Any], Any]) -> list[str]:
    """The torch names of `module`'s layers in the order `run(module)` first calls them."""
    import torch

    order: list[str] = []
    handles = []
    for name, (_, m) in torch_layers(module).items():
        handles.append(m.register_forward_pre_hook(
            lambda _m, _args, name=name: None if name in order else order.append(name)))
    try:
        with torch.no_grad():
            run(module)
    finally:
        for h in handles:
            h.remove()
    return order
