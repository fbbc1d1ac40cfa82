"""Which formulation each CPU convolution uses, chosen by measurement on the machine that runs it.

XLA:CPU's native convolution is fast for some shapes and collapses on others,
and which formulation of conv_impl.py wins depends on the CPU (oneDNN/Eigen's
AVX2 against AVX-512 kernels change the answer). So, the way cuDNN's benchmark
mode and XLA's GPU autotuner do it, each conv shape is timed once per
direction (forward, dX, dW) with every formulation that applies to it, the
fastest of each direction is kept in a cache file, and every later trace of
the same shape reuses it:

  JAXMTL_CONV_PLAN   measure (default)  cached plan, else measure now and cache it
                     cached             cached plan, else the rule; never measures
                     rule               the hand-written rule `rule_plan`, no cache
  JAXMTL_CACHE_DIR   where the cache lives (default $XDG_CACHE_HOME/jaxmtl, else ~/.cache/jaxmtl)

The cache is one JSON file per machine key: the CPU (model, SIMD flags, usable
cores), the jax/jaxlib/jaxmtl versions and jaxmtl's XLA:CPU compiler options;
another machine or version gets a file of its own. Writers take a file lock,
merge with what is on disk and replace the file atomically, so concurrent
processes never lose each other's entries or leave half a file; a file that
does not parse or validate is ignored with a warning and its shapes are
re-measured. To pre-populate it (e.g. before several processes start, or on a
machine image), run `jaxmtl conv-plans --config small`; copying the file into
another JAXMTL_CACHE_DIR works too.

Rules:
- Measurement happens at trace time, on a thread of its own (outside the
  trace), with concrete random inputs of the traced shape and dtype, each
  candidate compiled with jaxmtl's compiler options. dW is timed with an
  elementwise producer (relu(x * a + b)) in front, as in the training step,
  where XLA fuses the BatchNorm/ReLU recomputation into the kernel-gradient
  conv's input transpose.
- Under `jax.distributed` with more than one process, `measure` acts as
  `cached`: processes measuring at once on shared cores would time each
  other, and all processes should compile the same program.
- A plan only changes the summation order: every formulation has its float64
  value-and-gradient test against XLA's conv (parity_tests/test_fast_conv.py).
  With the same cache, two runs compile the same programs (bit-identical).
- `used_plans()` lists the plan of every shape traced in this process and
  where it came from; benchmarks record it in results.json, and each plan
  measured or read from the cache is logged (logger "jaxmtl.conv_plan").
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmtl.nn.conv_impl import SMALL_MAP_PIXELS, FORMULATIONS, conv_by, formulations_for, out_size

log = logging.getLogger("jaxmtl.conv_plan")

MODES = ("measure", "cached", "rule")
DIRECTIONS = ("fwd", "dx", "dw")
CACHE_FORMAT = 1
MEASURE_S = 0.15   # timed seconds per candidate and direction (after one untimed call)
MAX_REPS = 20
# An isolated lead smaller than this keeps the rule's formulation (`choose`): with plain
# fastest-wins the measured plans made whole steps slower than the rule (benchmarks/README.md,
# "Conv plans measured per machine").
RULE_MARGIN = 0.10

# Largest (H*W*C) x (Ho*Wo*O) matrix the rule's "dense" formulation builds.
DENSE_MAX_ENTRIES = 1 << 20


class ConvShape(NamedTuple):
    """One convolution as the plan sees it: NHWC input, k x k kernel, symmetric padding."""
    n: int
    h: int
    w: int
    cin: int
    cout: int
    k: int
    stride: int
    padding: int
    dtype: str

    def key(self) -> str:
        return (f"n{self.n}_h{self.h}_w{self.w}_c{self.cin}_o{self.cout}_k{self.k}_s{self.stride}"
                f"_p{self.padding}_{self.dtype}")

    def candidates(self) -> tuple[str, ...]:
        ho, wo = out_size(self.h, self.k, self.stride, self.padding), out_size(self.w, self.k, self.stride, self.padding)
        return formulations_for(self.stride, ho * wo)


class Plan(NamedTuple):
    """The formulation (conv_impl.FORMULATIONS) of each direction."""
    fwd: str
    dx: str
    dw: str


class UsedPlan(NamedTuple):
    shape: ConvShape
    plan: Plan
    source: str        # "rule", "cache" or "measured"


def rule_plan(shape: ConvShape) -> Plan:
    """The hand-written fallback (JAXMTL_CONV_PLAN=rule, and `cached` without an entry).

    Distilled from per-shape timings on one 2-core AMD EPYC (AVX2) with
    jaxmtl's compiler options (benchmarks/README.md, "The fallback conv rule"):
    - 1x1 convs: a (strided) slice and one matmul, im2col in all directions.
    - Maps of <= SMALL_MAP_PIXELS output pixels, stride 1: "dense" (the whole
      conv as one matrix, when it has <= DENSE_MAX_ENTRIES entries) or "pairs"
      (one matmul per tap over the pixel pairs it joins) for forward and dX,
      "pairs" for dW; XLA's conv collapses on these shapes. Strided convs
      onto such maps: im2col forward and dX.
    - The 7x7/2 stem: forward and dX as a stride-1 conv on space-to-depth blocks.
    - Everything else: XLA's conv, except dW of the strided 3x3 convs (im2col)
      and of the stride-1 3x3 convs (XLA's conv on chunks of 16 frames, "xla16").
    The rule does not depend on the batch size.
    """
    n, h, w, cin, cout, k, stride, padding, _ = shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    if k == 1:
        return Plan("im2col", "im2col", "im2col")
    dw = "im2col" if stride == 2 and k == 3 else ("xla16" if stride == 1 else "xla")
    if ho * wo <= SMALL_MAP_PIXELS:
        if stride == 1:
            fwd = "dense" if h * w * cin * ho * wo * cout <= DENSE_MAX_ENTRIES else "pairs"
            return Plan(fwd, fwd, "pairs")
        return Plan("im2col", "im2col", dw)
    if k >= 7 and stride == 2:
        return Plan("s2d", "s2d", "xla")
    return Plan("xla", "xla", dw)


# ---- the cache file ------------------------------------------------------------------------

def cache_dir() -> Path:
    if os.environ.get("JAXMTL_CACHE_DIR"):
        return Path(os.environ["JAXMTL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxmtl"


@functools.lru_cache(maxsize=1)
def machine_key() -> dict[str, str]:
    """What a measured plan depends on besides the shape: CPU, cores, library versions, compiler options."""
    import importlib.metadata as md

    from jaxmtl.cpu_compiler import compiler_options
    from jaxmtl.cpu_info import cpu_flags, cpu_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "none"

    return {"cpu": cpu_model(), "simd_flags": " ".join(cpu_flags()), "cores": str(cores), "jax": version("jax"),
            "jaxlib": version("jaxlib"), "jaxmtl": version("jaxmtl"),
            "compiler_options": json.dumps(compiler_options("cpu"), sort_keys=True)}


def cache_path() -> Path:
    digest = hashlib.sha256(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"conv_plans-{digest}.json"


def _valid_entry(entry) -> bool:
    plan = entry.get("plan") if isinstance(entry, dict) else None
    return isinstance(plan, list) and len(plan) == 3 and all(p in FORMULATIONS for p in plan)


def read_cache(path: Path) -> dict[str, dict]:
    """{shape key: entry} of the cache file; {} (with a warning naming the file) if it is corrupt."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or not isinstance(doc.get("plans"), dict):
            raise ValueError(f"not a format-{CACHE_FORMAT} conv plan cache")
        if doc.get("machine") != machine_key():
            raise ValueError("written for another machine or library version")
        bad = [k for k, e in doc["plans"].items() if not _valid_entry(e)]
        if bad:
            raise ValueError(f"invalid entries {bad[:3]}")
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        warnings.warn(f"ignoring the conv plan cache {path}: {e}; its shapes will be measured again "
                      f"and the file rewritten", RuntimeWarning, stacklevel=2)
        return {}
    return doc["plans"]


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path`.lock (POSIX); elsewhere, atomic replacement alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_entry(path: Path, key: str, entry: dict) -> None:
    """Adds one shape's entry: under the lock, merged with the file as it is now, replaced atomically."""
    with _locked(path):
        with warnings.catch_warnings():  # a corrupt file was already reported when it was read
            warnings.simplefilter("ignore", RuntimeWarning)
            plans = read_cache(path)
        plans[key] = entry
        doc = {"format": CACHE_FORMAT, "machine": machine_key(), "plans": plans}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from a shared machine's other users
        os.replace(tmp, path)


# ---- measuring -----------------------------------------------------------------------------

def direction_fn(direction: str, method: str, shape: ConvShape):
    """(function, input shapes) computing one direction of the conv with `method`."""
    dtype = jnp.dtype(shape.dtype)
    k, s, p = shape.k, shape.stride, shape.padding
    ho, wo = out_size(shape.h, k, s, p), out_size(shape.w, k, s, p)
    x = jax.ShapeDtypeStruct((shape.n, shape.h, shape.w, shape.cin), dtype)
    w = jax.ShapeDtypeStruct((k, k, shape.cin, shape.cout), dtype)
    dy = jax.ShapeDtypeStruct((shape.n, ho, wo, shape.cout), dtype)
    c = jax.ShapeDtypeStruct((shape.cin,), dtype)
    if direction == "fwd":
        return (lambda x, w: conv_by(method, x, w, s, p)), (x, w)
    if direction == "dx":
        return (lambda w, dy: jax.linear_transpose(lambda x_: conv_by(method, x_, w, s, p), x)(dy)[0]), (w, dy)

    def dw(x, a, b, dy):  # the training step's producer: BatchNorm's scale/shift and ReLU, fused
        xr = jax.nn.relu(x * a + b)
        return jax.linear_transpose(lambda w_: conv_by(method, xr, w_, s, p), w)(dy)[0]
    return dw, (x, c, c, dy)


def _time_candidates(fns: dict[str, tuple], budget_s: float) -> dict[str, float]:
    """Median seconds of each compiled candidate, timed in rounds (the order rotating)."""
    rng = np.random.default_rng(0)
    runs = {}
    for name, (compiled, specs) in fns.items():
        args = [jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in specs]
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))  # untimed
        runs[name] = (compiled, args, time.perf_counter() - t0)
    per_round = sum(r[2] for r in runs.values())
    reps = int(min(MAX_REPS, max(3, budget_s * len(runs) / max(per_round, 1e-6))))
    names, times = list(runs), {n: [] for n in runs}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            compiled, args, _ = runs[name]
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - t0)
    return {n: float(np.median(t)) for n, t in times.items()}


def choose(times: dict[str, float], rule: str) -> str:
    """The fastest formulation, unless the rule's is within RULE_MARGIN of it: then the rule's.

    A conv timed alone does not see what XLA fuses around it in the training step (the
    producer of dW's input, the consumer of the output), and the rule was chosen on whole
    steps; a small isolated lead does not predict a faster step, a large one does."""
    best = min(times, key=times.get)
    return rule if rule in times and times[rule] <= (1 + RULE_MARGIN) * times[best] else best


def measure(shape: ConvShape, budget_s: float = MEASURE_S) -> dict:
    """Times every candidate formulation of `shape` in each direction; the cache entry
    {"plan": [fwd, dx, dw], "ms": {direction: {formulation: median ms}}, "measure_s", "measured_at"}."""
    from jaxmtl.cpu_compiler import jit

    t0 = time.perf_counter()
    plan, ms, rule = [], {}, rule_plan(shape)
    for direction in DIRECTIONS:
        fns = {}
        for method in shape.candidates():
            fn, specs = direction_fn(direction, method, shape)
            fns[method] = (jit(fn).lower(*specs).compile(), specs)
        times = _time_candidates(fns, budget_s)
        ms[direction] = {m: round(t * 1e3, 4) for m, t in times.items()}
        plan.append(choose(times, getattr(rule, direction)))
    return {"plan": plan, "ms": ms, "measure_s": round(time.perf_counter() - t0, 2),
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ---- the planner conv2d asks ---------------------------------------------------------------

@dataclasses.dataclass
class _State:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    plans: dict = dataclasses.field(default_factory=dict)     # (path, mode, ConvShape) -> UsedPlan


_STATE = _State()


def mode() -> str:
    """JAXMTL_CONV_PLAN, checked."""
    m = os.environ.get("JAXMTL_CONV_PLAN", "measure")
    if m not in MODES:
        raise ValueError(f"JAXMTL_CONV_PLAN must be one of {MODES}, got {m!r}")
    return m


def plan_for(shape: ConvShape) -> Plan:
    """The plan of `shape` under JAXMTL_CONV_PLAN; measured at most once per machine key and shape."""
    m = mode()
    if m == "rule":
        return _remember(("rule", shape), UsedPlan(shape, rule_plan(shape), "rule"))
    path = cache_path()
    with _STATE.lock:
        known = _STATE.plans.get((path, m, shape))
    if known is not None:
        return known.plan
    entry = read_cache(path).get(shape.key())
    if entry is not None and not set(entry["plan"]) <= set(shape.candidates()):
        warnings.warn(f"ignoring the conv plan {entry['plan']} for {shape.key()} in {path}: not every "
                      f"formulation applies to this shape (candidates {shape.candidates()})",
                      RuntimeWarning, stacklevel=2)
        entry = None
    if entry is not None:
        used = UsedPlan(shape, Plan(*entry["plan"]), "cache")
    elif m == "cached" or jax.process_count() > 1:
        used = UsedPlan(shape, rule_plan(shape), "rule")
    else:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # outside the caller's trace
            entry = pool.submit(measure, shape).result()
        write_entry(path, shape.key(), entry)
        used = UsedPlan(shape, Plan(*entry["plan"]), "measured")
        log.info("conv plan %s: %s measured in %.1f s -> %s", shape.key(), "/".join(used.plan),
                 entry["measure_s"], path)
    if used.source == "cache":
        log.info("conv plan %s: %s from %s", shape.key(), "/".join(used.plan), path)
    return _remember((path, m, shape), used)


def _remember(key, used: UsedPlan) -> Plan:
    with _STATE.lock:
        _STATE.plans[key] = used
    return used.plan


def used_plans() -> list[dict]:
    """Every plan this process has used, as JSON-ready rows (shape key, plan, source)."""
    with _STATE.lock:
        rows = list(_STATE.plans.values())
    return [{"shape": u.shape.key(), "plan": list(u.plan), "source": u.source} for u in rows]


def forget_plans() -> None:
    """Drops this process's memory of plans (the cache file stays); the next trace asks again."""
    with _STATE.lock:
        _STATE.plans.clear()


def _trace_gradient(cfg) -> None:
    """Traces (abstractly: nothing runs) the gradient of the model's loss, so that every conv of
    `cfg` asks for its plan in all three directions."""
    from flax import nnx

    from jaxmtl.batch import random_batch
    from jaxmtl.functional import init_model, loss_fn, split_model

    graphdef, params, stats = split_model(nnx.eval_shape(lambda: init_model(cfg)))
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), random_batch(cfg, 0))
    grad = jax.grad(lambda p, s, b: loss_fn(p, s, b, graphdef, cfg, train=True), has_aux=True)
    jax.eval_shape(grad, params, stats, batch)


def add_arguments(p) -> None:
    p.add_argument("--config", default="small", help="comma list of presets (tiny, small, resnet18)")
    p.add_argument("--batch-size", type=int, default=None)


def run(args) -> int:
    """`jaxmtl conv-plans`: measures and caches the plans of every conv of each config now (the
    gradient is traced abstractly, so nothing else runs), e.g. before several processes start."""
    import sys

    from jaxmtl.config import get_config

    try:
        configs = [get_config(c) for c in args.config.split(",")]  # before any measuring
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    except ValueError as e:
        print(f"jaxmtl conv-plans: error: {e}", file=sys.stderr)
        return 2
    os.environ["JAXMTL_CONV_PLAN"] = "measure"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for cfg in configs:
        _trace_gradient(dataclasses.replace(cfg, batch_size=args.batch_size or cfg.batch_size))
    print(f"conv plans of {args.config}: {cache_path()}", file=sys.stderr)
    return 0
