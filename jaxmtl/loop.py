"""The framework-neutral training loop: data order, metrics.jsonl, eval, checkpoints, resume, NaN guard.

`fit` drives a trainer (jaxmtl.train.JaxTrainer or torch_ref.train.TorchTrainer)
that exposes train_step(batch) / eval_step(batch) -> {name: float},
save(out, step, meta), latest(out) and restore(path, expect) -> meta.
The batch at step s is `data.train_batch(s)`, so a run resumed from the
checkpoint at step s continues with exactly the batches an uninterrupted run
would have seen: the data position is the step.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxmtl.data import MotionDataset, ProcessShare
from jaxmtl.losses import LOSS_PARTS


class NonFiniteLossError(RuntimeError):
    """The loss went NaN/inf; raised before anything from that step is saved."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int
    eval_every: int = 100     # 0: only at the end
    eval_batches: int = 8
    ckpt_every: int = 100
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eval_every < 0 or self.eval_batches < 1 or self.ckpt_every < 1:
            raise ValueError(f"need eval_every >= 0, eval_batches >= 1, ckpt_every >= 1; got "
                             f"{self.eval_every}, {self.eval_batches}, {self.ckpt_every}")


def check_finite(step: int, metrics: dict[str, float]) -> None:
    """Raises NonFiniteLossError naming the step and every loss part that is NaN/inf."""
    bad = [k for k in ("total", *LOSS_PARTS) if not math.isfinite(metrics[k])]
    if bad:
        parts = [k for k in bad if k != "total"] or ["total"]
        values = ", ".join(f"{k}={metrics[k]}" for k in bad)
        raise NonFiniteLossError(f"non-finite loss at step {step}: {', '.join(parts)} went non-finite "
                                 f"({values}); no checkpoint written for this step")


def baseline_mse(data: MotionDataset, n_batches: int) -> dict[str, float]:
    """MSE of predicting the training-set mean pose / velocity, on the eval batches."""
    pose_mean, vel_mean = data.target_means()
    pose_se, vel_se = [], []
    for i in range(n_batches):
        b = data.val_batch(i)
        pose_se.append(np.mean(np.square(np.asarray(b.pose, np.float64) - pose_mean)))
        vel_se.append(np.mean(np.square(np.asarray(b.vel, np.float64) - vel_mean)))
    return {"pose_mse_mean_baseline": float(np.mean(pose_se)), "vel_mse_mean_baseline": float(np.mean(vel_se))}


def evaluate(trainer, data: MotionDataset, n_batches: int, baseline: dict[str, float]) -> dict[str, float]:
    """Mean of the eval metrics over the first n validation batches (all the same size)."""
    rows = [trainer.eval_step(data.val_batch(i)) for i in range(min(n_batches, data.val_batches))]
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {**out, **baseline}


def _truncate_metrics(path: Path, keep_until: int) -> None:
    """Drops metric lines after `keep_until` (written past the checkpoint we resume from)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["step"] <= keep_until]
    path.write_text("".join(ln + "\n" for ln in kept))


def fit(trainer, data: MotionDataset | ProcessShare, tcfg: TrainConfig, out: Path, *, resume: bool = False,
        meta: dict[str, Any] | None = None) -> dict[str, float]:
    """Runs steps [start, tcfg.steps); returns the last eval metrics.

    metrics.jsonl: one line per step {"step": s (1-based count of steps done), loss parts,
    norms, "samples_per_s"}, and an eval line {"step": s, "eval": {...}} every eval_every steps.
    Several processes: each passes its ProcessShare and calls save (a collective); only the
    trainer with `primary` True (process 0) writes metrics.jsonl and shows progress.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    primary = getattr(trainer, "primary", True)
    meta = dict(meta or {})
    start = 0
    if resume:
        path = trainer.latest(out)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {out / 'checkpoints'}")
        got = trainer.restore(path, expect=meta)
        start = int(got["step"])
        if start > tcfg.steps:
            raise ValueError(f"checkpoint {path} is at step {start}, beyond --steps {tcfg.steps}")
    metrics_path = out / "metrics.jsonl" if primary else Path(os.devnull)
    if primary:
        if start == 0 and metrics_path.exists():
            metrics_path.unlink()
        _truncate_metrics(metrics_path, start)
    baseline = baseline_mse(data.data if isinstance(data, ProcessShare) else data, tcfg.eval_batches)
    last_eval: dict[str, float] = {}
    bar = None
    if tcfg.progress and primary:
        from tqdm import tqdm

        bar = tqdm(total=tcfg.steps, initial=start, desc=f"train[{trainer.framework}]", unit="step")
    # render the next batch on a worker thread while this step runs (numpy releases the GIL)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(data.train_batch, start)
        with metrics_path.open("a") as log:
            for step in range(start, tcfg.steps):
                batch = future.result()
                if step + 1 < tcfg.steps:
                    future = pool.submit(data.train_batch, step + 1)
                t0 = time.perf_counter()
                m = trainer.train_step(batch)
                check_finite(step + 1, m)
                m["samples_per_s"] = data.batch_size / max(time.perf_counter() - t0, 1e-9)
                log.write(json.dumps({"step": step + 1, **m}) + "\n")
                done = step + 1
                if (tcfg.eval_every and done % tcfg.eval_every == 0) or done == tcfg.steps:
                    last_eval = evaluate(trainer, data, tcfg.eval_batches, baseline)
                    log.write(json.dumps({"step": done, "eval": last_eval}) + "\n")
                    if bar is not None:
                        bar.write(f"step {done}: " + " ".join(f"{k}={v:.4g}" for k, v in last_eval.items()))
                log.flush()
                if done % tcfg.ckpt_every == 0 or done == tcfg.steps:
                    trainer.save(out, done, meta)
                if bar is not None:
                    bar.set_postfix(loss=f"{m['total']:.4f}", samples_s=f"{m['samples_per_s']:.0f}")
                    bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return last_eval


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(train lines, eval lines) of a metrics.jsonl."""
    rows = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
    return [r for r in rows if "eval" not in r], [r for r in rows if "eval" in r]
