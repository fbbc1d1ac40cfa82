"""Deliberately wrong ports, one classic porting mistake each; used only by test_mutations.py.

No bug switch lives in library code: each mistake is a patched function, a
wrong model variant built here, a wrong conversion, or a wrong optimizer/loss
handed to the harness. The correct pair is built once per session and reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from jaxmtl.config import TINY, ModelConfig
from jaxmtl.functional import init_model
from jaxmtl.nn import GRU, BatchNorm2d
from jaxmtl.nn.gru import gru_scan
from jaxmtl.parity.tables import Layout, TableConversion

from heads_pair import (HeadsBatch, JaxHeads, correct_heads_pair, heads_batches, heads_pair,  # noqa: F401
                        heads_table, torch_heads)

STEPS = 3  # a mutation only needs to fail clearly; 3 optimizer steps keep the tests fast


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread while a test runs. The tiny model's ops are too small to split:
    with 2 threads the sync dominates, and when the CPUs are shared with other jobs a
    forward measured 2.5 s instead of 19 ms (thread spin-waiting)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.cache
def multitask_pairs(dtype: str):
    """The multi-task model (tiny, torch seed 0) as a harness pair per dtype, built once per session
    (conftest's `pairs` fixture is this function): its jitted functions compile once."""
    from jaxmtl.parity.multitask_port import multitask_pair
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision(dtype)
    return multitask_pair(TINY, dtype)


def multitask_pair64():
    return multitask_pairs("float64")


@functools.cache
def tiny_batches() -> tuple:
    from jaxmtl.parity.multitask_port import batches

    return tuple(batches(TINY, "float64", [11, 12, 13]))


# ---- JAX model mistakes -------------------------------------------------------------------

def same_padding_conv2d(x, kernel, stride: int, padding: int):
    """Flax's 'SAME' on stride-2 convs: pads (0, 1) / (2, 3) instead of torch's symmetric (p, p)."""
    pad = "SAME" if stride == 2 else ((padding, padding), (padding, padding))
    return lax.conv_general_dilated(x, kernel, (stride, stride), pad,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def with_bn_momentum(momentum: float):
    """jax_model_fn whose BatchNorms (torch convention) get `momentum` instead of torch's 0.1.

    0.9: torch's 0.1 passed as Flax momentum (Flax weights the old value).
    0.01: Flax's default momentum 0.99 left in place.
    """

    def build(cfg: ModelConfig):
        model = init_model(cfg)
        for _, m in nnx.iter_modules(model):
            if isinstance(m, BatchNorm2d):
                m.momentum = momentum
        return model

    return build


class BiasedVarBatchNorm(BatchNorm2d):
    """Stores the biased batch variance in running var (Flax's choice; torch stores the unbiased)."""

    def __call__(self, x, *, train: bool):
        if not train:
            return super().__call__(x, train=False)
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        m = self.momentum
        self.mean[...] = (1 - m) * self.mean[...] + m * lax.stop_gradient(mean)
        self.var[...] = (1 - m) * self.var[...] + m * lax.stop_gradient(var)
        self.count[...] = self.count[...] + 1
        return (x - mean) * (lax.rsqrt(var + self.eps) * self.scale[...]) + self.bias[...]


def with_biased_var(cfg: ModelConfig):
    model = init_model(cfg)
    for _, m in nnx.iter_modules(model):
        if type(m) is BatchNorm2d:
            m.__class__ = BiasedVarBatchNorm
    return model


class StopGradMeanBatchNorm(BatchNorm2d):
    """Treats the batch mean as a constant in the backward pass (a hand-written BN backward that
    forgets d mean / d x): the forward, the statistics and the output gradient are unchanged."""

    def __call__(self, x, *, train: bool):
        if not train:
            return super().__call__(x, train=False)
        out = super().__call__(x, train=True)  # updates the statistics as torch does
        mean = lax.stop_gradient(jnp.mean(x, axis=(0, 1, 2)))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        y = (x - mean) * (lax.rsqrt(var + self.eps) * self.scale[...]) + self.bias[...]
        return y + lax.stop_gradient(out - y)  # value of `out`, gradient of `y`


class PerDeviceBatchNorm(BatchNorm2d):
    """Each device normalises its rows with the statistics of its rows only: a shard_map (or pmap)
    port whose BatchNorm forgot the all-reduce over the data axis (Flax's `axis_name`). The running
    statistics become the mean over devices of per-device statistics. On one device it is correct."""

    mesh = None  # the data-parallel mesh, set by `per_device_bn_spec`

    def __call__(self, x, *, train: bool):
        if not train:
            return super().__call__(x, train=False)
        from jax.sharding import PartitionSpec as P

        from jaxmtl.data_parallel import AXIS

        def local(x, scale, bias):  # x: (n / devices, H, W, C), this device's frames
            mean = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
            y = (x - mean) * (lax.rsqrt(var + self.eps) * scale) + bias
            return y, mean[None], var[None]

        y, means, vars_ = jax.shard_map(local, mesh=self.mesh, in_specs=(P(AXIS), P(), P()),
                                        out_specs=(P(AXIS), P(AXIS), P(AXIS)))(x, self.scale[...], self.bias[...])
        n = x.shape[0] // self.mesh.size * x.shape[1] * x.shape[2]
        m = self.momentum
        self.mean[...] = (1 - m) * self.mean[...] + m * lax.stop_gradient(jnp.mean(means, 0))
        self.var[...] = (1 - m) * self.var[...] + m * lax.stop_gradient(jnp.mean(vars_, 0)) * (n / (n - 1))
        self.count[...] = self.count[...] + 1
        return y


def mutate_layer(path: str, mutate: Callable) -> Callable:
    """jax_model_fn whose one layer at JAX `path` ('backbone/layer2/0/bn2') is passed to `mutate`."""
    from jaxmtl.trees import path_name

    def build(cfg: ModelConfig):
        model = init_model(cfg)
        layers = {path_name(p): m for p, m in nnx.iter_modules(model)}
        mutate(layers[path])
        return model

    return build


def set_attr(name: str, value):
    return lambda m: setattr(m, name, value)


def set_class(cls):
    return lambda m: setattr(m, "__class__", cls)


class FoldedBiasGRU(GRU):
    """Flax GRUCell-style biases: b_ir + b_hr and b_iz + b_hz folded into one; only b_hn kept apart.

    Params: w_ih, w_hh, b_ih (3H, r and z folded), b_hn (H). Forward and
    gradient match torch; training does not, since torch steps both biases.
    """

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs):
        super().__init__(input_size, hidden_size, rngs=rngs)
        del self.b_hh
        self.b_hn = nnx.Param(jnp.zeros((hidden_size,), jnp.float32))

    def __call__(self, x):
        gi = jnp.einsum("bti,ig->tbg", x, self.w_ih[...]) + self.b_ih[...]
        h0 = jnp.zeros((x.shape[0], self.hidden_size), x.dtype)
        b_hh = jnp.concatenate([jnp.zeros(2 * self.hidden_size, x.dtype), self.b_hn[...]])
        h_last, hs = gru_scan(gi, h0, self.w_hh[...], b_hh)
        return jnp.swapaxes(hs, 0, 1), h_last


@dataclasses.dataclass(frozen=True)
class FoldedBiasConversion:
    """The conversion a porter writes for FoldedBiasGRU: b_ih += [b_hr, b_hz, 0], b_hn = b_hh[2H:].

    Back to torch (gradients): d/db_ir = d/db_hr, so both torch biases get the folded gradient.
    """

    base: TableConversion
    hidden: int

    def to_jax(self, state_dict, collections=("params", "batch_stats")):
        flat = self.base.to_jax(state_dict, collections)
        p, h = flat["params"], self.hidden
        b_hh = p.pop("gru/b_hh")
        p["gru/b_ih"] = p["gru/b_ih"] + np.concatenate([b_hh[:2 * h], np.zeros(h, b_hh.dtype)])
        p["gru/b_hn"] = b_hh[2 * h:]
        return flat

    def to_torch(self, flat, collections=("params", "batch_stats")):
        flat = {c: dict(v) for c, v in flat.items()}
        if "params" in collections:
            p, h = flat["params"], self.hidden
            b_hn = p.pop("gru/b_hn")
            p["gru/b_hh"] = np.concatenate([p["gru/b_ih"][:2 * h], b_hn])
        return self.base.to_torch(flat, collections)


def folded_conversion(table: tuple, cfg: ModelConfig) -> FoldedBiasConversion:
    return FoldedBiasConversion(TableConversion(tuple(table)), cfg.gru_hidden)


# ---- conversion mistakes ------------------------------------------------------------------

def _table_with_kind(cfg: ModelConfig, keys: set[str], kind: str, layout: Layout) -> TableConversion:
    from torch_ref.convert import LAYOUTS, conversion_table

    table = tuple(e._replace(kind=kind) if e.torch_key in keys else e for e in conversion_table(cfg))
    return TableConversion(table, {**LAYOUTS, kind: layout})


def _swap_rz(a: np.ndarray, axis: int) -> np.ndarray:
    r, z, n = np.split(a, 3, axis=axis)
    return np.concatenate([z, r, n], axis=axis)


def gru_rz_swapped(cfg: ModelConfig) -> TableConversion:
    """GRU gate blocks read as (z, r, n) instead of torch's (r, z, n): weights and biases."""
    from torch_ref.convert import LAYOUTS

    mat, vec = LAYOUTS["matrix"], LAYOUTS["vector"]
    conv = _table_with_kind(cfg, {"gru.weight_ih_l0", "gru.weight_hh_l0"}, "matrix_rz", Layout(
        lambda w: mat.to_jax(_swap_rz(w, 0)), lambda k: _swap_rz(mat.to_torch(k), 0), mat.jax_shape))
    return TableConversion(tuple(e._replace(kind="vector_rz") if e.torch_key.startswith("gru.bias") else e
                                 for e in conv.table),
                           {**conv.layouts, "vector_rz": Layout(lambda v: _swap_rz(v, 0), lambda v: _swap_rz(v, 0),
                                                                vec.jax_shape)})


def nchw_nhwc_mixup(cfg: ModelConfig, keys: set[str] | None = None) -> TableConversion:
    """Conv kernels (all, or those of `keys`) transposed OIHW -> WHIO (spatial axes swapped): the
    shapes still fit square kernels."""
    from torch_ref.convert import conversion_table

    keys = keys or {e.torch_key for e in conversion_table(cfg) if e.kind == "conv"}
    flip = lambda w: np.transpose(w, (3, 2, 1, 0))  # noqa: E731  (its own inverse)
    return _table_with_kind(cfg, keys, "conv_whio", Layout(flip, flip, lambda s: (s[3], s[2], s[1], s[0])))


SQUARE = dataclasses.replace(TINY, name="tiny_square_classifier", gru_hidden=4)  # classifier 4 -> 4


def untransposed_classifier(cfg: ModelConfig) -> TableConversion:
    """torch Linear weight (out, in) copied as the JAX kernel (in, out) without a transpose."""
    if cfg.gru_hidden != cfg.num_classes:
        raise ValueError("the mistake only goes unnoticed by shape checks on a square classifier")
    same = lambda w: np.ascontiguousarray(w)  # noqa: E731
    return _table_with_kind(cfg, {"classifier.weight"}, "matrix_untransposed", Layout(same, same, tuple))


# ---- loss mistakes ------------------------------------------------------------------------

def loss_weight_on_wrong_loss(outputs, batch, cfg):
    """w_pose multiplies the classification loss instead of the pose loss."""
    from jaxmtl.losses import multitask_loss

    _, parts = multitask_loss(outputs, batch, cfg)
    total = cfg.w_pose * parts["loss_final"] + parts["loss_pose"] + cfg.w_vel * parts["loss_vel"]
    return total, parts


def sum_reduction_loss(outputs, batch, cfg):
    """MSE with reduction='sum' where torch's F.mse_loss averages."""
    final = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch.label))
    pose = jnp.sum(optax.squared_error(outputs["pose"], batch.pose))
    vel = jnp.sum(optax.squared_error(outputs["vel"], batch.vel))
    return final + cfg.w_pose * pose + cfg.w_vel * vel, {"loss_final": final, "loss_pose": pose, "loss_vel": vel}


