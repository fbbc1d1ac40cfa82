"""Loading flat {JAX name: array} weights (converted from torch) into an abstract NNX model's states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmtl.trees import cast_floating, path_name

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def split_abstract(make_model):
    """(graphdef, params, batch_stats) of `make_model()` as shapes only: no initialisation work is done."""
    return nnx.split(nnx.eval_shape(make_model), nnx.Param, nnx.BatchStat)


def fill(abstract: nnx.State, flat: dict[str, np.ndarray], dtype: str) -> nnx.State:
    """`abstract` with every leaf taken from flat[name]; float leaves cast to `dtype`. Names and shapes must match."""
    pure = nnx.to_pure_dict(abstract)
    names = {path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(pure)[0]}
    if names != set(flat):
        raise KeyError(f"weights do not fit the model: missing {sorted(names - set(flat))}, "
                       f"unexpected {sorted(set(flat) - names)}")

    def leaf(p, spec):
        a = np.asarray(flat[path_name(p)])
        if a.shape != spec.shape:
            raise ValueError(f"{path_name(p)}: expected shape {spec.shape}, got {a.shape}")
        return jnp.asarray(a, DTYPES[dtype] if np.issubdtype(a.dtype, np.floating) else a.dtype)

    nnx.replace_by_pure_dict(abstract, jax.tree_util.tree_map_with_path(leaf, pure))
    return abstract


def cast_floats(state: nnx.State, dtype: str) -> nnx.State:
    return cast_floating(state, DTYPES[dtype])
