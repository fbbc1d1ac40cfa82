"""Several devices and processes: `jaxmtl train --devices N / --processes N` (JAX) and torch DDP, on loopback.

Every run is the README's command in subprocesses (this suite keeps one device),
float64, `tiny`, a global batch of 8, Adam with clipping, torch's initial weights
(`--init torch`), 10 steps. Started together at the start of the module:
  jax4    2 processes x 2 virtual devices = 4 devices, checkpoints at steps 5 and 10
  ddp     torch DistributedDataParallel, 2 processes, global-batch BatchNorm
  dp8     parity_tests/dp_worker.py: one process, 8 devices against 1, 20 steps
then, from jax4's step-5 checkpoint, resume1: steps 6-10 again in one process on one
device. resume1 is the one-process reference for jax4: from the same state, one device
must compute what four devices in two processes computed (a separate one-process run from
step 1 would add a whole compile; dp8 already compares one device with several from step 1).
Compared from metrics.jsonl (loss and gradient norm per step) and the final checkpoints
(parameters and BatchNorm statistics).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmtl.config import TINY
from jaxmtl.distributed import free_port
from jaxmtl.parity.curves import CURVE_TOLERANCES
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.trees import rel_err

STEPS, CKPT = 10, 5
TRAIN = ["--config", "tiny", "--dtype", "float64", "--batch-size", "8", "--optimizer", "adam", "--lr", "5e-4",
         "--clip-norm", "1.0", "--steps", str(STEPS), "--ckpt-every", str(CKPT), "--eval-every", "0",
         "--eval-batches", "1", "--train-size", "800", "--no-progress"]
TIMEOUT = 600
HERE = Path(__file__).parent


def _jaxmtl(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxmtl.cli", *args]


def _start(argv: list[str], devices: int, log: Path, stdout: Path | None = None) -> subprocess.Popen:
    # One persistent compilation cache for the module's runs: processes compiling the same
    # program (the two of a run, the resumed runs) compile it once. Values are unaffected.
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), OMP_NUM_THREADS="1", PYTHONPATH=str(HERE),
               JAX_COMPILATION_CACHE_DIR=str(log.parent / "xla_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.Popen(argv, env=env, stdout=open(stdout, "w") if stdout else subprocess.DEVNULL,
                            stderr=open(log, "w"))


def _processes(out: Path, n: int, extra: list[str], devices: int = 1) -> list[subprocess.Popen]:
    """`jaxmtl train --processes n` as n processes on 127.0.0.1, logs in out.<i>.log."""
    coordinator = f"127.0.0.1:{free_port()}"
    return [_start(_jaxmtl("train", *TRAIN, *extra, "--out", str(out), "--processes", str(n), "--process-id", str(i),
                           "--coordinator", coordinator), devices, out.with_suffix(f".{i}.log")) for i in range(n)]


def _wait(procs: list[subprocess.Popen], what: str, logs: list[Path]) -> None:
    for p in procs:
        p.wait(timeout=TIMEOUT)
    if any(p.returncode for p in procs):
        tails = "\n".join(f"--- {log}\n" + log.read_text()[-3000:] for log in logs if log.exists())
        pytest.fail(f"{what} exited with {[p.returncode for p in procs]}\n{tails}")


def _curve(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval" not in r]


def _jax_state(run: Path, step: int) -> dict[str, np.ndarray]:
    """{torch state_dict name: array} of a JAX checkpoint: params and BatchNorm statistics."""
    from jaxmtl.checkpoint import checkpoint_dir, restore_checkpoint, step_name
    from jaxmtl.optim import OptimConfig
    from jaxmtl.train import JaxTrainer
    from torch_ref.convert import jax_state_to_torch_dict

    ocfg = OptimConfig("adam", lr=5e-4, clip_norm=1.0)
    template = JaxTrainer(TINY, ocfg, dtype="float64", init="torch").state._asdict()  # structure only
    state, _ = restore_checkpoint(checkpoint_dir(run) / step_name(step), template)
    return jax_state_to_torch_dict(state["params"], state["batch_stats"], TINY)


def _torch_state(run: Path, step: int) -> dict[str, np.ndarray]:
    import torch

    from jaxmtl.checkpoint import checkpoint_dir, step_name

    payload = torch.load(checkpoint_dir(run) / step_name(step, ".pt"), map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in payload["model"].items()}


def _max_err(a: dict, b: dict, keys) -> float:
    return max(rel_err(a[k], b[k]) for k in keys)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    out = {name: root / name for name in ("jax4", "ddp", "resume1")}
    dp8 = _start([sys.executable, str(HERE / "dp_worker.py"), "8", "20", "8"], 8,
                 root / "dp8.log", stdout=root / "dp8.json")
    parity = {name: _start(_jaxmtl("parity", "--pair", f"conv_bn_pair:{spec}", "--devices", "2", "--steps", "2",
                                   "--out", str(root / name)), 2, root / f"{name}.log")
              for name, spec in (("parity_ok", "conv_bn_spec"), ("parity_mutant", "per_device_bn_spec"))}
    jax4 = _processes(out["jax4"], 2, ["--init", "torch"], devices=2)
    ddp = _processes(out["ddp"], 2, ["--framework", "torch"])
    _wait(jax4, "jax4", [out["jax4"].with_suffix(f".{i}.log") for i in range(2)])
    # The resumed run starts from a copy of jax4 cut back to its step-5 checkpoint.
    shutil.copytree(out["jax4"], out["resume1"], ignore=shutil.ignore_patterns(f"step_{STEPS:08d}"))
    resumed = _start(_jaxmtl("train", *TRAIN, "--init", "torch", "--resume", "--out", str(out["resume1"])), 1,
                     out["resume1"].with_suffix(".log"))
    _wait(ddp, "ddp", [out["ddp"].with_suffix(f".{i}.log") for i in range(2)])
    _wait([resumed], "resume1", [out["resume1"].with_suffix(".log")])
    _wait([dp8], "dp_worker.py", [root / "dp8.log"])
    for name, p in parity.items():
        p.wait(timeout=TIMEOUT)
        out[name] = root / name
        (root / f"{name}.status").write_text(str(p.returncode))
    return out


def test_eight_devices_compute_what_one_device_computes(runs):
    """dp_worker.py: gradients and BatchNorm statistics of one step, then 20 steps, 8 devices against 1."""
    r = json.loads((runs["jax4"].parent / "dp8.json").read_text().strip().splitlines()[-1])
    assert r["devices"] == 8 and r["batch_sharded_over"] == 8 and r["replicated"]
    assert r["loss_moved"] > 1e-3  # the 20 steps really trained
    # Same mathematics, other summation order: float64 rounding only.
    for key in ("grad", "batch_stats", "curve", "batch_stats_after"):
        assert r[key] <= 1e-12, (key, r[key])
    # Parameters after 20 Adam steps: m / sqrt(v) turns ~1e-16 gradient differences on BatchNorm
    # biases near zero into lr-sized steps (curves.py); measured 1.2e-13 and 2.9e-13 here.
    assert r["params_after"] <= 1e-10, r["params_after"]


def test_one_process_resumes_the_four_device_checkpoint_and_computes_what_they_computed(runs):
    """resume1 restores jax4's step-5 checkpoint (written by 2 processes x 2 devices) on one
    device in one process and recomputes steps 6-10: the same mathematics, float64 rounding only."""
    resumed, many = _curve(runs["resume1"]), _curve(runs["jax4"])
    assert [r["step"] for r in many] == [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for key in ("total", "loss_final", "loss_pose", "loss_vel", "grad_norm"):
        assert max(rel_err(a[key], b[key]) for a, b in zip(resumed[CKPT:], many[CKPT:])) <= 1e-12, key
    a, b = _jax_state(runs["resume1"], STEPS), _jax_state(runs["jax4"], STEPS)
    stats = [k for k in a if "running" in k or "num_batches" in k]
    assert _max_err(a, b, stats) <= 1e-12
    assert _max_err(a, b, [k for k in a if k not in stats]) <= 1e-10  # Adam's amplification, as above
    start = _jax_state(runs["resume1"], CKPT)
    assert _max_err(a, start, [k for k in a if k not in stats]) > 1e-6  # steps 6-10 really trained


def test_two_jax_processes_match_torch_ddp_with_the_single_device_tolerances(runs):
    jax, torch = _curve(runs["jax4"]), _curve(runs["ddp"])
    # The first step is one forward/backward: the single-step tolerance; then the curve's.
    for key in ("total", "grad_norm"):
        assert rel_err(jax[0][key], torch[0][key]) <= TOLERANCES["float64"], key
        assert max(rel_err(a[key], b[key]) for a, b in zip(jax, torch)) <= CURVE_TOLERANCES["float64"]["curve"]
    a, b = _jax_state(runs["jax4"], STEPS), _torch_state(runs["ddp"], STEPS)
    stats = [k for k in a if "running" in k]
    assert _max_err(a, b, stats) <= CURVE_TOLERANCES["float64"]["batch_stats_after"]
    assert _max_err(a, b, [k for k in a if k not in stats and "num_batches" not in k]) \
        <= CURVE_TOLERANCES["float64"]["params_after"]
    assert all(int(a[k]) == int(b[k]) == STEPS for k in a if "num_batches" in k)


def test_batchnorm_statistics_per_device_fail_the_distributed_parity_check(runs):
    """`jaxmtl parity --devices 2` on a conv-BatchNorm port: the correct port passes; the port whose
    BatchNorm takes each device's statistics (mutants.PerDeviceBatchNorm) fails, naming the layer."""
    root = runs["jax4"].parent
    assert (root / "parity_ok.status").read_text() == "0", (root / "parity_ok.log").read_text()[-3000:]
    assert (root / "parity_mutant.status").read_text() == "1", (root / "parity_mutant.log").read_text()[-3000:]
    ok = json.loads((runs["parity_ok"] / "parity.json").read_text())
    assert {"curve/sgd", "replay/sgd"} <= {c["name"] for c in ok["checks"]}  # the pair's optimizer, replayed
    doc = json.loads((runs["parity_mutant"] / "parity.json").read_text())
    assert doc["devices"] == 2
    failed = {c["name"] for c in doc["checks"] if not c["passed"]}
    assert {"forward/train", "batch_stats", "grad/total"} <= failed
    assert "forward/eval" not in failed  # running statistics are used there: per-device batches do not matter
    assert "first divergent layer bn (forward)" in (root / "parity_mutant.log").read_text()