# ---- optimizer mistakes (JAX side wrong, torch side is the truth) ---------------------------

def drop_kwarg(fn, name: str):
    """`fn` with keyword `name` silently ignored: the library default is left in place."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kwargs.pop(name, None)
        return fn(*args, **kwargs)

    return wrapper


def eps_inside_sqrt(adam):
    """optax.adam with eps moved under the square root (eps_root), as a port of a wrong formula."""

    @functools.wraps(adam)
    def wrapper(*args, eps=1e-8, eps_root=0.0, **kwargs):
        return adam(*args, eps=0.0, eps_root=eps, **kwargs)

    return wrapper


def adam_without_bias_correction(learning_rate, b1=0.9, b2=0.999, eps=1e-8, **_):
    """Adam whose moments are used as they are, without dividing by (1 - b^t): an early
    step is then too small by 1 - b1 and too large by 1 / sqrt(1 - b2)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (zeros, zeros)

    def update(grads, state, params=None):
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state[0], grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state[1], grads)
        return jax.tree.map(lambda m, v: -learning_rate * m / (jnp.sqrt(v) + eps), m, v), (m, v)

    return optax.GradientTransformation(init, update)


# ---- the registry: each mutation, the check that must catch it, and checks that must still pass --

@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    caught_by: str                 # this check must fail
    run: Callable[[], list]        # -> list[Check]
    still_pass: tuple[str, ...] = ()  # these checks must pass (the mistake hides from them)


