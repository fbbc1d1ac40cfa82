"""Conversion tables: torch state_dict <-> JAX (params, batch_stats), row by row, shape-checked.

A table is a list of `Entry` rows, one per torch tensor. Each row names the
torch key, the JAX name (`a/b/c`, as `jaxmtl.trees.flatten_state` spells it),
the JAX collection and the *layout* that turns one into the other
(`LAYOUTS`). `TableConversion` is the one conversion loop of the project:
every key must be used exactly once, and a missing, unexpected or mis-shaped
key raises one `ConversionError` naming all of them before any array is
converted, so nothing is ever half-converted.

Tables are either written by hand (`torch_ref.convert.conversion_table`) or
derived from the two modules (`jaxmtl.parity.derive`). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, NamedTuple

import numpy as np

from jaxmtl.trees import check_names_and_shapes


class Entry(NamedTuple):
    torch_key: str          # e.g. "backbone.layer1.0.conv1.weight"
    jax_key: str            # e.g. "backbone/layer1/0/conv1/kernel"
    collection: str         # "params" or "batch_stats"
    kind: str               # how the array is laid out differently, see LAYOUTS
    torch_shape: tuple      # the shape the torch side must have


class Layout(NamedTuple):
    to_jax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]
    jax_shape: Callable[[tuple], tuple]          # torch shape -> JAX shape


def _conv_axes(ndim: int) -> tuple:
    return (*range(2, ndim), 1, 0)               # OI[D]HW -> [D]HWIO


def _conv_inverse(ndim: int) -> tuple:
    return (ndim - 1, ndim - 2, *range(ndim - 2))  # [D]HWIO -> OI[D]HW


def _count_to_int32(c) -> np.ndarray:
    c = np.asarray(c)
    if np.any(c > np.iinfo(np.int32).max) or np.any(c < 0):
        raise ConversionError(f"a BatchNorm counter of {c} does not fit JAX's int32 count")
    return c.astype(np.int32)


def _gates_to_jax(w: np.ndarray, g: int) -> np.ndarray:
    # (G*H, in) -> (in, G, H); (G*H,) -> (G, H)
    if w.ndim == 1:
        return np.ascontiguousarray(w.reshape(g, -1))
    return np.ascontiguousarray(w.reshape(g, -1, w.shape[1]).transpose(2, 0, 1))


def _gates_to_torch(k: np.ndarray) -> np.ndarray:
    if k.ndim == 2:                              # (G, H) -> (G*H,)
        return np.ascontiguousarray(k.reshape(-1))
    return np.ascontiguousarray(k.transpose(1, 2, 0).reshape(-1, k.shape[0]))


def _gates_shape(s: tuple, g: int) -> tuple:
    return (g, s[0] // g) if len(s) == 1 else (s[1], g, s[0] // g)


LAYOUTS: dict[str, Layout] = {
    # torch conv weight O I [D] H W, JAX kernel [D] H W I O (channels-last activations).
    "conv": Layout(lambda w: np.ascontiguousarray(np.transpose(w, _conv_axes(w.ndim))),
                   lambda k: np.ascontiguousarray(np.transpose(k, _conv_inverse(k.ndim))),
                   lambda s: tuple(s[i] for i in _conv_axes(len(s)))),
    # torch Linear/RNN weights are (out, in) for y = x W^T; JAX stores (in, out) for y = x K.
    "matrix": Layout(lambda w: np.ascontiguousarray(w.T), lambda k: np.ascontiguousarray(k.T),
                     lambda s: (s[1], s[0])),
    # Same array on both sides (biases, norm scales, embeddings, running statistics).
    "vector": Layout(lambda v: v, lambda v: v, lambda s: tuple(s)),
    # num_batches_tracked is int64 in torch; JAX keeps int32 unless x64 is on.
    "count": Layout(lambda c: _count_to_int32(c), lambda c: np.asarray(c, np.int64), lambda s: tuple(s)),
    # Recurrent gate stacks with a gate axis of their own: torch stacks the G gates
    # along dim 0 ((G*H, in) weights, (G*H,) biases); the JAX side keeps (in, G, H)
    # and (G, H), same gate order. nn.LSTM: G=4 (i, f, g, o); nn.GRU: G=3 (r, z, n).
    "gates4": Layout(lambda w: _gates_to_jax(w, 4), _gates_to_torch, lambda s: _gates_shape(s, 4)),
    "gates3": Layout(lambda w: _gates_to_jax(w, 3), _gates_to_torch, lambda s: _gates_shape(s, 3)),
}


class ConversionError(ValueError):
    """A state that does not fit the conversion table: names every offending key."""


def check_keys(given: Mapping[str, np.ndarray], expected: Mapping[str, tuple], side: str) -> None:
    """One ConversionError listing every missing, unexpected and mis-shaped key of `given`."""
    check_names_and_shapes(given, expected, f"{side} state does not match the conversion table",
                           ConversionError)


@dataclasses.dataclass(frozen=True)
class TableConversion:
    """torch numpy state_dict <-> {"params": {jax name: array}, "batch_stats": {...}} by a table."""

    table: tuple                                  # of Entry
    layouts: Mapping[str, Layout] | None = None   # kind -> Layout; default LAYOUTS

    def layout(self, kind: str) -> Layout:
        layouts = LAYOUTS if self.layouts is None else self.layouts
        if kind not in layouts:
            raise ConversionError(f"unknown layout kind {kind!r}; known: {sorted(layouts)}")
        return layouts[kind]

    def rows(self, collections) -> list[Entry]:
        return [e for e in self.table if e.collection in collections]

    def to_jax(self, state_dict: Mapping[str, np.ndarray],
               collections: tuple[str, ...] = ("params", "batch_stats")) -> dict[str, dict[str, np.ndarray]]:
        """All checks run before any array is converted. `collections=("params",)` converts a
        gradient dict (parameters only)."""
        rows = self.rows(collections)
        check_keys(state_dict, {e.torch_key: tuple(e.torch_shape) for e in rows}, "torch")
        out: dict[str, dict[str, np.ndarray]] = {c: {} for c in collections}
        for e in rows:
            out[e.collection][e.jax_key] = self.layout(e.kind).to_jax(np.asarray(state_dict[e.torch_key]))
        return out

    def to_torch(self, flat: Mapping[str, Mapping[str, np.ndarray]],
                 collections: tuple[str, ...] = ("params", "batch_stats")) -> dict[str, np.ndarray]:
        rows = self.rows(collections)
        for c in collections:
            check_keys(flat.get(c, {}), {e.jax_key: self.layout(e.kind).jax_shape(tuple(e.torch_shape))
                                         for e in rows if e.collection == c}, f"JAX {c}")
        return {e.torch_key: self.layout(e.kind).to_torch(np.asarray(flat[e.collection][e.jax_key]))
                for e in rows}


def table_source(table, name: str = "TABLE") -> str:
    """The table as Python source a user can paste, freeze and review."""
    lines = ["from jaxmtl.parity.tables import Entry", "", f"{name} = ["]
    for e in table:
        lines.append(f"    Entry({e.torch_key!r}, {e.jax_key!r}, {e.collection!r}, {e.kind!r}, "
                     f"{tuple(e.torch_shape)!r}),")
    lines.append("]")
    return "\n".join(lines) + "\n"
