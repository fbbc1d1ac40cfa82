"""torch state_dict <-> JAX (params, batch_stats): one explicit table, shape-checked.

The table is the single source of truth for the mapping between
`torch_ref.model.MultiTaskModel` and `jaxmtl.model.MultiTaskModel`. Both
sides are plain {name: numpy array} dicts here; torch tensors and NNX states
are converted at the edges. Every key must be used exactly once: a missing,
unexpected or mis-shaped key raises one error naming all of them.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import numpy as np

from jaxmtl.config import ModelConfig
from jaxmtl.trees import check_names_and_shapes


class Entry(NamedTuple):
    torch_key: str          # e.g. "backbone.layer1.0.conv1.weight"
    jax_key: str            # e.g. "backbone/layer1/0/conv1/kernel"
    collection: str         # "params" or "batch_stats"
    kind: str               # how the array is laid out differently, see LAYOUTS
    torch_shape: tuple      # the shape the torch side must have


# kind -> (torch -> jax, jax -> torch, torch shape -> jax shape)
LAYOUTS: dict[str, tuple[Callable, Callable, Callable]] = {
    # torch conv weight OIHW, JAX kernel HWIO (NHWC activations).
    "conv": (lambda w: np.transpose(w, (2, 3, 1, 0)), lambda k: np.transpose(k, (3, 2, 0, 1)),
             lambda s: (s[2], s[3], s[1], s[0])),
    # torch Linear/GRU weights are (out, in) for y = x W^T; JAX stores (in, out) for y = x K.
    "matrix": (lambda w: np.ascontiguousarray(w.T), lambda k: np.ascontiguousarray(k.T),
               lambda s: (s[1], s[0])),
    "vector": (lambda v: v, lambda v: v, lambda s: s),
    # num_batches_tracked is int64 in torch; JAX keeps int32 unless x64 is on.
    "count": (lambda c: np.asarray(c, np.int32), lambda c: np.asarray(c, np.int64), lambda s: s),
}


def _conv(t: str, j: str, cin: int, cout: int, k: int) -> list[Entry]:
    return [Entry(f"{t}.weight", f"{j}/kernel", "params", "conv", (cout, cin, k, k))]


def _bn(t: str, j: str, c: int) -> list[Entry]:
    return [Entry(f"{t}.weight", f"{j}/scale", "params", "vector", (c,)),
            Entry(f"{t}.bias", f"{j}/bias", "params", "vector", (c,)),
            Entry(f"{t}.running_mean", f"{j}/mean", "batch_stats", "vector", (c,)),
            Entry(f"{t}.running_var", f"{j}/var", "batch_stats", "vector", (c,)),
            Entry(f"{t}.num_batches_tracked", f"{j}/count", "batch_stats", "count", ())]


def _linear(t: str, j: str, fin: int, fout: int) -> list[Entry]:
    return [Entry(f"{t}.weight", f"{j}/kernel", "params", "matrix", (fout, fin)),
            Entry(f"{t}.bias", f"{j}/bias", "params", "vector", (fout,))]


def conversion_table(cfg: ModelConfig) -> list[Entry]:
    """Every (torch key, JAX name) pair of the multi-task model for `cfg`."""
    w = cfg.widths
    table = _conv("backbone.conv1", "backbone/conv1", cfg.in_channels, w[0], 7)
    table += _bn("backbone.bn1", "backbone/bn1", w[0])
    in_ch = w[0]
    for stage, width in enumerate(w, start=1):
        for block in (0, 1):
            t, j = f"backbone.layer{stage}.{block}", f"backbone/layer{stage}/{block}"
            cin = in_ch if block == 0 else width
            table += _conv(f"{t}.conv1", f"{j}/conv1", cin, width, 3) + _bn(f"{t}.bn1", f"{j}/bn1", width)
            table += _conv(f"{t}.conv2", f"{j}/conv2", width, width, 3) + _bn(f"{t}.bn2", f"{j}/bn2", width)
            if block == 0 and (stage > 1 or in_ch != width):
                table += _conv(f"{t}.downsample.0", f"{j}/downsample_conv", cin, width, 1)
                table += _bn(f"{t}.downsample.1", f"{j}/downsample_bn", width)
        in_ch = width
    table += _linear("pose_head", "pose_head", cfg.feature_dim, cfg.f_pose)
    h3, fin = 3 * cfg.gru_hidden, cfg.gru_input_dim
    # nn.GRU stacks the gates (r, z, n) along dim 0 of each tensor; the JAX GRU
    # keeps that order along the 3H axis, so a transpose is the whole conversion.
    table += [Entry("gru.weight_ih_l0", "gru/w_ih", "params", "matrix", (h3, fin)),
              Entry("gru.weight_hh_l0", "gru/w_hh", "params", "matrix", (h3, cfg.gru_hidden)),
              Entry("gru.bias_ih_l0", "gru/b_ih", "params", "vector", (h3,)),
              Entry("gru.bias_hh_l0", "gru/b_hh", "params", "vector", (h3,))]
    table += _linear("vel_head", "vel_head", cfg.gru_hidden, cfg.f_vel)
    table += _linear("classifier", "classifier", cfg.gru_hidden, cfg.num_classes)
    return table


class ConversionError(ValueError):
    """A state dict that does not fit the table: names every offending key."""


def _check_keys(given: Mapping[str, np.ndarray], expected: dict[str, tuple], side: str) -> None:
    check_names_and_shapes(given, expected, f"{side} state does not match the conversion table", ConversionError)


def torch_to_jax(state_dict: Mapping[str, np.ndarray], cfg: ModelConfig,
                 collections: tuple[str, ...] = ("params", "batch_stats")) -> dict[str, dict[str, np.ndarray]]:
    """numpy torch state_dict -> {"params": {jax name: array}, "batch_stats": {...}}.

    All checks run before any array is converted: nothing is half-converted.
    `collections=("params",)` converts a gradient dict (parameters only).
    """
    table = [e for e in conversion_table(cfg) if e.collection in collections]
    _check_keys(state_dict, {e.torch_key: e.torch_shape for e in table}, "torch")
    out: dict[str, dict[str, np.ndarray]] = {c: {} for c in collections}
    for e in table:
        out[e.collection][e.jax_key] = LAYOUTS[e.kind][0](np.asarray(state_dict[e.torch_key]))
    return out


def jax_to_torch(flat: Mapping[str, Mapping[str, np.ndarray]], cfg: ModelConfig,
                 collections: tuple[str, ...] = ("params", "batch_stats")) -> dict[str, np.ndarray]:
    """{"params": {jax name: array}, "batch_stats": {...}} -> numpy torch state_dict."""
    table = [e for e in conversion_table(cfg) if e.collection in collections]
    for c in collections:
        entries = [e for e in table if e.collection == c]
        _check_keys(flat.get(c, {}), {e.jax_key: LAYOUTS[e.kind][2](e.torch_shape) for e in entries},
                    f"JAX {c}")
    return {e.torch_key: LAYOUTS[e.kind][1](np.asarray(flat[e.collection][e.jax_key])) for e in table}


# ---- edges: torch tensors and NNX states --------------------------------------------

def state_dict_numpy(module) -> dict[str, np.ndarray]:
    """A torch module's state_dict as numpy arrays (copies, detached)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def grads_numpy(module) -> dict[str, np.ndarray]:
    """{parameter name: .grad as numpy} for every parameter of a torch module."""
    return {k: p.grad.detach().cpu().numpy().copy() for k, p in module.named_parameters()}


def load_into_torch(module, state_dict: Mapping[str, np.ndarray]) -> None:
    """Loads a numpy state_dict into `module` strictly (dtype of the module is kept)."""
    import torch

    current = module.state_dict()
    _check_keys(state_dict, {k: tuple(v.shape) for k, v in current.items()}, "torch")
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)).to(current[k].dtype)
                            for k, v in state_dict.items()}, strict=True)


def torch_module_to_jax_state(module, cfg: ModelConfig, params_template, stats_template):
    """torch module -> (params, batch_stats) nnx.States shaped like the templates."""
    from jaxmtl.trees import unflatten_like

    flat = torch_to_jax(state_dict_numpy(module), cfg)
    return (unflatten_like(params_template, flat["params"]),
            unflatten_like(stats_template, flat["batch_stats"]))


def jax_state_to_torch_dict(params, batch_stats, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """(params, batch_stats) nnx.States -> numpy torch state_dict."""
    from jaxmtl.trees import flatten_state

    return jax_to_torch({"params": flatten_state(params), "batch_stats": flatten_state(batch_stats)}, cfg)