def _forward(cfg: ModelConfig = TINY, **kw) -> list:
    """forward/train + batch_stats of a mutant of the full model, run eagerly (jax.disable_jit):
    a jit would compile the whole model per mutant (~10 s each); eager primitives
    compile once per shape and are shared by every mutant."""
    from jaxmtl.parity.harness import forward_checks
    from jaxmtl.parity.multitask_port import batches, multitask_pair

    with jax.disable_jit():
        return forward_checks(multitask_pair(cfg, "float64", **kw), batches(cfg, "float64", [11])[0])


def _same_padding() -> list:
    # Conv2d looks conv2d up at call time, so the patch is seen while the pair traces.
    with mock.patch("jaxmtl.nn.conv.conv2d", same_padding_conv2d):
        return _forward()


def _folded() -> list:
    """On the heads sub-model (the GRU is where the mistake lives): compiles in seconds."""
    from jaxmtl.parity.harness import forward_checks, gradient_checks, training_checks

    pair = heads_pair(TINY, FoldedBiasGRU, folded_conversion(heads_table(TINY), TINY))
    b = heads_batches(TINY, [21, 22, 23])
    return (forward_checks(pair, b[0]) + gradient_checks(pair, b[0])
            + training_checks(pair, b[:STEPS], optimizer_pair("sgd", momentum=0.9, lr=0.05)))


