"""Each mode timed in a process of its own, the processes taking turns.

Two frameworks timed in one process disturb each other: after a step, one
framework's worker threads may still spin on the cores the other's next step
needs, and the two share one allocator and one cache state. That bias is not
the same for both frameworks, so a ratio from one process does not measure
them. Here every mode lives in its own worker process:

  1. the workers start and set up one at a time (compilation included), so no
     setup overlaps another and none overlaps a timed call;
  2. then, in rounds, each worker in turn runs one untimed call (the caches
     it left went cold while the others ran) and `calls` timed ones, while
     every other worker blocks on its pipe, idle; the order rotates by one
     each round, so drift of the machine hits every mode alike;
  3. between two turns the parent sleeps SETTLE_S, meant to let the
     previous worker's spinning threads go to sleep.

Protocol (one JSON object per line): a worker prints {"ready": {...setup
figures}} once set up, then answers each {"calls": n} on stdin with
{"times": [seconds, ...]}; end of input ends it. A worker that fails is
reported with the tail of its stderr, and the others are stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

SETTLE_S = 0.2    # pause between turns: chosen long against thread spin-wait times, not measured
TURN_S = 1.0      # aim of one turn's timed calls


class _Worker(NamedTuple):
    proc: subprocess.Popen
    stderr: Any   # a temporary file, not a pipe: a chatty worker never blocks on a full pipe


def serve(setup: Callable[[], tuple[Callable[[], Any], Mapping[str, Any]]]) -> None:
    """The worker side: `setup()` -> (step, its setup figures); announce them, then time
    `step` on request until stdin closes. File descriptor 1 is handed to stderr first, so
    that nothing a library prints can get between the protocol's lines."""
    import jax

    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    step, ready = setup()
    out.write(json.dumps({"ready": dict(ready)}) + "\n")
    out.flush()
    for line in sys.stdin:
        n = int(json.loads(line)["calls"])
        jax.block_until_ready(step())  # untimed: the caches went cold during the others' turns
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            jax.block_until_ready(step())
            times.append(time.perf_counter() - t0)
        out.write(json.dumps({"times": times}) + "\n")
        out.flush()


def _ask(name: str, w: _Worker, calls: int | None) -> Any:
    """Sends {"calls": calls} (None: nothing, wait for "ready") and returns the answer."""
    if calls is not None:
        w.proc.stdin.write(json.dumps({"calls": calls}) + "\n")
        w.proc.stdin.flush()
    line = w.proc.stdout.readline()
    if not line:
        w.proc.wait()
        w.stderr.seek(0)
        raise RuntimeError(f"benchmark worker {name!r} exited with status {w.proc.returncode} before "
                           f"answering:\n{w.stderr.read()[-3000:]}")
    return json.loads(line)["ready" if calls is None else "times"]


def time_in_processes(commands: Mapping[str, Sequence[str]], budget_s: float, min_rounds: int = 5,
                      max_calls_per_turn: int = 200) -> dict[str, dict[str, Any]]:
    """{mode: {"times": [...], "ready": {...}, "rounds": r, "calls_per_turn": n}}.

    `commands[mode]` starts a worker that calls `serve`. `budget_s` is the timed seconds per
    mode; each turn aims at TURN_S of calls (at least one), over at least `min_rounds` rounds.
    """
    workers: dict[str, _Worker] = {}
    try:
        ready = {}
        for name, argv in commands.items():  # one setup at a time
            err = tempfile.TemporaryFile("w+")
            workers[name] = _Worker(subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                     stderr=err, text=True), err)
            ready[name] = _ask(name, workers[name], None)
        calls = {}
        for name, w in workers.items():  # a probe turn of one call sizes each mode's turns
            [t] = _ask(name, w, 1)
            calls[name] = int(min(max_calls_per_turn, max(1, TURN_S / max(t, 1e-6))))
            time.sleep(SETTLE_S)
        rounds = max(min_rounds, int(budget_s / TURN_S))
        names = list(workers)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name] += _ask(name, workers[name], calls[name])
                time.sleep(SETTLE_S)
        return {n: {"times": times[n], "ready": ready[n], "rounds": rounds, "calls_per_turn": calls[n]}
                for n in names}
    finally:
        for w in workers.values():
            w.proc.stdin.close()
        for w in workers.values():
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
            w.stderr.close()
