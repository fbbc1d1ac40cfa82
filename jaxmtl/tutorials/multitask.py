"""Seed 000: how gradients flow in the ResNet+GRU multi-task model (tiny config), made measurable.

Each function takes the model's weights converted from the torch reference
({"params": {JAX name: array}, "batch_stats": {...}}, see
torch_ref/tutorials/multitask.py) and returns gradients as flat
{JAX name: array} dicts. BatchNorm runs in train mode throughout, as in the
seed's training step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmtl.batch import random_batch
from jaxmtl.config import TINY, ModelConfig
from jaxmtl.functional import init_model, make_grad_fn, make_part_grad_fn
from jaxmtl.losses import LOSS_PARTS
from jaxmtl.model import MultiTaskModel
from jaxmtl.trees import flatten_state
from jaxmtl.tutorials.weights import DTYPES, cast_floats, fill, split_abstract

BATCH_SEED = 11
_COMPILED: dict = {}  # (graphdef, cfg) -> (grad_fn, part_grad_fn), shared by the examples


def build(weights: dict | None, cfg: ModelConfig = TINY, seed: int = 0, dtype: str = "float64"):
    """(graphdef, params, batch_stats, batch); JAX-initialised when weights is None."""
    if weights is None:
        graphdef, params, stats = nnx.split(init_model(cfg, seed), nnx.Param, nnx.BatchStat)
        params = cast_floats(params, dtype)
    else:
        graphdef, params, stats = split_abstract(lambda: MultiTaskModel(cfg, rngs=nnx.Rngs(0)))
        params, stats = fill(params, weights["params"], dtype), fill(stats, weights["batch_stats"], dtype)
    batch = random_batch(cfg, BATCH_SEED, np.dtype(DTYPES[dtype]))
    return graphdef, params, stats, batch


def _merge(graphdef, params, stats):
    return nnx.merge(graphdef, params, stats, copy=True)  # copy: BN updates its stats in place


def _ce(logits, label):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, label))  # F.cross_entropy


def _backbone(flat: dict) -> dict:
    return {k: v for k, v in flat.items() if k.startswith("backbone/")}


def timestep_contributions(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """000 问题一 Step 2-4: loss_final's gradient on the shared CNN = sum over timesteps of one vjp each.

    loss_final reads only the last GRU state; BPTT carries its gradient to
    every timestep's CNN features. Pulling back dloss/dfeats masked to one
    timestep gives that timestep's share of the CNN gradient; torch adds the
    shares into .grad, here the sum is written out.
    """
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)

    def encode(p):
        return _merge(graphdef, p, stats).encode_frames(batch.images, train=True)

    def head_loss(p, feats):
        return _ce(_merge(graphdef, p, stats).heads(feats, batch.dyn)["logits"], batch.label)

    @jax.jit
    def run(params):
        feats, pull = jax.vjp(encode, params)
        g_feats = jax.grad(head_loss, argnums=1)(params, feats)
        t_mask = jnp.eye(cfg.seq_len, dtype=feats.dtype)[:, None, :, None]  # (T, 1, T, 1) one-hot over t
        shares = jax.vmap(lambda m: pull(g_feats * m)[0])(t_mask)       # one pullback per timestep
        full = jax.grad(lambda p: head_loss(p, encode(p)))(params)
        return shares, full, jnp.sqrt(jnp.sum(g_feats ** 2, axis=(0, 2)))

    shares, full, feat_norms = run(params)
    flat_shares = [_backbone(flatten_state(jax.tree.map(lambda a: a[t], shares))) for t in range(cfg.seq_len)]
    out = {f"cnn_grad_share_t{t}": s for t, s in enumerate(flat_shares)}
    out.update({"share_norms": np.array([np.sqrt(sum(float(np.sum(a ** 2)) for a in s.values())) for s in flat_shares]),
                "feature_grad_norm_per_t": np.asarray(feat_norms),
                "sum_of_shares": {k: sum(s[k] for s in flat_shares) for k in flat_shares[0]},
                "full_cnn_grad": _backbone(flatten_state(full))})
    return out


def concat_split(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """000 问题一 Step 3: d loss_final / d concat(feats, dyn) splits into d/dfeats and d/ddyn."""
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    model = _merge(graphdef, params, stats)
    feats = model.encode_frames(batch.images, train=True)
    dyn = jnp.asarray(batch.dyn)

    def from_fused(fused):  # the part of heads() that loss_final depends on
        _, h_last = model.gru(fused)
        return _ce(model.classifier(h_last), batch.label)

    g_fused = jax.grad(from_fused)(jnp.concatenate([feats, dyn], axis=-1))
    g_feats, g_dyn = jax.grad(lambda f, d: from_fused(jnp.concatenate([f, d], axis=-1)), argnums=(0, 1))(feats, dyn)
    d = cfg.feature_dim
    return {"fused_grad": np.asarray(g_fused), "fused_grad[..., :D]": np.asarray(g_fused[..., :d]),
            "feats_grad": np.asarray(g_feats), "fused_grad[..., D:]": np.asarray(g_fused[..., d:]),
            "dyn_grad": np.asarray(g_dyn)}


def _fns(graphdef, cfg: ModelConfig, fns: tuple | None):
    """(jit value_and_grad, jit per-part grads); `fns` lets a caller pass already-compiled ones."""
    if fns is not None:
        return fns
    key = (graphdef, cfg)
    if key not in _COMPILED:
        _COMPILED[key] = (make_grad_fn(graphdef, cfg), make_part_grad_fn(graphdef, cfg))
    return _COMPILED[key]


def weighted_loss_sum(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64",
                      fns: tuple | None = None) -> dict[str, Any]:
    """000 问题二: grad(total) = grad(loss_final) + w_pose grad(loss_pose) + w_vel grad(loss_vel)."""
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    grad_fn, part_grad_fn = _fns(graphdef, cfg, fns)
    (total, _), g_total = grad_fn(params, stats, batch)
    parts = {k: flatten_state(v) for k, v in part_grad_fn(params, stats, batch).items()}
    w = {"loss_final": 1.0, "loss_pose": cfg.w_pose, "loss_vel": cfg.w_vel}
    out = {"total_loss": np.asarray(total), "grad_total": flatten_state(g_total),
           "weighted_sum_of_part_grads": {k: sum(w[p] * parts[p][k] for p in LOSS_PARTS) for k in parts["loss_final"]}}
    out.update({f"grad_{p}": parts[p] for p in LOSS_PARTS})
    return out


def stepwise_vs_joint(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64",
                      lr: float = 0.1, fns: tuple | None = None) -> dict[str, Any]:
    """000 问题二 warning: step on loss_final, then backprop the auxiliary losses at the new weights, vs one joint step.

    Plain SGD (lr 0.1). joint: p - lr grad(total)(p). stepwise:
    p1 = p - lr grad(loss_final)(p), then p1 - lr grad(w_pose loss_pose + w_vel loss_vel)(p1).
    The second gradient is taken at p1, not p: the two results differ.
    """
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    grad_fn, part_grad_fn = _fns(graphdef, cfg, fns)
    sgd = lambda p, g: jax.tree.map(lambda a, b: a - lr * b, p, g)  # noqa: E731
    aux = lambda parts: jax.tree.map(lambda a, b: cfg.w_pose * a + cfg.w_vel * b,  # noqa: E731
                                     parts["loss_pose"], parts["loss_vel"])
    (total0, _), g_total = grad_fn(params, stats, batch)
    joint = sgd(params, g_total)
    p1 = sgd(params, part_grad_fn(params, stats, batch)["loss_final"])
    stepwise = sgd(p1, aux(part_grad_fn(p1, stats, batch)))
    total_joint = grad_fn(joint, stats, batch)[0][0]
    total_step = grad_fn(stepwise, stats, batch)[0][0]
    f0, fj, fs = flatten_state(params), flatten_state(joint), flatten_state(stepwise)
    diff = np.sqrt(sum(float(np.sum((fj[k] - fs[k]) ** 2)) for k in fj))
    step = np.sqrt(sum(float(np.sum((fj[k] - f0[k]) ** 2)) for k in fj))
    return {"total_loss_before": np.asarray(total0), "total_loss_after_joint_step": np.asarray(total_joint),
            "total_loss_after_stepwise_steps": np.asarray(total_step),
            "||joint - stepwise|| / ||joint step||": np.asarray(diff / step),
            "params_joint": fj, "params_stepwise": fs}
