"""The multi-task model's hand-written conversion table, and the torch-side edges of conversion.

`conversion_table(cfg)` is the mapping between `torch_ref.model.MultiTaskModel`
and `jaxmtl.model.MultiTaskModel`, written out by hand; the parity harness
derives the same table from the two modules (`jaxmtl.parity.derive`), and a
test holds the two equal. Converting runs through the one table-driven loop,
`jaxmtl.parity.tables.TableConversion`: every key used exactly once, a
missing, unexpected or mis-shaped key one error naming all of them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxmtl.config import ModelConfig
from jaxmtl.parity.tables import LAYOUTS, ConversionError, Entry, TableConversion, check_keys

__all__ = ["Entry", "LAYOUTS", "ConversionError", "conversion_table", "linear_entries", "torch_to_jax",
           "jax_to_torch", "state_dict_numpy", "grads_numpy", "load_into_torch",
           "torch_module_to_jax_state", "jax_state_to_torch_dict"]


def _conv(t: str, j: str, cin: int, cout: int, k: int) -> list[Entry]:
    return [Entry(f"{t}.weight", f"{j}/kernel", "params", "conv", (cout, cin, k, k))]


def _bn(t: str, j: str, c: int) -> list[Entry]:
    return [Entry(f"{t}.weight", f"{j}/scale", "params", "vector", (c,)),
            Entry(f"{t}.bias", f"{j}/bias", "params", "vector", (c,)),
            Entry(f"{t}.running_mean", f"{j}/mean", "batch_stats", "vector", (c,)),
            Entry(f"{t}.running_var", f"{j}/var", "batch_stats", "vector", (c,)),
            Entry(f"{t}.num_batches_tracked", f"{j}/count", "batch_stats", "count", ())]


def linear_entries(t: str, j: str, fin: int, fout: int) -> list[Entry]:
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
    table += linear_entries("pose_head", "pose_head", cfg.feature_dim, cfg.f_pose)
    h3, fin = 3 * cfg.gru_hidden, cfg.gru_input_dim
    # nn.GRU stacks the gates (r, z, n) along dim 0 of each tensor; the JAX GRU
    # keeps that order along the 3H axis, so a transpose is the whole conversion.
    table += [Entry("gru.weight_ih_l0", "gru/w_ih", "params", "matrix", (h3, fin)),
              Entry("gru.weight_hh_l0", "gru/w_hh", "params", "matrix", (h3, cfg.gru_hidden)),
              Entry("gru.bias_ih_l0", "gru/b_ih", "params", "vector", (h3,)),
              Entry("gru.bias_hh_l0", "gru/b_hh", "params", "vector", (h3,))]
    table += linear_entries("vel_head", "vel_head", cfg.gru_hidden, cfg.f_vel)
    table += linear_entries("classifier", "classifier", cfg.gru_hidden, cfg.num_classes)
    return table


def torch_to_jax(state_dict: Mapping[str, np.ndarray], cfg: ModelConfig,
                 collections: tuple[str, ...] = ("params", "batch_stats")) -> dict[str, dict[str, np.ndarray]]:
    """numpy torch state_dict -> {"params": {jax name: array}, "batch_stats": {...}} by cfg's table."""
    return TableConversion(tuple(conversion_table(cfg))).to_jax(state_dict, collections)


def jax_to_torch(flat: Mapping[str, Mapping[str, np.ndarray]], cfg: ModelConfig,
                 collections: tuple[str, ...] = ("params", "batch_stats")) -> dict[str, np.ndarray]:
    """{"params": {jax name: array}, "batch_stats": {...}} -> numpy torch state_dict by cfg's table."""
    return TableConversion(tuple(conversion_table(cfg))).to_torch(flat, collections)


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
    check_keys(state_dict, {k: tuple(v.shape) for k, v in current.items()}, "torch")
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
