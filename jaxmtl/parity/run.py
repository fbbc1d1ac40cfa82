"""`jaxmtl parity`: run the checks, print one line per check on stderr, write DIR/parity.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxmtl.config import CONFIGS, get_config
from jaxmtl.parity.checks import Check, summarize
from jaxmtl.parity.precision import TOLERANCES, set_full_precision


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--dtype", default="float64", choices=sorted(TOLERANCES))
    p.add_argument("--out", required=True, type=Path, help="directory for parity.json")
    p.add_argument("--seed", type=int, default=0)


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
    set_full_precision(args.dtype)  # before any JAX array exists
    from jaxmtl.parity.model_pair import build_model_pair, forward_and_stats_checks, gradient_checks

    cfg = get_config(args.config)
    print(f"parity: config={cfg.name} dtype={args.dtype} seed={args.seed}", file=sys.stderr)
    pair = build_model_pair(cfg, args.dtype, args.seed)
    checks: list[Check] = []
    for group in (forward_and_stats_checks, gradient_checks):
        for check in group(pair):
            print(check.line(), file=sys.stderr, flush=True)
            checks.append(check)
    doc = write_parity_json(args.out / "parity.json", cfg.name, args.dtype, checks)
    from jaxmtl.parity.report import failure_lines, write_report

    for line in failure_lines(checks):  # the worst tensor of each failing check: where to look
        print(line, file=sys.stderr)
    meta = {"config": cfg.name, "dtype": args.dtype, "seed": str(args.seed),
            "models": "torch_ref.model.MultiTaskModel (reference) vs jaxmtl.model.MultiTaskModel, "
                      "weights initialised in torch and converted by torch_ref/convert.py"}
    print(f"parity: report -> {write_report(args.out, checks, meta)}", file=sys.stderr)
    print(f"parity: {'PASSED' if doc['passed'] else 'FAILED'} -> {args.out / 'parity.json'}", file=sys.stderr)
    return 0 if doc["passed"] else 1
