"""The multi-task model's gradient flow in PyTorch: retain_grad, autograd.grad and optimizer steps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from jaxmtl.batch import random_batch
from jaxmtl.config import TINY, ModelConfig
from jaxmtl.tutorials.multitask import BATCH_SEED
from torch_ref.convert import state_dict_numpy, torch_to_jax
from torch_ref.losses import multitask_loss
from torch_ref.model import build_model

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _setup(cfg: ModelConfig, seed: int, dtype: str):
    model = build_model(cfg, seed, DTYPES[dtype]).train()
    b = random_batch(cfg, BATCH_SEED, np.float64 if dtype == "float64" else np.float32)
    tensors = (torch.from_numpy(b.images_nchw()), torch.from_numpy(np.asarray(b.dyn)), torch.from_numpy(np.asarray(b.pose)),
               torch.from_numpy(np.asarray(b.vel)), torch.from_numpy(np.asarray(b.label, np.int64)))
    return model, tensors


def _jax_names(model, grads: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """{torch param name: array} -> {JAX name: array} through the conversion table."""
    return torch_to_jax(grads, cfg, collections=("params",))["params"]


def _grads(model, grads) -> dict[str, np.ndarray]:
    return {n: (np.zeros(tuple(p.shape)) if g is None else g.detach().numpy())
            for (n, p), g in zip(model.named_parameters(), grads)}


def jax_kwargs(name: str, seed: int = 0, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict:
    """The torch model's weights in JAX names (the one conversion table), for the JAX twin of `name`."""
    return {"weights": torch_to_jax(state_dict_numpy(build_model(cfg, seed, DTYPES[dtype])), cfg), "dtype": dtype}


