"""The resnet18 examples and the multi-task model's gradient flow: JAX == PyTorch, float64; their docs pages.

Both frameworks start from the same torch-initialised weights converted through
torch_ref/convert.py's table. float64 keeps the parity tolerance at 1e-10
(jaxmtl.parity.precision.TOLERANCES); measured worst tensors: 6.7e-13 for the
resnet18 step, ~1e-13 on the tiny multi-task model.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from tutorial_pages import assert_page_current

from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.trees import rel_err, tree_rel_errs
from jaxmtl.tutorials.run import run_example

TOL = TOLERANCES["float64"]


def worst(a: dict, b: dict) -> float:
    return max(tree_rel_errs(a, b).values())


def tree_norm(d: dict) -> float:
    return float(np.sqrt(sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in d.values())))


@pytest.fixture(scope="module")
def run():
    """run(name): the example in both frameworks as `jaxmtl tutorials` runs it, once per module
    (the JAX compiles of resnet18 and of the multi-task analysis are the expensive part)."""
    return functools.cache(run_example)


def both(run, name: str) -> tuple[dict, dict]:
    r = run(name)
    return r.jax, r.torch


# ---- resnet18 --------------------------------------------------------------------------

def test_resnet18_step_params_agree(run):
    j, t = both(run, "resnet18_step")
    assert rel_err(j["loss"], t["loss"]) <= TOL
    assert rel_err(j["prediction"], t["prediction"]) <= TOL
    assert len(j["params_after"]) == 62  # 20 convs, 20 BN (scale, bias), fc (kernel, bias)
    assert worst(j["params_after"], t["params_after"]) <= TOL
    assert worst(j["update"], t["update"]) <= TOL  # the step itself, not diluted by the weights
    assert worst(j["batch_stats_after"], t["batch_stats_after"]) <= TOL
    assert tree_norm(j["update"]) > 0.1  # the step moved the weights


def test_resnet18_finetune_changes_only_the_new_classifier(run):
    j, t = both(run, "resnet18_finetune")
    for res in (j, t):
        assert res["changed_params"] == "fc/bias, fc/kernel"
        assert float(res["max_abs_change_backbone"]) == 0.0
        assert res["batch_stats_changed"]  # train-mode BN still updates its buffers when params are frozen
    assert t["frozen_grads_are_None"]
    assert worst(j["fc_after"], t["fc_after"]) <= TOL
    assert rel_err(j["loss"], t["loss"]) <= TOL


# ---- the multi-task model (tiny) -------------------------------------------------------

def test_timestep_shares_sum_to_the_cnn_gradient(run):
    j, t = both(run, "timestep_contributions")
    for res in (j, t):
        assert worst(res["sum_of_shares"], res["full_cnn_grad"]) <= TOL
        assert np.all(res["share_norms"] > 1e-3 * res["share_norms"].max())  # BPTT reaches every frame
    for k in [k for k in j if k.startswith("cnn_grad_share_t")] + ["full_cnn_grad"]:
        assert worst(j[k], t[k]) <= TOL, k
    assert rel_err(j["feature_grad_norm_per_t"], t["feature_grad_norm_per_t"]) <= TOL


def test_concat_splits_the_gradient(run):
    j, t = both(run, "concat_split")
    for res in (j, t):
        assert rel_err(res["fused_grad[..., :D]"], res["feats_grad"]) <= 1e-14
        assert rel_err(res["fused_grad[..., D:]"], res["dyn_grad"]) <= 1e-14
    for k in j:
        assert rel_err(j[k], t[k]) <= TOL, k


def test_total_gradient_is_the_weighted_sum(run):
    j, t = both(run, "weighted_loss_sum")
    for res in (j, t):
        assert worst(res["weighted_sum_of_part_grads"], res["grad_total"]) <= TOL
    assert rel_err(j["total_loss"], t["total_loss"]) <= TOL
    for k in ("grad_total", "grad_loss_final", "grad_loss_pose", "grad_loss_vel"):
        assert worst(j[k], t[k]) <= TOL, k


def test_stepwise_update_differs_from_the_joint_step(run):
    j, t = both(run, "stepwise_vs_joint")
    key = "||joint - stepwise|| / ||joint step||"
    for res in (j, t):
        assert float(res[key]) > 0.05  # measured 0.70: not a rounding effect
        assert float(res["total_loss_after_joint_step"]) != float(res["total_loss_after_stepwise_steps"])
    assert "modified by an inplace operation" in t["backward_through_the_stale_graph"]
    for k in ("total_loss_after_joint_step", "total_loss_after_stepwise_steps", key):
        assert rel_err(j[k], t[k]) <= TOL, k
    assert worst(j["params_joint"], t["params_joint"]) <= TOL
    assert worst(j["params_stepwise"], t["params_stepwise"]) <= TOL


# Last in the module, so every example's results are already in `run`'s cache.
@pytest.mark.parametrize("topic", ["resnet18", "multitask"])
def test_docs_page_matches_the_code(topic, run, tmp_path):
    assert_page_current(topic, run, tmp_path)
