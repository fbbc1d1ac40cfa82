"""`jaxmtl parity`: run the checks, print one line per check on stderr, write DIR/parity.json and report.md.

Two sources of a pair, one engine (harness.py):
  jaxmtl parity --config tiny --out DIR                  the multi-task model (multitask_port.py)
  jaxmtl parity --pair pkg.module:function --out DIR     your port: function(dtype) -> harness.PairSpec
  JAX_NUM_CPU_DEVICES=2 jaxmtl parity --devices 2 ...    the JAX side data-parallel over 2 devices
Exit status: 0 all checks passed, 1 a check failed, 2 bad arguments (nothing run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxmtl.config import CONFIGS, get_config
from jaxmtl.parity.checks import Check, summarize
from jaxmtl.parity.precision import TOLERANCES, set_full_precision


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, choices=sorted(CONFIGS), help="the multi-task model's config "
                   "(default tiny)")
    p.add_argument("--pair", default=None, metavar="MODULE:FUNCTION",
                   help="check your own port instead: FUNCTION(dtype) returns a jaxmtl.parity.harness.PairSpec")
    p.add_argument("--dtype", default="float64", choices=sorted(TOLERANCES))
    p.add_argument("--out", required=True, type=Path, help="directory for parity.json and report.md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="also train N steps in both frameworks: curve/params_after/batch_stats_after checks")
    p.add_argument("--devices", type=int, default=1,
                   help="run the JAX side data-parallel over N devices (batch split, state replicated; "
                        "on the CPU start with JAX_NUM_CPU_DEVICES=N); torch runs the whole batch on one")
    p.add_argument("--optimizer", action="append", default=None,
                   help="sgd, adam, adamw (repeat or comma-separate; default with --steps: all three); "
                        "with --pair the PairSpec's optimizers are used")


def _curve_optimizers(args: argparse.Namespace) -> list[str]:
    """The optimizers for the curve checks, validated before any work (empty without --steps)."""
    from jaxmtl.optim import OPTIMIZERS

    if args.steps is None:
        if args.optimizer:
            raise ValueError("--optimizer needs --steps")
        return []
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.pair:
        if args.optimizer:
            raise ValueError("--optimizer does not apply to --pair: the PairSpec's optimizers are trained")
        return []
    names = [n.strip() for o in (args.optimizer or [",".join(OPTIMIZERS)]) for n in o.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; known: {list(OPTIMIZERS)}")
    return list(dict.fromkeys(names))


def _check_pair_name(name: str) -> None:
    if ":" not in name.strip(":"):
        raise ValueError(f"--pair must look like package.module:function, got {name!r}")


def _replays(pair, train: list, optimizers: list, multitask_names: list[str]) -> list:
    """replay/<opt> (and, for the multi-task model's optimizers, replay/<opt>@<scale>): the
    gradients of the first optimizer's torch run replayed through each optimizer pair (replay.py)."""
    from jaxmtl.parity import replay
    from jaxmtl.parity.multitask_port import PARITY_OPTIMIZERS, stock_optimizer_pair

    if multitask_names:  # the pairs with clipping outside the step, and their scaled twins
        pairs = [(stock_optimizer_pair(PARITY_OPTIMIZERS[n], n), 1.0) for n in multitask_names]
        pairs += [(stock_optimizer_pair(PARITY_OPTIMIZERS[n], f"{n}@{replay.REPLAY_SCALE:g}", replay.REPLAY_SCALE),
                   replay.REPLAY_SCALE) for n in multitask_names]
    else:  # a pair's own train steps may hold more than torch_fn + torch_before_step: not replayed
        pairs = [(opt, 1.0) for opt in optimizers if opt.torch_step is None and opt.jax_step is None]
        if not pairs:
            return []
    grads = replay.record_gradients(pair, train, pairs[0][0])
    params = replay.parameters(pair)
    return [replay.replay(params, grads, opt, scale) for opt, scale in pairs]


def write_parity_json(path: Path, config: str, dtype: str, checks: list[Check], **extra) -> dict:
    """Writes the machine-readable verdict atomically (a reader never sees half a file)."""
    doc = {"config": config, "dtype": dtype, "passed": summarize(checks),
           "checks": [c.as_json() for c in checks], **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)
    return doc


def _emit(checks: list[Check], new: list[Check]) -> None:
    for check in new:
        print(check.line(), file=sys.stderr, flush=True)
        checks.append(check)


def run(args: argparse.Namespace) -> int:
    try:
        if args.pair and args.config:
            raise ValueError("--config and --pair exclude each other")
        curve_optimizers = _curve_optimizers(args)
        if args.pair:
            _check_pair_name(args.pair)
        if args.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {args.devices}")
        if args.devices > 1 and not args.pair:
            from jaxmtl.data_parallel import check_batch

            check_batch(get_config(args.config or "tiny").batch_size, args.devices)
    except ValueError as e:
        print(f"jaxmtl parity: error: {e}", file=sys.stderr)
        return 2
    set_full_precision(args.dtype)  # before any JAX array exists (the pair function makes arrays)
    dp = None
    if args.devices > 1:
        from jaxmtl.data_parallel import data_parallel

        try:
            dp = data_parallel(args.devices)
        except ValueError as e:
            print(f"jaxmtl parity: error: {e}", file=sys.stderr)
            return 2
    from jaxmtl.parity import envelope, harness, localize, multitask_port
    from jaxmtl.parity.curves import COMPARE_STEPS, curve_checks, plot_curves
    from jaxmtl.parity.replay import replay_checks
    from jaxmtl.parity.report import failure_lines, write_report

    checks: list[Check] = []
    runs = []
    if args.pair:
        try:
            spec = harness.load_pair_spec(args.pair, args.dtype)
        except ValueError as e:
            print(f"jaxmtl parity: error: {e}", file=sys.stderr)
            return 2
        name = spec.name
        print(f"parity: pair={args.pair} ({name}) dtype={args.dtype}", file=sys.stderr)
        pair = harness.pair_from_spec(spec, args.dtype)
        table_given = spec.table is not None
        single = list(spec.batches)
        optimizers = list(spec.optimizers) if args.steps else []
        train = [single[i % len(single)] for i in range(args.steps or 0)]
        models = f"{args.pair}: {type(spec.torch_module).__name__} (torch reference) vs " \
                 f"{type(spec.nnx_module).__name__} (NNX port)"
    else:
        cfg = get_config(args.config or "tiny")
        name = cfg.name
        print(f"parity: config={cfg.name} dtype={args.dtype} seed={args.seed}", file=sys.stderr)
        pair = multitask_port.multitask_pair(cfg, args.dtype, args.seed)
        table_given = False
        single = multitask_port.batches(cfg, args.dtype, [1000 + args.seed])
        optimizers = [multitask_port.optimizer_pair(pair, cfg, multitask_port.PARITY_OPTIMIZERS[n])
                      for n in curve_optimizers]
        train = multitask_port.curve_batches(cfg, args.dtype, args.seed, args.steps) if optimizers else []
        models = "torch_ref.model.MultiTaskModel (reference) vs jaxmtl.model.MultiTaskModel"
    if dp is not None:
        pair = harness.data_parallel_pair(pair, dp)
        print(f"parity: the JAX side data-parallel over {dp.devices} devices", file=sys.stderr)
    try:
        for i, b in enumerate([*single, *train]):  # every input, before anything compiles
            harness.check_inputs(pair, b, f"batch {i}")
    except ValueError as e:
        print(f"jaxmtl parity: error: {e}", file=sys.stderr)
        return 2
    _emit(checks, harness.compare(pair, single))
    for opt in optimizers:
        runs.append(harness.training_run(pair, train, opt, COMPARE_STEPS[args.dtype]))
        _emit(checks, curve_checks(runs[-1], args.dtype))
    replays = _replays(pair, train, optimizers, curve_optimizers) if optimizers else []
    _emit(checks, replay_checks(replays, args.dtype))
    envelopes = []
    if optimizers and args.dtype == "float32":  # float64 is compared step by step to 1e-8 instead
        for opt in optimizers:
            envelopes.append(envelope.envelope_run(pair, train, opt, replays=envelope.replays_of(opt.name, replays)))
            _emit(checks, [envelope.envelope_check(envelopes[-1])])
            print(f"parity: {envelope.describe(envelopes[-1])}", file=sys.stderr)
    if runs:
        plot_curves(runs, args.out / "curves.png", f"{name}, {args.dtype}, {args.steps} steps", envelopes)
        print(f"parity: curves -> {args.out / 'curves.png'}", file=sys.stderr)
    try:
        loc = localize.localize(pair, single[0])
    except ValueError as e:  # e.g. a hand-written conversion object without table rows
        print(f"parity: no per-layer localisation: {e}", file=sys.stderr)
        loc = None
    doc = write_parity_json(args.out / "parity.json", name, args.dtype, checks, devices=args.devices,
                            localisation=localize.as_json(loc) if loc else None,
                            envelopes=[envelope.as_json(e) for e in envelopes])
    for line in failure_lines(checks, loc):  # the worst tensor and the first divergent layer: where to look
        print(line, file=sys.stderr)
    meta = {"config": name, "dtype": args.dtype, "seed": str(args.seed),
            "JAX devices": f"{args.devices} (data parallel: batch split, state replicated)"
                           if args.devices > 1 else "1",
            "models": models + ", weights initialised in torch and converted to JAX",
            "conversion table": "given by the pair" if table_given else
                                "derived from the two models (jaxmtl.parity.derive)",
            **{f"envelope/{e.name}": envelope.describe(e) for e in envelopes}}
    print(f"parity: report -> {write_report(args.out, checks, meta, loc)}", file=sys.stderr)
    print(f"parity: {'PASSED' if doc['passed'] else 'FAILED'} -> {args.out / 'parity.json'}", file=sys.stderr)
    return 0 if doc["passed"] else 1
