"""How gradients flow in the ResNet+GRU multi-task model (tiny config), made measurable.

Each function takes the model's weights converted from the torch reference
({"params": {JAX name: array}, "batch_stats": {...}}, see
torch_ref/tutorials/multitask.py) and returns gradients as flat
{JAX name: array} dicts. BatchNorm runs in train mode throughout, as in a
training step.
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
from jaxmtl.functional import init_model
from jaxmtl.losses import LOSS_PARTS, multitask_loss
from jaxmtl.model import MultiTaskModel
from jaxmtl.trees import flatten_state
from jaxmtl.tutorials.weights import DTYPES, cast_floats, fill, split_abstract

BATCH_SEED = 11
_COMPILED: dict = {}  # (graphdef, cfg) -> the jitted analysis shared by the four examples


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


def _analysis(graphdef, cfg: ModelConfig):
    """One jitted function computing every quantity the four examples show (one compile, shared).

    The model is split where the gradient story splits it: feats = encode(params)
    (the shared CNN over all B*T frames) and heads(params, feats, dyn) -> losses.
    One vjp of each; the pullbacks are vmapped over all cotangents at once:
    heads over (loss_final, loss_pose, loss_vel, total), the encoder over those
    four feature cotangents plus loss_final's cotangent masked to each timestep.
    torch does the same sums implicitly by accumulating into .grad.
    """
    key = (graphdef, cfg)
    if key in _COMPILED:
        return _COMPILED[key]
    names = (*LOSS_PARTS, "total")

    @jax.jit
    def analyse(params, stats, batch):
        def encode(p):
            return _merge(graphdef, p, stats).encode_frames(batch.images, train=True)

        def heads(p, feats, dyn):
            total, parts = multitask_loss(_merge(graphdef, p, stats).heads(feats, dyn), batch, cfg)
            return jnp.stack([parts[n] for n in LOSS_PARTS] + [total])

        def from_fused(p, fused):  # the part of heads() that loss_final depends on
            m = _merge(graphdef, p, stats)
            _, h_last = m.gru(fused)
            return _ce(m.classifier(h_last), batch.label)

        feats, pull_encode = jax.vjp(encode, params)
        losses, pull_heads = jax.vjp(heads, params, feats, batch.dyn)
        g_heads, g_feats, g_dyn = jax.vmap(pull_heads)(jnp.eye(len(names), dtype=losses.dtype))
        t_mask = jnp.eye(cfg.seq_len, dtype=feats.dtype)[:, None, :, None]  # (T, 1, T, 1): one-hot over t
        feat_cots = jnp.concatenate([g_feats, g_feats[0] * t_mask], axis=0)  # 4 losses, then T shares of loss_final
        g_encode = jax.vmap(lambda c: pull_encode(c)[0])(feat_cots)
        n = len(names)
        grads = jax.tree.map(lambda h, e: h + e[:n], g_heads, g_encode)     # heads' params + encoder's params
        g_fused = jax.grad(from_fused, argnums=1)(params, jnp.concatenate([feats, batch.dyn], axis=-1))
        return {"losses": dict(zip(names, losses)), "grads": {nm: jax.tree.map(lambda a: a[i], grads)
                                                               for i, nm in enumerate(names)},
                "shares": jax.tree.map(lambda e: e[n:], g_encode), "g_fused": g_fused,
                "g_feats": g_feats[0], "g_dyn": g_dyn[0]}

    _COMPILED[key] = analyse
    return analyse


def timestep_contributions(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """loss_final's gradient on the shared CNN is the sum over timesteps of one pullback each (BPTT).

    loss_final reads only the last GRU state; BPTT carries its gradient to
    every timestep's CNN features. Pulling back dloss/dfeats masked to one
    timestep gives that timestep's share of the CNN gradient; torch adds the
    shares into .grad, here the sum is written out and compared with
    jax.grad of the whole loss.
    """
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    r = _analysis(graphdef, cfg)(params, stats, batch)
    shares = [_backbone(flatten_state(jax.tree.map(lambda a: a[t], r["shares"]))) for t in range(cfg.seq_len)]
    out = {f"cnn_grad_share_t{t}": s for t, s in enumerate(shares)}
    out.update({"share_norms": np.array([np.sqrt(sum(float(np.sum(a ** 2)) for a in s.values())) for s in shares]),
                "feature_grad_norm_per_t": np.sqrt(np.sum(np.asarray(r["g_feats"]) ** 2, axis=(0, 2))),
                "sum_of_shares": {k: sum(s[k] for s in shares) for k in shares[0]},
                "full_cnn_grad": _backbone(flatten_state(r["grads"]["loss_final"]))})
    return out


def concat_split(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """The gradient at the concat splits: d loss_final / d concat(feats, dyn) = [d/dfeats, d/ddyn]."""
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    r = _analysis(graphdef, cfg)(params, stats, batch)
    d = cfg.feature_dim
    g_fused = np.asarray(r["g_fused"])
    return {"fused_grad": g_fused, "fused_grad[..., :D]": g_fused[..., :d], "feats_grad": np.asarray(r["g_feats"]),
            "fused_grad[..., D:]": g_fused[..., d:], "dyn_grad": np.asarray(r["g_dyn"])}


def weighted_loss_sum(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """One backward of the weighted total: grad(total) = grad(loss_final) + w_pose grad(loss_pose) + w_vel grad(loss_vel)."""
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    r = _analysis(graphdef, cfg)(params, stats, batch)
    parts = {k: flatten_state(r["grads"][k]) for k in LOSS_PARTS}
    w = {"loss_final": 1.0, "loss_pose": cfg.w_pose, "loss_vel": cfg.w_vel}
    out = {"total_loss": np.asarray(r["losses"]["total"]), "grad_total": flatten_state(r["grads"]["total"]),
           "weighted_sum_of_part_grads": {k: sum(w[p] * parts[p][k] for p in LOSS_PARTS) for k in parts["loss_final"]}}
    out.update({f"grad_{p}": parts[p] for p in LOSS_PARTS})
    return out


def stepwise_vs_joint(weights: dict | None = None, cfg: ModelConfig = TINY, dtype: str = "float64",
                      lr: float = 0.1) -> dict[str, Any]:
    """Stepping on loss_final, then back-propagating the auxiliary losses at the new weights, is not one joint step.

    Plain SGD (lr 0.1). joint: p - lr grad(total)(p). stepwise:
    p1 = p - lr grad(loss_final)(p), then p1 - lr grad(w_pose loss_pose + w_vel loss_vel)(p1).
    The second gradient is taken at p1, not p: the two results differ. (In
    JAX nothing stops you from pulling the old vjp back instead; that gives
    the gradient at p, i.e. the joint step: there is no graph to invalidate.)
    """
    graphdef, params, stats, batch = build(weights, cfg, dtype=dtype)
    analyse = _analysis(graphdef, cfg)
    sgd = lambda p, g: jax.tree.map(lambda a, b: a - lr * b, p, g)  # noqa: E731
    r0 = analyse(params, stats, batch)
    joint = sgd(params, r0["grads"]["total"])
    p1 = sgd(params, r0["grads"]["loss_final"])
    g1 = analyse(p1, stats, batch)["grads"]
    stepwise = sgd(p1, jax.tree.map(lambda a, b: cfg.w_pose * a + cfg.w_vel * b, g1["loss_pose"], g1["loss_vel"]))
    f0, fj, fs = flatten_state(params), flatten_state(joint), flatten_state(stepwise)
    diff = np.sqrt(sum(float(np.sum((fj[k] - fs[k]) ** 2)) for k in fj))
    step = np.sqrt(sum(float(np.sum((fj[k] - f0[k]) ** 2)) for k in fj))
    return {"total_loss_before": np.asarray(r0["losses"]["total"]),
            "total_loss_after_joint_step": np.asarray(analyse(joint, stats, batch)["losses"]["total"]),
            "total_loss_after_stepwise_steps": np.asarray(analyse(stepwise, stats, batch)["losses"]["total"]),
            "||joint - stepwise|| / ||joint step||": np.asarray(diff / step),
            "params_joint": fj, "params_stepwise": fs}
