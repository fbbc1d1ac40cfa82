"""Float32 training parity judged against torch's own float32 noise: the envelope check.

.. warning:: not yet part of `jaxmtl parity`. Its false-alarm rate on the unmutated
   port is measured and too high (see ENVELOPE_K): early in training the port's distance to
   torch exceeds what these perturbations make torch's distance to itself.

Two float32 runs of the same training part ways chaotically after a few steps
(curves.py), torch against torch as much as JAX against torch. So the question is
not "is the port close to torch" but "does the port stay as close to torch as torch
stays to itself". The torch reference is trained again under perturbations that
leave the mathematics unchanged:
  threads        torch on 2 intra-op threads instead of 1 (only the summation order moves)
  ulp:<s>        initial weights times (1 + 1e-7 z), z ~ N(0, 1) seeded by s (about one float32 ulp)
  no_mkldnn      torch.backends.mkldnn off: other convolution kernels, other rounding in every conv
  channels_last  the module in channels-last memory format: other kernels and summation orders
Their per-step distance to the unperturbed run, for the loss, the parameters and the
BatchNorm statistics, is the spread; the port's distance to the same run must stay
within k * spread + floor at every step (`envelope/<optimizer>`). The check's value
is the worst ratio port / (k * spread + floor) over steps and metrics: <= 1 passes.

k and the floor are measured (ENVELOPE_K, ENVELOPE_FLOOR, with the runs that set them).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from jaxmtl.parity.checks import Check, check_from_errs
from jaxmtl.trees import flatten_state, rel_err

METRICS = ("loss", "params", "batch_stats")
PERTURBATIONS = ("threads", "ulp:1", "ulp:2", "no_mkldnn", "channels_last")
ULP = 1e-7
# Measured on `tiny`, float32, 100 steps, the parity optimizers, seed 0: the port's distance
# over the spread of three perturbed runs, after step 5, at most 3.4 (loss) / 1.2 (params,
# statistics); a fourth perturbed torch run (ulp:3) over the same spread at most 3.5 / 1.6:
# the port is as far from torch as torch is from itself. k = 10 leaves ~3x over both. The
# floors cover the first steps, where the spread is a few ulps (loss 1.9e-7 and the port
# 5.0e-7 at step 1; parameters 3.4e-5 / 6.2e-5). With them the unmutated port's worst ratio
# was 0.24 / 0.33 / 0.50 (adam / sgd / adamw); Adam eps 1e-7 gave 56, BatchNorm eps 1e-3
# 4.1e3 to 1.4e4, Adam without bias correction 9.1e3, all from step 1. torch's clip epsilon
# dropped stays inside (0.23 to 1.67): it is a 1e-6 / norm change per step, the size of the
# perturbations themselves; the optimizer-only replay (replay.py) resolves it.
# False alarms, unmutated, seeds 1-3 x (sgd, adam, adamw), threads + ulp only: 6 of 9 runs
# left the envelope (worst 521, seed 1 adamw, from step 2; 0.28-0.38 where it held). Adding
# no_mkldnn and channels_last: seed 2 sgd went from 199 to 0.23, seed 1 adam from 419 to 30.
# The port's loss differs from torch's by 2-5x more than any perturbed torch run in steps 2-5
# of seed 1 (1.8e-5 against <= 7.1e-6 at step 2), and chaos amplifies that. Found: not the
# gradients' size (seed 1, first batch: median tensor rel_err JAX 1.0e-5, mkldnn off 1.4e-5,
# channels-last 1.2e-5) and not optax's float32 bias correction (the same with x64 on), but
# one element: JAX's gradient flips the sign of one weight's gradient of magnitude 5e-7 in
# layer4.0.conv1 (of 181,315; no perturbed torch run flipped any), and Adam's first step,
# lr * g / |g|, turns that into a 2 * lr jump of that weight. Such flips are rounding events
# of any run; the envelope must sample them (more perturbed runs, or a k that covers one
# flip) before it can gate.
ENVELOPE_K = 10.0
ENVELOPE_FLOOR = {"loss": 1e-6, "params": 1e-5, "batch_stats": 1e-5}


class Trace(NamedTuple):
    """One training run: per step, the loss and the state (torch names and layout)."""
    loss: np.ndarray                       # (steps,)
    states: list[dict[str, np.ndarray]]    # per step: parameters and BatchNorm running statistics


class Distance(NamedTuple):
    """Per step, relative distance between two traces, by metric (max over tensors)."""
    loss: np.ndarray
    params: np.ndarray
    batch_stats: np.ndarray


class Envelope(NamedTuple):
    name: str
    spread: Distance          # max over the perturbed torch runs of their distance to the base run
    port: Distance            # the JAX run's distance to the base run
    tolerance: Distance       # k * spread + floor
    ratio: Distance           # port / tolerance
    first_exit: int | None    # first step (1-based) where some ratio > 1


def _is_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var"))


def torch_trace(pair, batches: Sequence, opt, perturbation: str | None = None) -> Trace:
    """The torch reference trained with `opt` from the pair's weights (perturbed as named)."""
    import torch

    from jaxmtl.parity.harness import default_torch_step
    from torch_ref.convert import load_into_torch, state_dict_numpy

    pair.reset_torch()
    if perturbation and perturbation.startswith("ulp:"):
        rng = np.random.default_rng(int(perturbation.split(":")[1]))
        load_into_torch(pair.torch_module, {
            k: (v * (1 + ULP * rng.standard_normal(v.shape))).astype(v.dtype) if np.issubdtype(v.dtype, np.floating)
            else v for k, v in pair.initial_state.items()})
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(2 if perturbation == "threads" else 1)
    torch.backends.mkldnn.enabled = perturbation != "no_mkldnn"
    try:
        module = pair.torch_module.train()
        if perturbation == "channels_last":
            module.to(memory_format=torch.channels_last)
        optimizer = opt.torch_fn(module.parameters())
        step = opt.torch_step or default_torch_step(pair, opt)
        losses, states = [], []
        for _, torch_in in batches:
            losses.append(float(step(module, optimizer, torch_in)))
            sd = state_dict_numpy(module)
            states.append({k: v for k, v in sd.items() if np.issubdtype(v.dtype, np.floating)})
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
        if perturbation == "channels_last":
            pair.torch_module.to(memory_format=torch.contiguous_format)
        pair.reset_torch()
    return Trace(np.array(losses), states)


