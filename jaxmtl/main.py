"""`jaxmtl train`: train the multi-task model on the motion data set, in JAX or in the torch reference.

  jaxmtl train --config small --framework jax --steps 2000 --out runs/jax [--resume]
  JAX_NUM_CPU_DEVICES=8 jaxmtl train --devices 8 ...                 one process, 8 devices
  jaxmtl train --processes 2 --process-id I --coordinator HOST:PORT ... one of 2 processes

Writes OUT/metrics.jsonl (one line per step, plus eval lines), and checkpoints
under OUT/checkpoints/ (orbax for JAX, torch.save for torch). --resume
continues from the newest checkpoint and reproduces the uninterrupted curve.
The JAX path never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxmtl.config import CONFIGS, get_config
from jaxmtl.optim import OPTIMIZERS, OptimConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--framework", default="jax", choices=["jax", "torch"])
    p.add_argument("--steps", type=int, required=True, help="total number of training steps")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9, help="sgd momentum")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip-norm", type=float, default=1.0, help="global-norm clipping; 0 disables it")
    p.add_argument("--batch-size", type=int, default=None, help="override the config's batch size")
    p.add_argument("--eval-every", type=int, default=100, help="steps between held-out evals (0: only at the end)")
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="model initialisation and data seed")
    p.add_argument("--train-size", type=int, default=50_000, help="number of training samples")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (e.g. in logs)")
    p.add_argument("--init", default="jax", choices=["jax", "torch"],
                   help="JAX: initial weights from JAX's initialisers, or the torch reference's (converted) "
                        "to compare a run step by step with --framework torch")
    p.add_argument("--devices", type=int, default=None,
                   help="JAX: data-parallel over this many devices (the batch split, BatchNorm over the global "
                        "batch); on the CPU start with JAX_NUM_CPU_DEVICES=N for N virtual devices. Default: 1, "
                        "or every device of every process with --processes")
    p.add_argument("--processes", type=int, default=None,
                   help="run as one of N processes (JAX: jax.distributed; torch: DistributedDataParallel + "
                        "global-batch BatchNorm); default JAXMTL_NUM_PROCESSES or 1")
    p.add_argument("--process-id", type=int, default=None, help="this process's index in [0, N) "
                   "(default JAXMTL_PROCESS_ID)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address, reachable from every process (default JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--coordinator-timeout", type=float, default=60.0,
                   help="seconds to wait for the coordinator and the other processes")


def _settings(args: argparse.Namespace):
    """Validates everything before any work: raises ValueError naming the bad flag."""
    from jaxmtl.data import DataConfig
    from jaxmtl.loop import TrainConfig

    cfg = get_config(args.config)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    ocfg = OptimConfig(args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                       weight_decay=args.weight_decay, clip_norm=args.clip_norm or None)
    tcfg = TrainConfig(steps=args.steps, eval_every=args.eval_every, eval_batches=args.eval_batches,
                       ckpt_every=args.ckpt_every, progress=not args.no_progress)
    dcfg = DataConfig(seed=args.seed, train_size=args.train_size)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")
    from jaxmtl.data_parallel import check_batch
    from jaxmtl.distributed import process_setup

    if args.init != "jax" and args.framework != "jax":
        raise ValueError("--init applies to --framework jax (torch always starts from its own weights)")
    setup = process_setup(args.coordinator, args.processes, args.process_id, args.coordinator_timeout)
    if args.devices is not None:
        if args.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {args.devices}")
        if args.framework != "jax" and args.devices != 1:
            raise ValueError("--devices applies to --framework jax (torch runs one device per process: "
                             "use --processes N)")
        check_batch(args.batch_size or cfg.batch_size, args.devices)
    if setup is not None:
        check_batch(args.batch_size or cfg.batch_size, setup.processes)
    return cfg, ocfg, tcfg, dcfg, setup


def _run_settings(args: argparse.Namespace, meta: dict, setup) -> dict:
    """What every process of a run must agree on (compared across processes before any work)."""
    return {**meta, "processes": setup.processes, "devices": args.devices, "init": args.init, "steps": args.steps,
            "lr": args.lr, "clip_norm": args.clip_norm}


def _jax_trainer(args, cfg, ocfg, setup, meta: dict):
    """The JAX trainer on its devices and processes; ValueError / DistributedError before anything compiles."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # the program's entry point, before any array exists
    from jaxmtl import distributed
    from jaxmtl.data_parallel import check_batch, data_parallel
    from jaxmtl.train import JaxTrainer

    if setup is not None:
        distributed.initialize(setup)
        distributed.check_same_settings(_run_settings(args, meta, setup))
    dp = None
    if setup is not None or (args.devices or 1) != 1:
        dp = data_parallel(args.devices)
        check_batch(meta["batch_size"], dp.devices)
        print(f"train: data parallel over {dp.devices} devices in {jax.process_count()} process(es)",
              file=sys.stderr)
    return JaxTrainer(cfg, ocfg, seed=args.seed, dtype=args.dtype, dp=dp, init=args.init)


def run(args: argparse.Namespace) -> int:
    try:
        cfg, ocfg, tcfg, dcfg, setup = _settings(args)
    except ValueError as e:
        print(f"jaxmtl train: error: {e}", file=sys.stderr)
        return 2
    from jaxmtl.checkpoint import CheckpointError
    from jaxmtl.data import MotionDataset, ProcessShare
    from jaxmtl.distributed import DistributedError
    from jaxmtl.loop import NonFiniteLossError, fit

    import numpy as np

    data = MotionDataset(cfg, dcfg, batch_size=args.batch_size, dtype=np.dtype(args.dtype))
    # a checkpoint must come from the same run settings to be resumed
    meta = {"framework": args.framework, "config": cfg.name, "dtype": args.dtype, "seed": args.seed,
            "batch_size": data.batch_size, "train_size": dcfg.train_size, "optimizer": repr(ocfg)}
    if args.framework == "jax" and args.init != "jax":
        meta["init"] = args.init
    try:
        if args.framework == "jax":
            trainer = _jax_trainer(args, cfg, ocfg, setup, meta)
        elif setup is not None:
            from torch_ref.ddp import DDPTrainer  # torch only on this path

            trainer = DDPTrainer(cfg, ocfg, setup, seed=args.seed, dtype=args.dtype,
                                 settings=_run_settings(args, meta, setup))
        else:
            from torch_ref.train import TorchTrainer

            trainer = TorchTrainer(cfg, ocfg, seed=args.seed, dtype=args.dtype)
    except (ValueError, DistributedError) as e:
        print(f"jaxmtl train: error: {e}", file=sys.stderr)
        return 2
    if setup is not None:
        data = ProcessShare(data, setup.process_id, setup.processes)
    try:
        final = fit(trainer, data, tcfg, args.out, resume=args.resume, meta=meta)
    except (NonFiniteLossError, CheckpointError, FileNotFoundError) as e:
        print(f"jaxmtl train: error: {e}", file=sys.stderr)
        return 1
    if getattr(trainer, "primary", True):
        print(json.dumps({"step": args.steps, "eval": final}), file=sys.stderr)
    return 0