def timestep_contributions(seed: int = 0, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """loss_final's gradient on the shared CNN is the sum over timesteps of one pullback each (BPTT).

    loss_final.backward() accumulates every timestep's share into the CNN's .grad.
    """
    model, (images, dyn, pose, vel, label) = _setup(cfg, seed, dtype)
    feats = model.encode_frames(images)
    loss_final = F.cross_entropy(model.heads(feats, dyn)["logits"], label)
    params = [p for _, p in model.named_parameters()]
    (g_feats,) = torch.autograd.grad(loss_final, feats, retain_graph=True)
    out = {}
    for t in range(cfg.seq_len):
        mask = torch.zeros_like(g_feats)
        mask[:, t] = 1
        share = torch.autograd.grad(feats, params, grad_outputs=g_feats * mask, retain_graph=True, allow_unused=True)
        out[f"cnn_grad_share_t{t}"] = {k: v for k, v in _jax_names(model, _grads(model, share), cfg).items()
                                       if k.startswith("backbone/")}
    loss_final.backward()
    full = {k: v for k, v in _jax_names(model, _grads(model, [p.grad for p in params]), cfg).items()
            if k.startswith("backbone/")}
    shares = [out[f"cnn_grad_share_t{t}"] for t in range(cfg.seq_len)]
    out.update({"share_norms": np.array([np.sqrt(sum(float(np.sum(a ** 2)) for a in s.values())) for s in shares]),
                "feature_grad_norm_per_t": g_feats.norm(dim=(0, 2)).numpy(),
                "sum_of_shares": {k: sum(s[k] for s in shares) for k in shares[0]}, "full_cnn_grad": full})
    return out


def concat_split(seed: int = 0, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """The gradient at the concat splits: fused = torch.cat((feats, dyn), dim=2); fused.grad = [feats.grad, dyn.grad]."""
    model, (images, dyn, pose, vel, label) = _setup(cfg, seed, dtype)
    feats = model.encode_frames(images)
    feats.retain_grad()
    dyn = dyn.clone().requires_grad_(True)
    fused = torch.cat((feats, dyn), dim=2)
    fused.retain_grad()
    _, h_n = model.gru(fused)
    F.cross_entropy(model.classifier(h_n[-1]), label).backward()
    d = cfg.feature_dim
    return {"fused_grad": fused.grad.numpy(), "fused_grad[..., :D]": fused.grad[..., :d].numpy(),
            "feats_grad": feats.grad.numpy(), "fused_grad[..., D:]": fused.grad[..., d:].numpy(),
            "dyn_grad": dyn.grad.numpy()}


def weighted_loss_sum(seed: int = 0, cfg: ModelConfig = TINY, dtype: str = "float64") -> dict[str, Any]:
    """One backward of the weighted total equals the weighted sum of one autograd.grad per loss (retain_graph=True)."""
    model, (images, dyn, pose, vel, label) = _setup(cfg, seed, dtype)
    params = [p for _, p in model.named_parameters()]
    total, parts = multitask_loss(model(images, dyn), pose, vel, label, cfg)
    out = {"total_loss": total.detach().numpy()}
    for name, loss in parts.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[f"grad_{name}"] = _jax_names(model, _grads(model, grads), cfg)
    total.backward()
    out["grad_total"] = _jax_names(model, _grads(model, [p.grad for p in params]), cfg)
    w = {"loss_final": 1.0, "loss_pose": cfg.w_pose, "loss_vel": cfg.w_vel}
    out["weighted_sum_of_part_grads"] = {k: sum(w[p] * out[f"grad_{p}"][k] for p in parts) for k in out["grad_total"]}
    return out


def stepwise_vs_joint(seed: int = 0, cfg: ModelConfig = TINY, dtype: str = "float64", lr: float = 0.1) -> dict[str, Any]:
    """Stepping on loss_final, then back-propagating the auxiliary losses at the new weights, is not one joint step."""
    model, (images, dyn, pose, vel, label) = _setup(cfg, seed, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    total0, _ = multitask_loss(model(images, dyn), pose, vel, label, cfg)
    opt.zero_grad()
    total0.backward()
    opt.step()
    joint = {k: v for k, v in torch_to_jax(state_dict_numpy(model), cfg)["params"].items()}
    with torch.no_grad():
        total_joint, _ = multitask_loss(model(images, dyn), pose, vel, label, cfg)

    model, _ = _setup(cfg, seed, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    _, parts = multitask_loss(model(images, dyn), pose, vel, label, cfg)
    opt.zero_grad()
    parts["loss_final"].backward(retain_graph=True)
    opt.step()  # modifies the weights in place: the recorded graph no longer matches them
    stale = cfg.w_pose * parts["loss_pose"] + cfg.w_vel * parts["loss_vel"]
    try:
        stale.backward()
        error = ""
    except RuntimeError as e:
        error = str(e).split(":")[0]
    _, parts = multitask_loss(model(images, dyn), pose, vel, label, cfg)  # a new forward at the new weights
    opt.zero_grad()
    (cfg.w_pose * parts["loss_pose"] + cfg.w_vel * parts["loss_vel"]).backward()
    opt.step()
    stepwise = torch_to_jax(state_dict_numpy(model), cfg)["params"]
    with torch.no_grad():
        total_step, _ = multitask_loss(model(images, dyn), pose, vel, label, cfg)
    f0 = torch_to_jax(state_dict_numpy(build_model(cfg, seed, DTYPES[dtype])), cfg)["params"]
    diff = np.sqrt(sum(float(np.sum((joint[k] - stepwise[k]) ** 2)) for k in joint))
    step = np.sqrt(sum(float(np.sum((joint[k] - f0[k]) ** 2)) for k in joint))
    return {"total_loss_before": total0.detach().numpy(), "total_loss_after_joint_step": total_joint.numpy(),
            "total_loss_after_stepwise_steps": total_step.numpy(),
            "||joint - stepwise|| / ||joint step||": np.asarray(diff / step),
            "params_joint": joint, "params_stepwise": stepwise,
            "backward_through_the_stale_graph": error}
