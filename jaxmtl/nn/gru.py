"""Single-layer GRU with torch's gate order and biases; BPTT through lax.scan."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxmtl.nn.init import uniform_bound


def gru_cell(gi_t: jax.Array, h: jax.Array, w_hh: jax.Array, b_hh: jax.Array) -> jax.Array:
    """One torch GRU step given the precomputed input projection gi_t = x W_ih + b_ih.

    torch (gate order r, z, n along the 3H axis; b_ih and b_hh kept apart):
        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h
    b_hn sits inside r * (...), so it cannot be merged with b_in; b_ir + b_hr
    could be for the forward pass, but torch trains both, so the training
    trajectory only matches with all six biases kept separate.
    """
    gh = jnp.dot(h, w_hh) + b_hh
    i_r, i_z, i_n = jnp.split(gi_t, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def gru_scan(gi: jax.Array, h0: jax.Array, w_hh: jax.Array, b_hh: jax.Array,
             unroll: int = 1) -> tuple[jax.Array, jax.Array]:
    """Runs the recurrence over time-major `gi` (T, B, 3H). Returns (h_T, hs (T, B, H))."""

    def step(h, gi_t):
        h = gru_cell(gi_t, h, w_hh, b_hh)
        return h, h

    return lax.scan(step, h0, gi, unroll=unroll)


class GRU(nnx.Module):
    """torch.nn.GRU(input_size, hidden_size, batch_first=True), one layer, h0 = 0.

    Parameters are stored transposed against torch for right-multiplication:
    w_ih (in, 3H) = weight_ih_l0.T, w_hh (H, 3H) = weight_hh_l0.T,
    b_ih (3H,) = bias_ih_l0, b_hh (3H,) = bias_hh_l0.
    """

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, unroll: int = 1):
        self.hidden_size = hidden_size
        self.unroll = unroll
        init = uniform_bound(1.0 / math.sqrt(hidden_size))  # torch: U(-1/sqrt(H), 1/sqrt(H))
        h3 = 3 * hidden_size
        self.w_ih = nnx.Param(init(rngs.params(), (input_size, h3)))
        self.w_hh = nnx.Param(init(rngs.params(), (hidden_size, h3)))
        self.b_ih = nnx.Param(init(rngs.params(), (h3,)))
        self.b_hh = nnx.Param(init(rngs.params(), (h3,)))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, T, in) -> (outputs (B, T, H), last hidden state (B, H))."""
        # The input projection does not depend on h: one matmul for all
        # timesteps outside the scan; only the recurrent part is sequential.
        gi = jnp.einsum("bti,ig->tbg", x, self.w_ih[...]) + self.b_ih[...]
        h0 = jnp.zeros((x.shape[0], self.hidden_size), x.dtype)
        h_last, hs = gru_scan(gi, h0, self.w_hh[...], self.b_hh[...], self.unroll)
        return jnp.swapaxes(hs, 0, 1), h_last
