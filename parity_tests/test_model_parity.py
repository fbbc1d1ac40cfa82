"""Forward, gradient and BatchNorm-statistics parity of the multi-task model (issue: foundation)."""

from __future__ import annotations

import json

import pytest

from jaxmtl.config import TINY
from jaxmtl.parity.precision import TOLERANCES

CHECKS = ["forward/train", "forward/eval", "batch_stats", "grad/total",
          "grad/loss_final", "grad/loss_pose", "grad/loss_vel", "grad/weighted_sum"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CHECKS)
def test_check_within_tolerance(model_check_results, dtype, name):
    check = model_check_results(dtype)[name]
    assert check.tolerance == TOLERANCES[dtype]
    assert check.max_rel_err <= check.tolerance, check.line()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_parameter_tensor_compared(model_check_results, pairs, dtype):
    n_params = len(list(pairs(dtype).torch_module.named_parameters()))
    for name in ["grad/total", "grad/loss_final", "grad/loss_pose", "grad/loss_vel"]:
        assert len(model_check_results(dtype)[name].errors) == n_params


def test_part_gradients_are_not_trivially_equal(model_check_results, pairs):
    """The parts reach different parameters: pose loss does not reach the GRU, so its GRU grad is 0."""
    import numpy as np

    from jaxmtl.trees import flatten_state

    from jaxmtl.parity.multitask_port import batches

    pair = pairs("float64")
    grads = pair.part_grad_fn(pair.params, pair.batch_stats, pair.rest, batches(TINY, "float64", [3000])[0][0])
    pose_gru = flatten_state(grads["loss_pose"])["gru/w_hh"]
    final_gru = flatten_state(grads["loss_final"])["gru/w_hh"]
    assert np.all(pose_gru == 0)
    assert np.linalg.norm(final_gru) > 0


def test_parity_json_schema(model_check_results, tmp_path):
    from jaxmtl.parity.run import write_parity_json

    checks = list(model_check_results("float64").values())
    write_parity_json(tmp_path / "parity.json", "tiny", "float64", checks)
    doc = json.loads((tmp_path / "parity.json").read_text())
    assert doc["config"] == "tiny" and doc["dtype"] == "float64" and doc["passed"] is True
    assert {c["name"] for c in doc["checks"]} >= set(CHECKS)
    for c in doc["checks"]:
        assert set(c) >= {"name", "max_rel_err", "tolerance", "passed"}
