"""`jaxmtl train`: resume reproduces the uninterrupted curve, NaN guard, checkpoint errors, CLI refusals (tiny)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmtl.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from jaxmtl.cli import main as cli_main
from jaxmtl.config import TINY
from jaxmtl.data import DataConfig, MotionDataset
from jaxmtl.loop import NonFiniteLossError, TrainConfig, fit, read_metrics
from jaxmtl.optim import OptimConfig

STEPS = 6  # 3 straight + 3 resumed: checkpoint at 3, evals at 3 and 6


# JAX runs start from the reference's weights (--init torch): what is tested here does not
# depend on the initial weights, and JAX's initialisers compile one small program per
# parameter shape (test_determinism.py runs them).
def _train(framework: str, out: Path, steps: int, *, resume: bool = False) -> int:
    init = ["--init", "torch"] if framework == "jax" else []
    return cli_main(["train", "--config", "tiny", "--framework", framework, "--steps", str(steps), *init,
                     "--out", str(out), "--eval-every", "3", "--eval-batches", "1", "--ckpt-every", "3",
                     "--train-size", "64", "--optimizer", "adamw", "--weight-decay", "0.01",
                     "--no-progress"] + (["--resume"] if resume else []))


def _curve(out: Path) -> tuple[list[dict], list[dict]]:
    train, evals = read_metrics(out / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in train], evals


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_resume_reproduces_the_uninterrupted_curve(framework, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(framework, straight, STEPS) == 0
    assert _train(framework, split, STEPS // 2) == 0
    # a partial line past the checkpoint, as an interrupted run would leave: resume must drop it
    with (split / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "total": 123.0}\n')
    assert _train(framework, split, STEPS, resume=True) == 0
    a, b = _curve(straight), _curve(split)
    assert [r["step"] for r in a[0]] == list(range(1, STEPS + 1))
    assert a == b  # every loss part, norm and eval metric identical, not just close
    assert [r["step"] for r in a[1]] == [3, 6]
    assert len({r["total"] for r in a[0]}) == STEPS  # the losses really change step to step
    suffix = ".pt" if framework == "torch" else ""
    assert [s for s, _ in list_checkpoints(split, suffix)] == [3, 6]


def test_resume_without_checkpoint_is_refused(tmp_path, capsys):
    assert _train("jax", tmp_path / "empty", STEPS, resume=True) == 1
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "5", "--lr", "-1"], "lr must be > 0"),
    (["--steps", "5", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--steps", "5", "--ckpt-every", "0"], "ckpt_every"),
    (["--steps", "5", "--optimizer", "adam", "--nesterov"], "nesterov"),
])
def test_bad_cli_input_is_refused_before_work(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--config", "tiny", "--out", str(out)] + argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything was created


def test_unknown_config_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--config", "huge", "--steps", "5", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


class PoisonAt:
    """Wraps a trainer; before step `at` it sets the pose head's bias to NaN (as a blown-up update would)."""

    def __init__(self, trainer, at: int):
        self.trainer, self.at, self.calls = trainer, at, 0
        self.framework = trainer.framework

    def __getattr__(self, name):
        return getattr(self.trainer, name)

    def train_step(self, batch):
        self.calls += 1
        if self.calls == self.at:
            if self.framework == "jax":
                from jaxmtl.trees import flatten_state, unflatten_like

                state = self.trainer.state
                flat = flatten_state(state.params)
                flat["pose_head/bias"] = np.full_like(flat["pose_head/bias"], np.nan)
                self.trainer.state = state._replace(params=unflatten_like(state.params, flat))
            else:
                self.trainer.model.pose_head.bias.data.fill_(float("nan"))
        return self.trainer.train_step(batch)


def _trainer(framework: str):
    # the optimizer of the CLI runs above (and of the adamw curve test): the compiled JAX step is shared
    ocfg = OptimConfig("adamw", lr=1e-3, weight_decay=0.01, clip_norm=1.0)
    if framework == "jax":
        from jaxmtl.train import JaxTrainer

        return JaxTrainer(TINY, ocfg, init="torch")
    from torch_ref.train import TorchTrainer

    return TorchTrainer(TINY, ocfg)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_nan_loss_stops_with_step_and_part_and_keeps_last_checkpoint(framework, tmp_path):
    data = MotionDataset(TINY, DataConfig(train_size=64))
    trainer = PoisonAt(_trainer(framework), at=5)
    with pytest.raises(NonFiniteLossError, match=r"step 5: loss_pose went non-finite"):
        fit(trainer, data, TrainConfig(steps=8, eval_every=0, eval_batches=1, ckpt_every=2, progress=False),
            tmp_path, meta={"framework": framework})
    suffix = ".pt" if framework == "torch" else ""
    assert [s for s, _ in list_checkpoints(tmp_path, suffix)] == [2, 4]
    train, _ = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # the bad step was not logged
    fresh = _trainer(framework)
    meta = fresh.restore(fresh.latest(tmp_path), expect={"framework": framework})
    assert meta["step"] == 4
    assert np.isfinite(fresh.train_step(data.train_batch(4))["total"])


def _corrupt_largest_file(path: Path) -> Path:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    victim = max(files, key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_corrupted_checkpoint_names_the_file_and_loads_nothing(framework, tmp_path):
    trainer = _trainer(framework)
    path = trainer.save(tmp_path, 1, {"framework": framework})
    _corrupt_largest_file(path)
    before = _state_snapshot(trainer)
    with pytest.raises(CheckpointError, match=str(path)):
        trainer.restore(path, expect={})
    after = _state_snapshot(trainer)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def _state_snapshot(trainer) -> dict[str, np.ndarray]:
    if trainer.framework == "jax":
        from jaxmtl.trees import flatten_state

        return flatten_state(trainer.state.params)
    from torch_ref.convert import state_dict_numpy

    return state_dict_numpy(trainer.model)


def test_checkpoint_from_another_run_is_refused(tmp_path):
    trainer = _trainer("torch")
    trainer.save(tmp_path, 2, {"config": "small"})
    with pytest.raises(CheckpointError, match="config='small'"):
        trainer.restore(latest_checkpoint(tmp_path, ".pt"), expect={"config": "tiny"})


def test_jax_training_path_never_imports_torch():
    # everything `jaxmtl train --framework jax` imports, including orbax for its checkpoints
    code = ("import sys\nimport jaxmtl.cli, jaxmtl.main, jaxmtl.train, jaxmtl.loop, jaxmtl.data\n"
            "import jaxmtl.checkpoint, orbax.checkpoint, tqdm\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
