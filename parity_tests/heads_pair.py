"""The multi-task model's heads (GRU + linear heads) as a harness pair of their own.

Small enough to compile in seconds, so tests that only need the recurrent part
(folded GRU biases, optimizer mistakes, finite differences) do not pay for the ResNet.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from flax import nnx

from jaxmtl.config import TINY, ModelConfig
from jaxmtl.model import MultiTaskModel
from jaxmtl.nn import GRU, torch_linear


class HeadsBatch(NamedTuple):
    feats: np.ndarray   # (B, T, D) stands in for the ResNet features
    dyn: np.ndarray
    pose: np.ndarray
    vel: np.ndarray
    label: np.ndarray


class JaxHeads(nnx.Module):
    """Everything after the ResNet, with MultiTaskModel's own `heads` method."""

    heads = MultiTaskModel.heads

    def __init__(self, cfg: ModelConfig, gru_cls=GRU):
        rngs = nnx.Rngs(0)
        self.pose_head = torch_linear(cfg.feature_dim, cfg.f_pose, rngs=rngs)
        self.gru = gru_cls(cfg.gru_input_dim, cfg.gru_hidden, rngs=rngs)
        self.vel_head = torch_linear(cfg.gru_hidden, cfg.f_vel, rngs=rngs)
        self.classifier = torch_linear(cfg.gru_hidden, cfg.num_classes, rngs=rngs)


def torch_heads(cfg: ModelConfig, seed: int = 0):
    """The torch reference's heads (same keys as in the full model's state_dict)."""
    import torch

    from torch_ref.model import MultiTaskModel as TorchModel
    from torch_ref.model import build_model

    class TorchHeads(torch.nn.Module):
        def __init__(self, full):
            super().__init__()
            self.pose_head, self.gru = full.pose_head, full.gru
            self.vel_head, self.classifier = full.vel_head, full.classifier

        def forward(self, feats, dyn):
            return TorchModel.heads(self, feats, dyn)

    return TorchHeads(build_model(cfg, seed, torch.float64))


def heads_table(cfg: ModelConfig) -> tuple:
    from torch_ref.convert import conversion_table

    return tuple(e for e in conversion_table(cfg) if not e.torch_key.startswith("backbone."))


def heads_batches(cfg: ModelConfig, seeds) -> list:
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        b, t = cfg.batch_size, cfg.seq_len
        hb = HeadsBatch(rng.standard_normal((b, t, cfg.feature_dim)), rng.standard_normal((b, t, cfg.f_dyn)),
                        rng.standard_normal((b, t, cfg.f_pose)), rng.standard_normal((b, t, cfg.f_vel)),
                        rng.integers(0, cfg.num_classes, size=(b,)))
        out.append((hb, hb))
    return out


def heads_losses(cfg: ModelConfig):
    """(torch_loss, jax_loss) of the heads in the harness's (model, inputs, train) form."""
    from jaxmtl.losses import multitask_loss
    from torch_ref.losses import multitask_loss as torch_multitask_loss

    def torch_loss(module, b, train):
        out = module(b.feats, b.dyn)
        total, parts = torch_multitask_loss(out, b.pose, b.vel, b.label.long(), cfg)
        return total, {**out, **parts}

    def jax_loss(model, b, train):
        out = model.heads(b.feats, b.dyn)
        total, parts = multitask_loss(out, b, cfg)
        return total, {**out, **parts}

    return torch_loss, jax_loss


def heads_pair(cfg: ModelConfig = TINY, gru_cls=GRU, table=None):
    from jaxmtl.parity.harness import make_pair

    return make_pair(torch_heads(cfg), nnx.eval_shape(lambda: JaxHeads(cfg, gru_cls)),
                     heads_table(cfg) if table is None else table, *heads_losses(cfg), dtype="float64")


def heads_spec(dtype: str):
    """The heads (tiny) as a PairSpec in `dtype`: the `--pair heads_pair:heads_spec` form."""
    import torch

    from jaxmtl.parity.harness import PairSpec

    def cast(b):
        return b._replace(**{f: getattr(b, f).astype(dtype) for f in ("feats", "dyn", "pose", "vel")})

    batches = [(cast(j), cast(t)) for j, t in heads_batches(TINY, [0])]
    return PairSpec(torch_heads(TINY).to(getattr(torch, dtype)), nnx.eval_shape(lambda: JaxHeads(TINY)),
                    *heads_losses(TINY), batches, name="heads")


@functools.cache
def correct_heads_pair():
    """The heads sub-model pair, shared: optimizer mistakes do not depend on the model, and its
    gradient and optax updates compile in seconds where the full model takes ~10 s each."""
    return heads_pair()
