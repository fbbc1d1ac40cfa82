"""The blitz tutorial's model examples in PyTorch: resnet18 from torch_ref.model.ResNet + nn.Linear, SGD step, freezing.

torchvision is not installed; torch_ref.model.ResNet with widths (64, 128,
256, 512) has torchvision resnet18's layers and keys (under `backbone.`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from jaxmtl.config import RESNET18
from jaxmtl.tutorials.inputs import resnet18_inputs
from jaxmtl.parity.tables import TableConversion
from torch_ref.convert import conversion_table, linear_entries, state_dict_numpy
from torch_ref.model import ResNet

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.backbone = ResNet(3, RESNET18.widths)
        self.fc = nn.Linear(RESNET18.widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def build(num_classes: int, seed: int = 0, dtype: str = "float64") -> ResNet18:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet18(num_classes).to(DTYPES[dtype])


def table(num_classes: int):
    """The `backbone.` entries of torch_ref/convert.py's table plus its Linear entries for fc."""
    entries = [e for e in conversion_table(RESNET18) if e.torch_key.startswith("backbone.")]
    return entries + linear_entries("fc", "fc", RESNET18.widths[-1], num_classes)


def to_jax(model: ResNet18, num_classes: int, state: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{"params": {JAX name: array}, "batch_stats": {...}} of the model (or of a numpy state_dict)."""
    sd = state if state is not None else state_dict_numpy(model)
    return TableConversion(tuple(table(num_classes))).to_jax(sd)


def _inputs(num_classes: int, dtype: str):
    v = resnet18_inputs(num_classes=num_classes)
    return (torch.tensor(v["data_nchw"], dtype=DTYPES[dtype]), torch.tensor(v["labels"], dtype=DTYPES[dtype]))


def _finetune_model(seed: int, dtype: str) -> ResNet18:
    model = build(1000, seed, dtype)
    for param in model.parameters():  # freeze all the parameters in the network
        param.requires_grad = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model.fc = nn.Linear(512, 10).to(DTYPES[dtype])  # new layer: requires_grad=True by default
    return model


def jax_kwargs(name: str, seed: int = 0, dtype: str = "float64") -> dict:
    """The weights the JAX twin of example `name` starts from, converted through the table."""
    if name == "resnet18_step":
        return {"weights": to_jax(build(1000, seed, dtype), 1000), "dtype": dtype}
    if name == "resnet18_finetune":
        return {"weights": to_jax(_finetune_model(seed, dtype), 10), "dtype": dtype}
    raise ValueError(f"no resnet18 example named {name!r}")


def resnet18_step(seed: int = 0, dtype: str = "float64", lr: float = 1e-2, momentum: float = 0.9) -> dict[str, Any]:
    """One training step: prediction = model(data), loss = (prediction - labels).sum(), SGD(1e-2, momentum 0.9)."""
    model = build(1000, seed, dtype).train()
    data, labels = _inputs(1000, dtype)
    before = to_jax(model, 1000)["params"]
    optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    prediction = model(data)
    loss = (prediction - labels).sum()
    optim.zero_grad()
    loss.backward()
    optim.step()
    after = to_jax(model, 1000)
    return {"loss": loss.detach().numpy(), "prediction": prediction.detach().numpy(),
            "params_after": after["params"], "update": {k: after["params"][k] - before[k] for k in before},
            "batch_stats_after": after["batch_stats"]}


def resnet18_finetune(seed: int = 0, dtype: str = "float64", lr: float = 1e-2, momentum: float = 0.9) -> dict[str, Any]:
    """Fine-tuning: freeze resnet18, add a new model.fc = nn.Linear(512, 10); one step changes only fc."""
    model = _finetune_model(seed, dtype).train()
    data, labels = _inputs(10, dtype)
    before = to_jax(model, 10)
    optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)  # all registered, only fc has grads
    loss = (model(data) - labels).sum()
    optim.zero_grad()
    loss.backward()
    optim.step()
    after = to_jax(model, 10)
    p0, p1 = before["params"], after["params"]
    changed = sorted(k for k in p1 if not np.array_equal(p1[k], p0[k]))
    return {"loss": loss.detach().numpy(), "changed_params": ", ".join(changed),
            "max_abs_change_backbone": np.asarray(max(np.max(np.abs(p1[k] - p0[k])) for k in p1 if k.startswith("backbone"))),
            "fc_after": {k: v for k, v in p1.items() if k.startswith("fc")},
            "batch_stats_changed": any(not np.array_equal(after["batch_stats"][k], before["batch_stats"][k])
                                       for k in after["batch_stats"]),
            "frozen_grads_are_None": all(p.grad is None for n, p in model.named_parameters() if n.startswith("backbone"))}
