"""The statistical long-horizon check: JAX and torch train `small` for hundreds of float32 steps, over seeds.

  python -m jaxmtl.parity.long_horizon --config small --seeds 0,1,2,3 --steps 300 --out DIR   (make parity-long)

Step-by-step float32 comparison ends after a few dozen steps: the two runs part
ways chaotically (envelope.py). What remains comparable is the distribution of
outcomes. For every seed both frameworks train from the same initial weights
(torch's, converted: `jaxmtl train --init torch`) on the same batches, and the
held-out loss and accuracy are logged every `--eval-every` steps.

The test, per eval step and metric: a paired t-test of the per-seed differences
JAX - torch (paired because a seed fixes both the weights and the batches, so the
seed-to-seed variation common to both runs drops out), two-sided, at a family-wise
level ALPHA split over every (step, metric) tested (Bonferroni). The frameworks
agree when no test rejects. Beside it, the mean difference in units of the
seed-to-seed standard deviation (torch's and JAX's pooled) says how large a
difference is, rejected or not. With a few seeds this detects differences that
are consistent across seeds and large against their scatter: a wrong learning
rate, momentum or loss weight; not a 1% effect.

Writes DIR/long_horizon.json (every curve, every test) and DIR/long_horizon.png;
exit status 0 when the frameworks agree, 1 when some test rejects, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ALPHA = 0.05
METRICS = ("total", "accuracy")   # held-out loss and accuracy, as jaxmtl train logs them


def train_argv(framework: str, config: str, seed: int, steps: int, eval_every: int, eval_batches: int,
               out: Path) -> list[str]:
    init = ["--init", "torch"] if framework == "jax" else []
    return [sys.executable, "-m", "jaxmtl.cli", "train", "--config", config, "--framework", framework,
            "--seed", str(seed), "--steps", str(steps), "--eval-every", str(eval_every),
            "--eval-batches", str(eval_batches), "--ckpt-every", str(steps), "--no-progress", *init,
            "--out", str(out)]


def eval_curve(run: Path) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} from a run's metrics.jsonl."""
    from jaxmtl.loop import read_metrics

    _, evals = read_metrics(run / "metrics.jsonl")
    return {r["step"]: {m: r["eval"][m] for m in METRICS} for r in evals}


def paired_tests(jax_runs: list[dict], torch_runs: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Per (eval step, metric): the paired t-test of JAX - torch over seeds (Bonferroni over all)."""
    from scipy import stats

    steps = sorted(set.intersection(*(set(r) for r in jax_runs + torch_runs)))
    level = alpha / (len(steps) * len(METRICS))
    rows = []
    for step in steps:
        for m in METRICS:
            j = np.array([r[step][m] for r in jax_runs])
            t = np.array([r[step][m] for r in torch_runs])
            d = j - t
            spread = float(np.sqrt((np.var(j, ddof=1) + np.var(t, ddof=1)) / 2))
            p = float(stats.ttest_rel(j, t).pvalue) if np.any(d != d[0]) else (1.0 if d[0] == 0 else 0.0)
            rows.append({"step": step, "metric": m, "jax_mean": float(j.mean()), "torch_mean": float(t.mean()),
                         "mean_diff": float(d.mean()), "seed_sd": spread,
                         "diff_in_sd": float(abs(d.mean()) / spread) if spread > 0 else
                         (0.0 if d.mean() == 0 else float("inf")),
                         "p": p, "level": level, "agree": bool(p >= level)})
    return rows


def plot(jax_runs: list[dict], torch_runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8), squeeze=False)
    for ax, m in zip(axes[0], METRICS):
        for runs, color, label in ((torch_runs, "tab:blue", "torch"), (jax_runs, "tab:red", "jax")):
            for i, r in enumerate(runs):
                steps = sorted(r)
                ax.plot(steps, [r[s][m] for s in steps], color=color, alpha=0.6, lw=1.2,
                        label=f"{label} (one line per seed)" if i == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(f"held-out {m}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmtl.parity.long_horizon", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from jaxmtl.config import CONFIGS

    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.config not in CONFIGS:
        p.error(f"unknown --config {args.config!r}; known: {sorted(CONFIGS)}")
    if len(set(seeds)) < 3:
        p.error("--seeds needs at least 3 distinct seeds: the test estimates the seed-to-seed spread")
    if not 1 <= args.eval_every <= args.steps:
        p.error("--eval-every must be in [1, --steps]")
    curves: dict[str, list[dict]] = {"jax": [], "torch": []}
    for seed in seeds:
        for framework in ("torch", "jax"):
            run = args.out / f"{framework}_seed{seed}"
            if not (run / "metrics.jsonl").exists() or args.steps not in eval_curve(run):
                print(f"long_horizon: {framework} seed {seed}, {args.steps} steps -> {run}", file=sys.stderr,
                      flush=True)
                subprocess.run(train_argv(framework, args.config, seed, args.steps, args.eval_every,
                                          args.eval_batches, run), check=True)
            curves[framework].append(eval_curve(run))
    rows = paired_tests(curves["jax"], curves["torch"])
    agree = all(r["agree"] for r in rows)
    (args.out / "long_horizon.json").write_text(json.dumps(
        {"config": args.config, "seeds": seeds, "steps": args.steps, "alpha": ALPHA, "agree": agree,
         "tests": rows, "curves": {k: [{str(s): v for s, v in c.items()} for c in cs] for k, cs in curves.items()}},
        indent=1))
    plot(curves["jax"], curves["torch"], args.out / "long_horizon.png",
         f"{args.config}, float32, {len(seeds)} seeds: held-out metrics")
    print("| step | metric | jax mean | torch mean | diff / seed sd | p | agree |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['metric']} | {r['jax_mean']:.4g} | {r['torch_mean']:.4g} | "
              f"{r['diff_in_sd']:.2f} | {r['p']:.3g} | {'yes' if r['agree'] else '**no**'} |")
    print(f"long_horizon: {'AGREE' if agree else 'DIFFER'} (paired t-tests, family-wise alpha {ALPHA}, "
          f"per test {rows[0]['level']:.2g}) -> {args.out / 'long_horizon.json'}", file=sys.stderr)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