def optimizer_pair(name: str, torch_fn=None, patches: dict | None = None, **cfg_kw):
    """(torch from torch_ref.optim, optax from jaxmtl.optim) for OptimConfig(name, **cfg_kw);
    `patches` {"optax.adam": replacement} are active while the optax chain is built;
    `torch_fn` replaces the torch optimizer (the torch side is the truth)."""
    from jaxmtl.optim import OptimConfig, make_optimizer
    from jaxmtl.parity.harness import OptimizerPair
    from torch_ref.optim import clip_and_norm
    from torch_ref.optim import make_optimizer as torch_make_optimizer

    cfg = OptimConfig(name, **cfg_kw)
    with contextlib_patches(patches or {}):
        tx = make_optimizer(cfg)
    return OptimizerPair(name, torch_fn or (lambda ps: torch_make_optimizer(ps, cfg)), tx,
                         lambda ps: clip_and_norm(ps, cfg))


def contextlib_patches(patches: dict):
    stack = contextlib.ExitStack()
    for target, new in patches.items():
        stack.enter_context(mock.patch(target, new))
    return stack


def _train(opt) -> list:
    from jaxmtl.parity.harness import training_checks

    return training_checks(correct_heads_pair(), heads_batches(TINY, [21, 22, 23])[:STEPS], opt)


