"""`jaxmtl parity`: run the checks, print one line per check on stderr, write DIR/parity.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxmtl.config import CONFIGS, get_config
from jaxmtl.parity.checks import Check, summarize
from jaxmtl.parity.curves import curve_checks
from jaxmtl.parity.precision import TOLERANCES, set_full_precision


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--dtype", default="float64", choices=sorted(TOLERANCES))
    p.add_argument("--out", required=True, type=Path, help="directory for parity.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="also train N steps in both frameworks: curve/params_after/batch_stats_after checks")
    p.add_argument("--optimizer", action="append", default=None,
                   help="sgd, adam, adamw (repeat or comma-separate; default with --steps: all three)")


def _curve_optimizers(args: argparse.Namespace) -> list[str]:
    """The optimizers for the curve checks, validated before any work (empty without --steps)."""
    from jaxmtl.optim import OPTIMIZERS

    if args.steps is None:
        if args.optimizer:
            raise ValueError("--optimizer needs --steps")
        return []
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    names = [n.strip() for o in (args.optimizer or [",".join(OPTIMIZERS)]) for n in o.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; known: {list(OPTIMIZERS)}")
    return list(dict.fromkeys(names))


def write_parity_json(path: Path, config: str, dtype: str, checks: list[Check], **extra) -> dict:
    """Writes the machine-readable verdict atomically (a reader never sees half a file)."""
    doc = {"config": config, "dtype": dtype, "passed": summarize(checks),
           "checks": [c.as_json() for c in checks], **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)
    return doc


def run(args: argparse.Namespace) -> int:
    try:
        curve_optimizers = _curve_optimizers(args)
    except ValueError as e:
        print(f"jaxmtl parity: error: {e}", file=sys.stderr)
        return 2
    set_full_precision(args.dtype)  # before any JAX array exists
    from jaxmtl.parity import harness, multitask_port
    from jaxmtl.parity.curves import COMPARE_STEPS, plot_curves

    cfg = get_config(args.config)
    print(f"parity: config={cfg.name} dtype={args.dtype} seed={args.seed}", file=sys.stderr)
    pair = multitask_port.multitask_pair(cfg, args.dtype, args.seed)
    checks: list[Check] = []
    single = multitask_port.batches(cfg, args.dtype, [1000 + args.seed])
    for check in harness.compare(pair, single):
        print(check.line(), file=sys.stderr, flush=True)
        checks.append(check)
    if curve_optimizers:
        train = multitask_port.curve_batches(cfg, args.dtype, args.seed, args.steps)
        runs = []
        for name in curve_optimizers:
            opt = multitask_port.optimizer_pair(pair, cfg, multitask_port.PARITY_OPTIMIZERS[name])
            run_ = harness.training_run(pair, train, opt, COMPARE_STEPS[args.dtype])
            runs.append(run_)
            for check in curve_checks(run_, args.dtype):
                print(check.line(), file=sys.stderr, flush=True)
                checks.append(check)
        plot_curves(runs, args.out / "curves.png", f"{cfg.name}, {args.dtype}, {args.steps} steps")
        print(f"parity: curves -> {args.out / 'curves.png'}", file=sys.stderr)
    doc = write_parity_json(args.out / "parity.json", cfg.name, args.dtype, checks)
    from jaxmtl.parity.report import failure_lines, write_report

    for line in failure_lines(checks):  # the worst tensor of each failing check: where to look
        print(line, file=sys.stderr)
    meta = {"config": cfg.name, "dtype": args.dtype, "seed": str(args.seed),
            "models": "torch_ref.model.MultiTaskModel (reference) vs jaxmtl.model.MultiTaskModel, "
                      "weights initialised in torch and converted by the table derived from the two "
                      "models (jaxmtl.parity.derive)"}
    print(f"parity: report -> {write_report(args.out, checks, meta)}", file=sys.stderr)
    print(f"parity: {'PASSED' if doc['passed'] else 'FAILED'} -> {args.out / 'parity.json'}", file=sys.stderr)
    return 0 if doc["passed"] else 1
