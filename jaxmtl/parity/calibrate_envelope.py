"""Measures the float32 envelope (envelope.py) over seeds: the numbers behind ENVELOPE_K and ENVELOPE_FLOOR.

  python -m jaxmtl.parity.calibrate_envelope --config tiny --seeds 0,1,2,3 --steps 100 --out DIR

For every seed (initial weights and batches) and parity optimizer it trains the
torch float64 anchor, the torch float32 members and the unmutated port, and
writes DIR/distances.json (every run's per-step distance to the anchor). It then
prints, for the k and floors given (default: the module's constants), each run's
worst ratio: the port's (the false-alarm rate of `envelope/<optimizer>` on a
correct port is the share above 1) and the worst torch member's against the other
members (torch_self_ratio: the same test on runs that are correct by definition).
`--from DIR/distances.json` re-evaluates other k and floors without training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxmtl.parity import envelope as E


def measure(config: str, seeds: list[int], steps: int, optimizers: list[str]) -> dict:
    """{seed: {optimizer: {"members": {name: {metric: [per step]}}, "port": {metric: [...]}}}}."""
    from jaxmtl.config import get_config
    from jaxmtl.parity.multitask_port import PARITY_OPTIMIZERS, curve_batches, multitask_pair, optimizer_pair
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision("float32")
    cfg = get_config(config)
    out: dict = {}
    for seed in seeds:
        pair = multitask_pair(cfg, "float32", seed)
        batches = curve_batches(cfg, "float32", seed, steps)
        for name in optimizers:
            env = E.envelope_run(pair, batches, optimizer_pair(pair, cfg, PARITY_OPTIMIZERS[name]))
            out.setdefault(str(seed), {})[name] = {
                "members": {m: {k: v.tolist() for k, v in d._asdict().items()} for m, d in env.members.items()},
                "port": {k: v.tolist() for k, v in env.port._asdict().items()}}
            print(f"seed {seed} {name}: {E.describe(env)}", file=sys.stderr, flush=True)
    return out


def summarize(distances: dict, k: float, floor: dict[str, float]) -> list[dict]:
    """Per run: the port's worst ratio and first exit, and torch's own worst (member against the rest)."""
    rows = []
    for seed, by_opt in distances.items():
        for name, runs in by_opt.items():
            members = {m: E.Distance(*(np.array(d[x]) for x in E.METRICS)) for m, d in runs["members"].items()}
            port = E.Distance(*(np.array(runs["port"][x]) for x in E.METRICS))
            env = E.envelope(name, members, port, k, floor)
            selfs = E.torch_self_ratio(env)
            worst_member = max(selfs, key=selfs.get)
            rows.append({"seed": seed, "optimizer": name, "port": E.worst_ratio(env.ratio),
                         "first_exit": env.first_exit, "torch_self": selfs[worst_member],
                         "torch_self_member": worst_member})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmtl.parity.calibrate_envelope", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--optimizer", default="sgd,adam,adamw")
    p.add_argument("--out", type=Path, default=None, help="directory for distances.json")
    p.add_argument("--from", dest="source", type=Path, default=None, help="a distances.json to re-evaluate")
    p.add_argument("--k", type=float, default=E.ENVELOPE_K)
    p.add_argument("--floor", default=None, help="loss,params,batch_stats floors (default: ENVELOPE_FLOOR)")
    args = p.parse_args(argv)
    floor = dict(zip(E.METRICS, map(float, args.floor.split(",")))) if args.floor else E.ENVELOPE_FLOOR
    if len(floor) != len(E.METRICS):
        p.error(f"--floor needs {len(E.METRICS)} comma-separated values: {','.join(E.METRICS)}")
    if args.source is None and args.out is None:
        p.error("give --out DIR (measure) or --from DIR/distances.json (re-evaluate)")
    if args.source is not None:
        distances = json.loads(args.source.read_text())
    else:
        distances = measure(args.config, [int(s) for s in args.seeds.split(",")], args.steps,
                            [o.strip() for o in args.optimizer.split(",")])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "distances.json").write_text(json.dumps(distances))
    rows = summarize(distances, args.k, floor)
    print(f"k = {args.k:g}, floor = {floor}")
    print("| seed | optimizer | port worst ratio | port first exit | torch's own worst (member) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['optimizer']} | {r['port']:.3g} | {r['first_exit'] or '-'} | "
              f"{r['torch_self']:.3g} ({r['torch_self_member']}) |")
    alarms = sum(r["port"] > 1 for r in rows)
    own = sum(r["torch_self"] > 1 for r in rows)
    print(f"false alarms on the unmutated port: {alarms} of {len(rows)} runs; "
          f"torch members outside the others' envelope: {own} of {len(rows)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
