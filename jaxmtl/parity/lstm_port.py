"""The LSTM tagger (`jaxmtl/lstm_tagger.py` against `torch_ref/lstm_tagger.py`) as a parity pair.

    jaxmtl parity --pair jaxmtl.parity.lstm_port:lstm_pair_spec

`lstm_pair_spec(dtype)` returns the `harness.PairSpec`: the torch module in
`dtype`, the NNX module built abstractly (its values come from torch), one
loss per framework, random input pairs and two optimizer pairs. The
conversion table is derived from the two modules (`table=None`); its rows are
printed in docs/lstm_port.md.

torch is imported lazily inside functions: importing this module needs no torch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmtl.lstm_tagger import LSTMTagger, TaggerConfig
from jaxmtl.parity.harness import InputPair, OptimizerPair, PairSpec

# Plain torch.optim / optax pairs at the same hyper-parameters (torch defaults
# otherwise: SGD dampening 0, no nesterov, no weight decay; Adam betas (0.9, 0.999),
# eps 1e-8 outside the square root, which is optax.adam's convention too).
SGD_LR, SGD_MOMENTUM = 0.05, 0.9
ADAM_LR = 0.01


class TaggerBatch(NamedTuple):
    x: np.ndarray        # (B, T, F) floating, the same layout on both sides
    tags: np.ndarray     # (B, T) integer tag per step: int32 for JAX, int64 (torch's long) for torch
    target: np.ndarray   # (B, K) floating, the sequence-level regression target


def jax_loss(model, b: TaggerBatch, train: bool, w_mse: float):
    """CE of the per-step logits (mean over B*T) + w_mse * MSE of the sequence head (mean)."""
    out = model(b.x)
    loss_ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["logits"], b.tags))
    loss_mse = jnp.mean(optax.squared_error(out["seq"], b.target))
    return loss_ce + w_mse * loss_mse, {**out, "loss_ce": loss_ce, "loss_mse": loss_mse}


def torch_loss(module, b: TaggerBatch, train: bool, w_mse: float):
    """The same loss from stock torch functions (F.cross_entropy and F.mse_loss, mean reductions)."""
    import torch.nn.functional as F

    out = module(b.x)
    loss_ce = F.cross_entropy(out["logits"].reshape(-1, out["logits"].shape[-1]), b.tags.reshape(-1))
    loss_mse = F.mse_loss(out["seq"], b.target)
    return loss_ce + w_mse * loss_mse, {**out, "loss_ce": loss_ce, "loss_mse": loss_mse}


def tagger_batches(cfg: TaggerConfig, dtype: str, seeds) -> list[InputPair]:
    """Random batches as (JAX inputs, torch inputs): the same arrays, only the tags' integer type differs."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        b, t = cfg.batch_size, cfg.seq_len
        x = rng.standard_normal((b, t, cfg.in_features)).astype(dtype)
        tags = rng.integers(0, cfg.num_tags, size=(b, t))
        target = rng.standard_normal((b, cfg.seq_out)).astype(dtype)
        out.append((TaggerBatch(x, tags.astype(np.int32), target),
                    TaggerBatch(x, tags.astype(np.int64), target)))
    return out


def validate_batch(b: TaggerBatch, cfg: TaggerConfig) -> None:
    """A clear ValueError for inputs that do not fit `cfg` (before anything compiles)."""
    x, tags, target = (np.asarray(a) for a in b)
    if x.ndim != 3 or x.shape[2] != cfg.in_features:
        raise ValueError(f"x must be (B, T, {cfg.in_features}), got {x.shape}")
    if tags.shape != x.shape[:2] or not np.issubdtype(tags.dtype, np.integer):
        raise ValueError(f"tags must be integer (B, T) = {x.shape[:2]}, got {tags.dtype} {tags.shape}")
    if tags.size and (tags.min() < 0 or tags.max() >= cfg.num_tags):
        raise ValueError(f"tags must lie in [0, {cfg.num_tags}), got [{tags.min()}, {tags.max()}]")
    if target.shape != (x.shape[0], cfg.seq_out):
        raise ValueError(f"target must be (B, K) = {(x.shape[0], cfg.seq_out)}, got {target.shape}")


def optimizer_pairs() -> list[OptimizerPair]:
    """SGD with momentum and Adam, torch.optim against optax."""

    def sgd(params):
        import torch

        return torch.optim.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM)

    def adam(params):
        import torch

        return torch.optim.Adam(params, lr=ADAM_LR)

    return [OptimizerPair("sgd", sgd, optax.sgd(SGD_LR, momentum=SGD_MOMENTUM)),
            OptimizerPair("adam", adam, optax.adam(ADAM_LR))]


def lstm_pair_spec(dtype: str = "float64", seed: int = 0, cfg: TaggerConfig = TaggerConfig(),
                   batch_seeds=(101, 102, 103)) -> PairSpec:
    """The tagger pair: torch weights from `seed`, the NNX structure abstract, the table derived."""
    import torch

    from torch_ref.lstm_tagger import build

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    return PairSpec(
        torch_module=build(cfg, seed, torch_dtype),
        nnx_module=nnx.eval_shape(lambda: LSTMTagger(cfg, rngs=nnx.Rngs(seed))),
        torch_loss=lambda m, b, train: torch_loss(m, b, train, cfg.w_mse),
        jax_loss=lambda m, b, train: jax_loss(m, b, train, cfg.w_mse),
        batches=tagger_batches(cfg, dtype, batch_seeds),
        optimizers=optimizer_pairs(),
        table=None,
        loss_parts={"loss_ce": 1.0, "loss_mse": cfg.w_mse},
        validate=lambda b: validate_batch(b, cfg),
        name="lstm_tagger",
    )
