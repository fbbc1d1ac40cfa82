"""Pytree helpers: flat name -> array views of NNX state, a floating-point cast, and the one relative-error metric."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TINY = 1e-30  # floor of the denominator in rel_err, so an all-zero reference does not divide by 0


def path_name(path) -> str:
    """('backbone', 'layer1', 0, 'conv1', 'kernel') -> 'backbone/layer1/0/conv1/kernel'."""
    parts = []
    for k in path:
        key = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
        parts.append(str(key))
    return "/".join(parts)


def flatten_state(state: Any) -> dict[str, np.ndarray]:
    """An nnx.State (or nested dict) as {'a/b/c': numpy array}."""
    pure = nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state
    flat = jax.tree_util.tree_flatten_with_path(pure)[0]
    return {path_name(p): np.asarray(v) for p, v in flat}


def unflatten_like(template: nnx.State, flat: Mapping[str, Any]) -> nnx.State:
    """A copy of `template` with each leaf replaced by flat[its name]; names must match exactly."""
    names = set(flatten_state(template))
    missing, extra = sorted(names - set(flat)), sorted(set(flat) - names)
    if missing or extra:
        raise KeyError(f"state names differ: missing {missing}, unexpected {extra}")
    pure = jax.tree_util.tree_map_with_path(
        lambda p, _: jax.numpy.asarray(flat[path_name(p)]), nnx.to_pure_dict(template))
    out = jax.tree.map(lambda x: x, template)  # fresh State; the template stays untouched
    nnx.replace_by_pure_dict(out, pure)
    return out


def cast_floating(tree: Any, dtype) -> Any:
    """Every floating leaf of `tree` cast to `dtype` (traceable: `astype`); other leaves unchanged."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def rel_err(a: Any, b: Any) -> float:
    """||a - b|| / max(||b||, TINY), Frobenius norms in float64; `b` is the reference."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"shape mismatch: {a64.shape} vs reference {b64.shape}")
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), TINY))


def tree_rel_errs(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """rel_err per name of two flat dicts with identical names (b is the reference)."""
    if set(a) != set(b):
        raise KeyError(f"names differ: only in first {sorted(set(a) - set(b))}, "
                       f"only in reference {sorted(set(b) - set(a))}")
    return {k: rel_err(a[k], b[k]) for k in sorted(b)}


def check_names_and_shapes(given: Mapping[str, Any], expected: Mapping[str, tuple], header: str,
                           error: type[Exception], sep: str = "\n  ") -> None:
    """Raises `error` once, listing every missing name, unexpected name and shape mismatch.

    Used by weight conversion (torch_ref/convert.py) and the interchange files
    (interchange.py): a state is checked whole before anything is loaded.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [f"{k}: expected {tuple(expected[k])}, got {tuple(np.shape(given[k]))}"
             for k in sorted(set(given) & set(expected)) if tuple(np.shape(given[k])) != tuple(expected[k])]
    if missing or unexpected or wrong:
        parts = ([f"missing keys: {missing}"] if missing else []) \
            + ([f"unexpected keys: {unexpected}"] if unexpected else []) \
            + (["shape mismatches: " + "; ".join(wrong)] if wrong else [])
        raise error(f"{header}:" + sep + sep.join(parts))