def jax_trace(pair, batches: Sequence, opt) -> Trace:
    """The port trained with `opt` (its jax_step, or the textbook step), states in torch names."""
    from jaxmtl.parity.harness import default_jax_step

    step = opt.jax_step or default_jax_step(pair, opt.optax_tx)
    params, stats = pair.params, pair.batch_stats
    opt_state = pair.replicate(opt.optax_tx.init(pair.params))
    losses, states = [], []
    for jax_in, _ in batches:
        params, stats, opt_state, loss = step(params, stats, opt_state, pair.place_inputs(jax_in))
        losses.append(float(loss))
        states.append(pair.conversion.to_torch({"params": flatten_state(params), "batch_stats": flatten_state(stats)},
                                               ("params", "batch_stats")))
    return Trace(np.array(losses), states)


def distance(a: Trace, base: Trace) -> Distance:
    """Per step: |loss_a - loss_base| / |loss_base|, and the worst tensor's rel_err of parameters and statistics."""
    keys = [k for k in a.states[0] if k in base.states[0]]
    params = [k for k in keys if not _is_stat(k)]
    stats = [k for k in keys if _is_stat(k)]

    def worst(names, sa, sb):
        return max((rel_err(sa[k], sb[k]) for k in names), default=0.0)

    return Distance(np.abs(a.loss - base.loss) / np.abs(base.loss),
                    np.array([worst(params, sa, sb) for sa, sb in zip(a.states, base.states)]),
                    np.array([worst(stats, sa, sb) for sa, sb in zip(a.states, base.states)]))


def envelope(name: str, base: Trace, perturbed: Sequence[Trace], port: Trace, k: float = ENVELOPE_K,
             floor: dict[str, float] | None = None) -> Envelope:
    floor = floor or ENVELOPE_FLOOR
    spreads = [distance(p, base) for p in perturbed]
    spread = Distance(*(np.max([getattr(s, m) for s in spreads], axis=0) for m in METRICS))
    port_d = distance(port, base)
    tolerance = Distance(*(k * getattr(spread, m) + floor[m] for m in METRICS))
    ratio = Distance(*(getattr(port_d, m) / getattr(tolerance, m) for m in METRICS))
    exits = np.flatnonzero(np.max(np.stack(ratio), axis=0) > 1)
    return Envelope(name, spread, port_d, tolerance, ratio, int(exits[0]) + 1 if exits.size else None)


def envelope_run(pair, batches: Sequence, opt, perturbations: Sequence[str] = PERTURBATIONS, **kw) -> Envelope:
    """The base torch run, the perturbed ones and the port, on `batches` with `opt`."""
    base = torch_trace(pair, batches, opt)
    perturbed = [torch_trace(pair, batches, opt, p) for p in perturbations]
    return envelope(opt.name, base, perturbed, jax_trace(pair, batches, opt), **kw)


def envelope_check(env: Envelope) -> Check:
    """envelope/<name>: worst port / (k * spread + floor) over steps and metrics; tolerance 1."""
    errs = {f"{m}@step{t + 1}": float(r) for m in METRICS for t, r in enumerate(getattr(env.ratio, m))}
    return check_from_errs(f"envelope/{env.name}", errs, 1.0)