def _torch_sgd_dampening(ps):
    import torch

    return torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.5)


MUTATIONS: list[Mutation] = [
    Mutation("Flax 'SAME' padding on stride-2 convs", "forward/train", _same_padding),
    Mutation("BN momentum: torch's 0.1 passed as Flax momentum (0.9 in torch convention)", "batch_stats",
             lambda: _forward(jax_model_fn=with_bn_momentum(0.9)), ("forward/train",)),
    Mutation("BN momentum: Flax default 0.99 left in place (0.01 in torch convention)", "batch_stats",
             lambda: _forward(jax_model_fn=with_bn_momentum(0.01)), ("forward/train",)),
    Mutation("BN running var biased instead of unbiased", "batch_stats",
             lambda: _forward(jax_model_fn=with_biased_var), ("forward/train",)),
    Mutation("GRU gate order r/z swapped in the conversion", "forward/train",
             lambda: _forward(table=gru_rz_swapped(TINY))),
    Mutation("GRU b_ir + b_hr (and b_iz + b_hz) folded into one bias", "curve/sgd", _folded,
             ("forward/train", "grad/total")),
    Mutation("NCHW/NHWC mix-up in the conv conversion (kernel H and W swapped)", "forward/train",
             lambda: _forward(table=nchw_nhwc_mixup(TINY))),
    Mutation("transposed Linear kernel on a square layer (classifier 4x4)", "forward/train",
             lambda: _forward(SQUARE, table=untransposed_classifier(SQUARE))),
    Mutation("loss weight w_pose applied to the classification loss", "forward/train",
             lambda: _forward(loss=loss_weight_on_wrong_loss), ("batch_stats",)),
    Mutation("sum instead of mean reduction in the MSE losses", "forward/train",
             lambda: _forward(loss=sum_reduction_loss), ("batch_stats",)),
    Mutation("optax.adamw default weight decay (1e-4) left in place of torch's 0.01", "curve/adamw",
             lambda: _train(optimizer_pair("adamw", weight_decay=0.01,
                                           patches={"optax.adamw": drop_kwarg(optax.adamw, "weight_decay")}))),
    Mutation("SGD nesterov=True in torch, dropped in optax", "curve/sgd",
             lambda: _train(optimizer_pair("sgd", lr=0.05, nesterov=True,
                                           patches={"optax.sgd": drop_kwarg(optax.sgd, "nesterov")}))),
    Mutation("SGD dampening=0.5 in torch, none in optax", "curve/sgd",
             lambda: _train(optimizer_pair("sgd", lr=0.05, torch_fn=_torch_sgd_dampening))),
    Mutation("Adam eps inside the sqrt (optax eps_root) instead of outside", "curve/adam",
             lambda: _train(optimizer_pair("adam", patches={"optax.adam": eps_inside_sqrt(optax.adam)}))),
]