def test_the_per_device_mutant_is_right_on_one_device():
    """Why the check needs several devices: on one device the same port passes."""
    from conv_bn_pair import per_device_bn_spec

    from jaxmtl.parity import harness

    spec = per_device_bn_spec("float64")
    checks = harness.compare(harness.pair_from_spec(spec, "float64"), spec.batches)
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]


def test_a_coordinator_that_never_answers_is_named(tmp_path, capsys):
    from jaxmtl.cli import main

    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    status = main(["train", "--config", "tiny", "--steps", "1", "--out", str(tmp_path / "run"), "--processes", "2",
                   "--process-id", "1", "--coordinator", address, "--coordinator-timeout", "1"])
    assert status == 2
    assert f"the coordinator at {address} did not answer within 1 s" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_processes_started_differently_all_refuse_naming_the_difference(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    common = ["--config", "tiny", "--steps", "1", "--batch-size", "6", "--no-progress", "--coordinator", coordinator]
    procs = [_start(_jaxmtl("train", *common, "--out", str(tmp_path / "run"), *extra), 1, tmp_path / f"{i}.log")
             for i, extra in enumerate((["--processes", "2", "--process-id", "0"],
                                        ["--processes", "3", "--process-id", "1", "--seed", "1"]))]
    for p in procs:
        assert p.wait(timeout=120) == 2
    for i in range(2):
        err = (tmp_path / f"{i}.log").read_text()
        assert "the processes were started with different settings: " in err
        assert "processes: process 0 has 2, process 1 has 3" in err and "seed: process 0 has 0, process 1 has 1" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("argv,message", [
    (["--processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:1"], "--process-id must be in [0, 2)"),
    (["--processes", "2", "--process-id", "0"], "--processes 2 needs --coordinator HOST:PORT"),
    (["--processes", "2", "--process-id", "0", "--coordinator", "localhost"], "--coordinator must be HOST:PORT"),
    (["--processes", "3", "--process-id", "0", "--coordinator", "127.0.0.1:1", "--batch-size", "8"],
     "the global batch of 8 sequences does not divide over 3 devices"),
])
def test_bad_process_settings_are_refused_before_work(argv, message, tmp_path, capsys):
    from jaxmtl.cli import main

    status = main(["train", "--config", "tiny", "--steps", "1", "--out", str(tmp_path / "run"), *argv])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,message", [
    (["--devices", "3", "--batch-size", "8"], "the global batch of 8 sequences does not divide over 3 devices"),
    (["--devices", "4", "--batch-size", "8"], "4 devices requested, 1 available (cpu); on the CPU, start the "
                                              "process with JAX_NUM_CPU_DEVICES=4"),
    (["--devices", "2", "--framework", "torch"], "--devices applies to --framework jax"),
    (["--devices", "0"], "--devices must be >= 1"),
])
def test_bad_device_settings_are_refused_before_work(argv, message, tmp_path, capsys):
    from jaxmtl.cli import main

    status = main(["train", "--config", "tiny", "--steps", "2", "--out", str(tmp_path / "run"), *argv])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("argv,message", [
    (["--config", "tiny", "--devices", "4"], "the global batch of 2 sequences does not divide over 4 devices"),
    (["--config", "tiny", "--devices", "2"], "2 devices requested, 1 available"),
    (["--config", "tiny", "--devices", "0"], "--devices must be >= 1"),
])
def test_parity_with_bad_device_settings_is_refused_before_work(argv, message, tmp_path, capsys):
    from jaxmtl.cli import main

    assert main(["parity", "--out", str(tmp_path / "p"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p" / "parity.json").exists()
