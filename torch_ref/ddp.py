"""The torch reference distributed as jaxmtl distributes JAX: DistributedDataParallel over gloo,
BatchNorm over the global batch, one process per device.

    jaxmtl train --framework torch --processes 2 --process-id I --coordinator 127.0.0.1:12355 ...

Each process trains on its rows of the global batch (jaxmtl.data.ProcessShare);
DDP averages the gradients over the processes, so with equal shares the step
is the single-process step on the global batch. BatchNorm: `global_batchnorm`.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from jaxmtl.batch import Batch
from jaxmtl.config import ModelConfig
from jaxmtl.distributed import DistributedError, ProcessSetup, settings_differences, wait_for_coordinator
from jaxmtl.optim import OptimConfig
from torch_ref.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from torch_ref.model import build_model
from torch_ref.optim import make_optimizer
from torch_ref.train import TORCH_DTYPES, eval_step, train_step


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d over the global batch of every process: nn.SyncBatchNorm's semantics on any device.

    .. warning:: nn.SyncBatchNorm is torch's layer for this, but torch 2.13 refuses
       CPU tensors (its kernels, torch.batch_norm_stats and the rest, exist for GPUs
       only; `global_batchnorm` uses it on GPUs). This layer gets the same result from
       stock parts: every process's activations are gathered with
       torch.distributed.nn.functional.all_gather, whose backward returns each
       process the gradient of its own rows summed over the processes; the stock
       BatchNorm2d forward normalises the global batch and updates the running
       statistics from it (unbiased variance over the global count, as SyncBatchNorm);
       each process keeps its own rows. It sends activations, not per-channel sums:
       a reference, not a fast path. Outside training, or with one process, it is
       BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_gather

        rows = x.shape[0]                                   # (n, C, H, W): this process's frames
        with warnings.catch_warnings():
            # torch 2.13 deprecates it for a function of the private _functional_collectives.
            warnings.simplefilter("ignore", FutureWarning)
            gathered = torch.cat(all_gather(x))             # (world * n, C, H, W), in rank order
        y = super().forward(gathered)
        start = dist.get_rank() * rows
        return y[start:start + rows]


def global_batchnorm(model: nn.Module) -> nn.Module:
    """`model` with every BatchNorm2d computing global-batch statistics, parameters and buffers kept.

    nn.SyncBatchNorm on GPUs; GlobalBatchNorm2d elsewhere (see its warning).
    """
    if next(model.parameters()).is_cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.BatchNorm2d:
                new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats, dtype=child.weight.dtype)
                new.load_state_dict(child.state_dict())
                setattr(parent, name, new)
    return model


def initialize(setup: ProcessSetup) -> None:
    """torch.distributed over gloo, its rendezvous at setup.coordinator (process 0 hosts it)."""
    if setup.process_id != 0:
        wait_for_coordinator(setup)
    dist.init_process_group("gloo", init_method=f"tcp://{setup.coordinator}", rank=setup.process_id,
                            world_size=setup.processes, timeout=datetime.timedelta(seconds=setup.timeout_s))


def check_same_settings(settings: dict) -> None:
    """DistributedError naming every setting on which the processes disagree."""
    docs = [None] * dist.get_world_size()
    dist.all_gather_object(docs, settings)
    diffs = settings_differences(docs)
    if diffs:
        raise DistributedError("the processes were started with different settings: " + "; ".join(diffs))


def _global_mean(metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes: with equal shares, the global batch's mean."""
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, values)}


class DDPTrainer:
    """TorchTrainer's interface (jaxmtl.loop.fit drives it) on one process of a DDP run.

    train_step / eval_step take this process's rows and return metrics of the global
    batch; grad_norm is already global (taken after DDP's all-reduce). Process 0
    writes the checkpoints; every process restores them.
    """

    framework = "torch"
    suffix = ".pt"

    def __init__(self, cfg: ModelConfig, ocfg: OptimConfig, setup: ProcessSetup, *, seed: int = 0,
                 dtype: str = "float32", settings: dict | None = None):
        """`settings`: anything else the processes must agree on (checked like config, seed and dtype)."""
        initialize(setup)
        check_same_settings({**(settings or {}), "config": cfg.name, "optimizer": repr(ocfg), "seed": seed,
                             "dtype": dtype, "processes": setup.processes})
        self.cfg, self.ocfg, self.primary = cfg, ocfg, dist.get_rank() == 0
        self._wrap(global_batchnorm(build_model(cfg, seed, TORCH_DTYPES[dtype])))

    def _wrap(self, module: nn.Module, optimizer=None) -> None:
        self.module = module
        self.model = DistributedDataParallel(module)
        self.optimizer = optimizer or make_optimizer(self.model.parameters(), self.ocfg)

    def train_step(self, batch: Batch) -> dict[str, float]:
        metrics = train_step(self.model, self.optimizer, batch, self.cfg, self.ocfg)
        grad_norm = metrics.pop("grad_norm")
        return {**_global_mean(metrics), "grad_norm": grad_norm}

    def eval_step(self, batch: Batch) -> dict[str, float]:
        return _global_mean(eval_step(self.module, batch, self.cfg))

    def save(self, out: Path, step: int, meta: dict) -> Path | None:
        path = save_checkpoint(out, step, self.module, self.optimizer, meta) if self.primary else None
        dist.barrier()
        return path

    def latest(self, out: Path) -> Path | None:
        return latest_checkpoint(out)

    def restore(self, path: Path, expect: dict) -> dict:
        module, optimizer, meta = restore_checkpoint(
            path, self.module, lambda m: make_optimizer(m.parameters(), self.ocfg), expect)
        self._wrap(module, optimizer)
        return meta
