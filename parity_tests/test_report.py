"""The human-readable report: report.md names every check, its error and tolerance, the worst
tensor of each failure, versions and device; grad_errors.png is written and readable."""

from __future__ import annotations

import argparse

import pytest

from jaxmtl.parity.checks import Check, check_from_errs

TENSORS = ["backbone.conv1.weight", "backbone.layer1.0.conv1.weight", "gru.weight_hh_l0", "classifier.bias"]


def _checks() -> list[Check]:
    good = {n: 10.0 ** -(13 + i) for i, n in enumerate(TENSORS)}
    bad = dict(good, **{"gru.weight_hh_l0": 3e-3, "classifier.bias": 0.0})
    return [check_from_errs("forward/train", {"logits": 1e-14, "loss": 2e-15}, 1e-10),
            check_from_errs("grad/total", bad, 1e-10),
            check_from_errs("grad/loss_pose", good, 1e-10),
            check_from_errs("curve/sgd", {"step 0": 0.0, "step 1": float("nan")}, 1e-8)]


def test_report_names_checks_failures_and_environment(tmp_path):
    import matplotlib.image

    from jaxmtl.parity.report import write_report

    path = write_report(tmp_path, _checks(), {"config": "tiny", "dtype": "float64"})
    text = path.read_text()
    assert text.startswith("# Parity report: FAILED (2 of 4 checks)")
    for row in ["| forward/train | 1.000e-14 | 1e-10 | pass |",
                "| grad/total | 3.000e-03 | 1e-10 | **FAIL** | `gru.weight_hh_l0` |",
                "| curve/sgd | nan | 1e-08 | **FAIL** | `step 1` |"]:
        assert row in text
    assert "FAIL grad/total: worst tensor gru.weight_hh_l0" in text  # where to look
    assert "**config**: tiny" in text and "**dtype**: float64" in text
    from importlib import metadata

    for pkg in ("jax", "flax", "optax", "torch"):
        assert f"| {pkg} | {metadata.version(pkg)} |" in text
    assert "| jax device | cpu" in text
    img = matplotlib.image.imread(tmp_path / "grad_errors.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert "![grad_errors.png](grad_errors.png)" in text


def test_failure_lines_point_at_the_worst_tensor():
    from jaxmtl.parity.report import failure_lines

    lines = failure_lines(_checks())
    assert len(lines) == 2
    assert lines[0].startswith("FAIL grad/total: worst tensor gru.weight_hh_l0 (max_rel_err 3.000e-03 > tol 1e-10)")
    assert "step 1 (nan)" in lines[1]  # NaN is the worst error, never hidden


def test_no_plot_without_gradient_checks(tmp_path):
    from jaxmtl.parity.report import write_report

    write_report(tmp_path, _checks()[:1], {})
    assert not (tmp_path / "grad_errors.png").exists()
    assert "# Parity report: PASSED" in (tmp_path / "report.md").read_text()


def test_jaxmtl_parity_writes_report_and_names_worst_tensor(tmp_path, monkeypatch, capsys):
    """The CLI path (`jaxmtl parity --out DIR`), with the model checks replaced by canned ones."""
    from jaxmtl.parity import harness, localize, multitask_port, run

    checks = _checks()[:3]
    monkeypatch.setattr(multitask_port, "multitask_pair", lambda *a, **k: None)
    monkeypatch.setattr(harness, "compare", lambda pair, batches, **k: checks)
    monkeypatch.setattr(harness, "check_inputs", lambda pair, inputs, where="": None)  # no pair to check against
    monkeypatch.setattr(localize, "localize", lambda pair, inputs: None)
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    args = parser.parse_args(["--config", "tiny", "--dtype", "float64", "--out", str(tmp_path)])
    assert run.run(args) == 1
    err = capsys.readouterr().err
    assert "FAIL grad/total: worst tensor gru.weight_hh_l0" in err
    assert (tmp_path / "parity.json").exists() and (tmp_path / "grad_errors.png").exists()
    assert "`gru.weight_hh_l0`" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("name,group", [("backbone.layer2.0.conv1.weight", "backbone.layer2"),
                                        ("backbone.bn1.bias", "backbone.stem"), ("gru.bias_hh_l0", "gru")])
def test_plot_groups_by_module(name, group):
    from jaxmtl.parity.report import _group

    assert _group(name) == group
