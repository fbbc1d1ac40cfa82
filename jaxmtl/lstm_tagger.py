"""A sequence tagger around one LSTM, as Flax NNX modules: the port of `torch_ref/lstm_tagger.py`.

  x (B, T, F) --LSTM--> hs (B, T, H) --step_head--> logits (B, T, C)   (one tag per time step)
                        h_T (B, H)   --seq_head---> seq (B, K)          (one regression per sequence)

It is the parity engine's second architecture, unrelated to the multi-task
model: its LSTM stores the four gates on an axis of their own (the "gates4"
layout of `jaxmtl.parity.tables`), and the attributes are declared in another
order and under other names than torch's (`seq_head`, `rnn`, `step_head`
against `lstm`, `tagger`, `regressor`), so the conversion table derived by
`jaxmtl.parity.derive` has to pair them by call order, shape and name.

Nothing here imports torch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxmtl.nn.init import torch_linear, uniform_bound



class TaggerConfig(NamedTuple):
    """Sizes of the tagger, and of the batches the parity pair uses (tiny: each check runs in seconds).

    H != F, so the input and recurrent weights differ in shape; C != K, so the
    two heads do too.
    """

    in_features: int = 5      # F
    hidden: int = 6           # H
    num_tags: int = 3         # C: classes per time step
    seq_out: int = 2          # K: regression targets per sequence
    batch_size: int = 3       # B
    seq_len: int = 7          # T
    w_mse: float = 0.5        # total = CE(logits) + w_mse * MSE(seq)


def lstm_cell(gi_t: jax.Array, carry: tuple[jax.Array, jax.Array], w_hh: jax.Array,
              b_hh: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One torch LSTM step given the precomputed input projection gi_t = x_t W_ih + b_ih, (B, 4, H).

    torch.nn.LSTM (gates i, f, g, o; b_ih and b_hh two parameters each):
        i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')
    Here w_hh is (H, 4, H) and b_hh (4, H): gate k is [:, k, :] / [k]. Returns (h', c').
    """
    h, c = carry
    pre = gi_t + jnp.einsum("bj,jgh->bgh", h, w_hh) + b_hh
    i = jax.nn.sigmoid(pre[:, 0])
    f = jax.nn.sigmoid(pre[:, 1])
    g = jnp.tanh(pre[:, 2])
    o = jax.nn.sigmoid(pre[:, 3])
    c = f * c + i * g
    return o * jnp.tanh(c), c


def lstm_scan(gi: jax.Array, h0: jax.Array, c0: jax.Array, w_hh: jax.Array, b_hh: jax.Array,
              unroll: int = 1) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Runs the recurrence over time-major `gi` (T, B, 4, H). Returns ((h_T, c_T), hs (T, B, H))."""

    def step(carry, gi_t):
        h, c = lstm_cell(gi_t, carry, w_hh, b_hh)
        return (h, c), h

    return lax.scan(step, (h0, c0), gi, unroll=unroll)


class LSTM(nnx.Module):
    """torch.nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True), h0 = c0 = 0.

    Parameters, torch's gate order (i, f, g, o) on a gate axis of their own:
        w_ih (in, 4, H)  <- weight_ih_l0 (4H, in)   w_ih[:, k, :] = weight_ih_l0[k*H:(k+1)*H].T
        w_hh (H, 4, H)   <- weight_hh_l0 (4H, H)
        b_ih (4, H)      <- bias_ih_l0 (4H,)        b_ih[k] = bias_ih_l0[k*H:(k+1)*H]
        b_hh (4, H)      <- bias_hh_l0 (4H,)
    ("gates4" in `jaxmtl.parity.tables.LAYOUTS`.)

    Both biases are kept, as in torch. Folding them into one b = b_ih + b_hh
    (what a Keras or Flax LSTM cell holds) gives the same forward pass and the
    same gradient dL/db = dL/db_ih = dL/db_hh, but not the same training: torch
    steps b_ih and b_hh each by -lr * g, so their sum moves by -2 lr * g (SGD;
    Adam likewise moves each by its own lr-sized step, weight decay shrinks
    each), while a folded bias moves once. The trajectories part after the
    first update; `parity_tests/test_lstm_port.py` plants that mistake.
    """

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, unroll: int = 1):
        self.hidden_size = hidden_size
        self.unroll = unroll
        init = uniform_bound(1.0 / math.sqrt(hidden_size))  # torch: every tensor U(-1/sqrt(H), 1/sqrt(H))
        self.w_ih = nnx.Param(init(rngs.params(), (input_size, 4, hidden_size)))
        self.w_hh = nnx.Param(init(rngs.params(), (hidden_size, 4, hidden_size)))
        self.b_ih = nnx.Param(init(rngs.params(), (4, hidden_size)))
        self.b_hh = nnx.Param(init(rngs.params(), (4, hidden_size)))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """x (B, T, in) -> (hs (B, T, H), (h_T (B, H), c_T (B, H))): torch's (output, (h_n, c_n))
        without the layer axis of h_n and c_n."""
        # The input projection does not depend on h: one contraction for all
        # time steps outside the scan; only the recurrent part is sequential.
        gi = jnp.einsum("bti,igh->tbgh", x, self.w_ih[...]) + self.b_ih[...]
        h0 = jnp.zeros((x.shape[0], self.hidden_size), x.dtype)
        (h_last, c_last), hs = lstm_scan(gi, h0, h0, self.w_hh[...], self.b_hh[...], self.unroll)
        return jnp.swapaxes(hs, 0, 1), (h_last, c_last)


class LSTMTagger(nnx.Module):
    """LSTM, then a per-step tag head on every hidden state and a sequence head on the last one.

    Declared in a different order and with different names than torch
    (torch: lstm, tagger, regressor); the forward calls rnn, step_head, seq_head.
    """

    def __init__(self, cfg: TaggerConfig, *, rngs: nnx.Rngs):
        self.seq_head = torch_linear(cfg.hidden, cfg.seq_out, rngs=rngs)
        self.rnn = LSTM(cfg.in_features, cfg.hidden, rngs=rngs)
        self.step_head = torch_linear(cfg.hidden, cfg.num_tags, rngs=rngs)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """x (B, T, F) -> {"logits": (B, T, C), "seq": (B, K)}."""
        hs, (h_last, _) = self.rnn(x)
        return {"logits": self.step_head(hs), "seq": self.seq_head(h_last)}
