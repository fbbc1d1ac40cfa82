"""Several processes (hosts) on JAX's own distributed runtime: `jax.distributed.initialize`.

Every process runs the same program; process 0 also runs the coordinator
service at `coordinator` (host:port, reachable from every process). After
`initialize`, `jax.devices()` lists every process's devices, and the mesh of
`jaxmtl.data_parallel` spans them all: the batch is split over every device of
every process, each process builds only its own rows of it (`ProcessShare` in
jaxmtl.data), and XLA's collectives cross processes (gloo on the CPU, NCCL on
GPUs). Parameters and optimizer state are replicated on every device.

Settings come from flags or, when a flag is left out, the environment:
JAX_COORDINATOR_ADDRESS (JAX's own name), JAXMTL_NUM_PROCESSES, JAXMTL_PROCESS_ID.

What is checked, each with one error naming the cause (DistributedError):
- the settings themselves (a process id outside [0, processes), an address that is not host:port);
- a coordinator that never answers: processes other than 0 wait at most
  `timeout_s` for its port to open before JAX is started;
- a different process count in different processes, and different run settings
  (`check_same_settings`, which every process calls after `initialize`): every
  process then raises the same error.
JAX itself aborts the process (DEADLINE_EXCEEDED, not a Python exception) when
fewer processes than announced reach the coordinator within `timeout_s`; the
line printed by `initialize` before it waits says what it waits for.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import NamedTuple

import numpy as np

ENV_ADDRESS, ENV_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAXMTL_NUM_PROCESSES", "JAXMTL_PROCESS_ID"


class DistributedError(RuntimeError):
    """The processes cannot form one run: unreachable coordinator, mismatched counts or settings."""


class ProcessSetup(NamedTuple):
    coordinator: str      # host:port of process 0's coordinator service
    processes: int
    process_id: int
    timeout_s: float = 60.0

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.coordinator.rpartition(":")
        return host.strip("[]"), int(port)


def process_setup(coordinator: str | None, processes: int | None, process_id: int | None,
                  timeout_s: float = 60.0) -> ProcessSetup | None:
    """The settings from flags, else the environment; None for a single-process run. ValueError if bad."""
    coordinator = coordinator or os.environ.get(ENV_ADDRESS)
    processes = processes if processes is not None else _env_int(ENV_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if processes is None or processes == 1 and coordinator is None:
        if coordinator is not None or process_id not in (None, 0):
            raise ValueError("--coordinator / --process-id need --processes N (or JAXMTL_NUM_PROCESSES)")
        return None
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if coordinator is None:
        raise ValueError(f"--processes {processes} needs --coordinator HOST:PORT (or {ENV_ADDRESS}): "
                         "the address of process 0, reachable from every process")
    if process_id is None or not 0 <= process_id < processes:
        raise ValueError(f"--process-id must be in [0, {processes}) for --processes {processes}, got {process_id}")
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator must be HOST:PORT (e.g. 127.0.0.1:12355), got {coordinator!r}")
    if timeout_s <= 0:
        raise ValueError(f"the coordinator timeout must be > 0 s, got {timeout_s}")
    return ProcessSetup(coordinator, processes, process_id, timeout_s)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` at the time of asking, for a coordinator address on one machine."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_coordinator(setup: ProcessSetup) -> None:
    """Returns once the coordinator's port accepts connections; DistributedError after timeout_s."""
    deadline = time.monotonic() + setup.timeout_s
    while True:
        try:
            with socket.create_connection(setup.host_port, timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"the coordinator at {setup.coordinator} did not answer within {setup.timeout_s:g} s: "
                    f"start process 0 with the same --coordinator, and check that this host can reach it") from None
            time.sleep(0.2)


def initialize(setup: ProcessSetup) -> None:
    """`jax.distributed.initialize` for `setup`, before any JAX computation.

    On the CPU the cross-process collectives are gloo's (jax_cpu_collectives_implementation).
    Call `check_same_settings` with `setup.processes` among the settings next: a process
    started with another count joins a run of the coordinator's count.
    """
    import jax

    if setup.process_id != 0:
        wait_for_coordinator(setup)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(f"distributed: process {setup.process_id} of {setup.processes}, waiting up to {setup.timeout_s:g} s "
          f"for all {setup.processes} at {setup.coordinator}", file=sys.stderr, flush=True)
    jax.distributed.initialize(setup.coordinator, setup.processes, setup.process_id,
                               initialization_timeout=int(np.ceil(setup.timeout_s)))


def check_same_settings(settings: dict) -> None:
    """DistributedError naming every setting on which the processes disagree (all processes raise alike).

    `settings` must be JSON-serialisable; every process must call this.
    """
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return
    mine = json.dumps(settings, sort_keys=True).encode()
    size = int(np.max(multihost_utils.process_allgather(np.array([len(mine)], np.int64))))
    padded = np.frombuffer(mine.ljust(size, b" "), np.uint8)
    every = multihost_utils.process_allgather(padded)  # (processes, size)
    diffs = settings_differences([json.loads(bytes(row).decode()) for row in np.asarray(every)])
    if diffs:
        raise DistributedError("the processes were started with different settings: " + "; ".join(diffs))


def settings_differences(docs: list[dict]) -> list[str]:
    """'key: process 0 has a, process 1 has b' for every key on which the processes' settings differ."""
    return [f"{k}: " + ", ".join(f"process {i} has {d.get(k)!r}" for i, d in enumerate(docs))
            for k in sorted(set().union(*docs)) if len({json.dumps(d.get(k), sort_keys=True) for d in docs}) > 1]
