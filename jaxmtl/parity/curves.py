"""Training-curve parity: what is compared after N optimizer steps, with which tolerance, and its plot.

`harness.training_run` trains both sides from the same converted weights on
the same batches and returns a `TrainingRun`; `curve_checks` turns it into
  curve/<opt>             max over steps of |loss_jax - loss_torch| / |loss_torch|
  params_after/<opt>      max rel_err over parameter tensors after the compared steps
  batch_stats_after/<opt> max rel_err over BatchNorm statistics after them (if any)
and `plot_curves` draws curves.png. The multi-task model's parity optimizers
and batches are in multitask_port.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from jaxmtl.parity.checks import Check, check_from_errs
from jaxmtl.trees import rel_err

# Relative difference allowed, per check, on `tiny` (B=2, T=4), clipping on.
# float64: both sides do the same arithmetic up to operation order; a rounding
# difference is then amplified by the training dynamics, at a rate set by the
# step size. Measured over 100 steps (curve max / params_after max / stats max):
#   sgd   lr 5e-3: 2.5e-11 / 1.1e-10 / 3.2e-11
#   adam  lr 5e-4: 3.7e-12 / 3.0e-11 / 3.3e-12   (lr 1e-3: 2.9e-9 / 8.3e-9 / 3.6e-9)
#   adamw lr 5e-4: 3.4e-12 / 1.7e-11 / 4.9e-12   (lr 1e-3: 1.9e-8 / 5.3e-8 / 3.0e-8)
# At lr 1e-3 the AdamW difference grew ~10x per 20 steps and ~70x over steps
# 75-100 (worst tensors: BatchNorm biases, where Adam's m / sqrt(v) turns
# rounding-level gradient differences into lr-sized steps), crossing the
# issue's 1e-8 at ~step 95; at SGD lr 0.02 it reached 1e-1 by step 60. The
# parity runs therefore use step sizes where the trajectory is not chaotic
# (lr 5e-4 for Adam/AdamW, 5e-3 for SGD), which leaves >= 2 decades below 1e-8.
# float32: measured with `jaxmtl parity --dtype float32 --steps 100` (parity
# learning rates in multitask_port.PARITY_OPTIMIZERS): the loss differs by 2.5e-7 at step 1 (float32 rounding
# of one forward pass), stays below ~1e-5 for the first ~8 steps, then jumps:
# ~1e-3 by step 10-15 and 1e-2..2e-1 from step 20 on, for all three optimizers
# (curves.png). float64 drifts only from 1e-16 to ~1e-11 over the same 100 steps,
# so the float32 growth is not smooth amplification alone: a 1e-7 perturbation
# also flips ReLU signs and max-pool argmaxes (and BatchNorm over only B*T = 8
# values on tiny's 1x1 layer4 maps magnifies them), after which the two float32
# runs follow different trajectories. No tolerance over 100 steps could tell a
# bug from that, so float32 is compared over the first COMPARE_STEPS["float32"]
# = 3 steps (curve, then params and statistics after step 3).
# Measured over steps 1-3: curve <= 2.5e-7 (sgd) / 1.4e-5 (adam, adamw);
# params_after <= 1.7e-5 (sgd) / 4.8e-4 (adam, adamw: a BatchNorm bias near 0,
# so its relative error is large; 1.6e-3 at lr 1e-3); batch_stats_after
# <= 8.6e-7 (sgd) / 1.0e-4 (adam, adamw). Tolerances 1e-3 (curve, statistics)
# and 5e-3 (params): ~10x above the worst measured at either learning rate.
# They catch update-sized mistakes (wrong lr or betas, missing bias
# correction, coupled vs decoupled decay); the 1e-6 of torch's clip is only
# resolved in float64, and test_optim checks it there.
COMPARE_STEPS: dict[str, int | None] = {"float64": None, "float32": 3}
CURVE_TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"curve": 1e-8, "params_after": 1e-8, "batch_stats_after": 1e-8},
    "float32": {"curve": 1e-3, "params_after": 5e-3, "batch_stats_after": 1e-3},
}




class TrainingRun(NamedTuple):
    optimizer: str
    jax_losses: np.ndarray
    torch_losses: np.ndarray
    compared_steps: int               # the curve check and the states cover steps 1..compared_steps
    params_errs: dict
    stats_errs: dict

    @property
    def rel_diffs(self) -> np.ndarray:
        return np.array([rel_err(j, t) for j, t in zip(self.jax_losses, self.torch_losses)])


def curve_checks(run: TrainingRun, dtype: str) -> list[Check]:
    """curve over the compared steps, params and (if any) statistics after them."""
    tol = CURVE_TOLERANCES[dtype]
    curve_errs = {f"step_{i + 1:03d}": float(e) for i, e in enumerate(run.rel_diffs[:run.compared_steps])}
    checks = [check_from_errs(f"curve/{run.optimizer}", curve_errs, tol["curve"]),
              check_from_errs(f"params_after/{run.optimizer}", run.params_errs, tol["params_after"])]
    if run.stats_errs:
        checks.append(check_from_errs(f"batch_stats_after/{run.optimizer}", run.stats_errs,
                                      tol["batch_stats_after"]))
    return checks


def plot_curves(runs: list[TrainingRun], path: Path, title: str = "", envelopes: Sequence = ()) -> Path:
    """Loss curves of both frameworks overlaid (top) and their relative difference, log axis (second row);
    with float32 envelopes (envelope.Envelope, matched to the runs by optimizer name) two rows more:
    distances to the torch float64 anchor with the tolerance band, and the port's ratio to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxmtl.parity.envelope import plot_envelope

    by_name = {e.name: e for e in envelopes}
    rows = 4 if by_name else 2
    fig, axes = plt.subplots(rows, len(runs), figsize=(4.5 * len(runs), 3 * rows), sharex=True, squeeze=False)
    for col, run in enumerate(runs):
        steps = np.arange(1, len(run.jax_losses) + 1)
        top, bottom = axes[0, col], axes[1, col]
        top.plot(steps, run.torch_losses, label="torch", lw=2.5, alpha=0.6)
        top.plot(steps, run.jax_losses, label="jax", lw=1.0, ls="--")
        top.set_title(run.optimizer)
        top.set_ylabel("total loss")
        top.legend()
        bottom.semilogy(steps, np.maximum(run.rel_diffs, 1e-17))
        bottom.set_ylabel("|jax - torch| / |torch|")
        if run.optimizer in by_name:
            env = by_name[run.optimizer]
            plot_envelope(axes[2, col], axes[3, col], env)
            exit_text = f"leaves at step {env.first_exit}" if env.first_exit else "inside at every step"
            axes[2, col].set_title(f"float32 envelope: {exit_text}", fontsize=9)
        axes[-1, col].set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
