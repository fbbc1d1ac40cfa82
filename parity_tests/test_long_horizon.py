"""The statistic of `make parity-long` (jaxmtl/parity/long_horizon.py) on made-up held-out curves:
the paired t-test per eval step accepts frameworks that differ by seed noise and rejects a shift
that is consistent across seeds."""

from __future__ import annotations

import numpy as np

from jaxmtl.parity.long_horizon import ALPHA, paired_tests


def _runs(values):
    """Per seed: {step: {"total": loss, "accuracy": acc}} at steps 50 and 100."""
    return [{50: {"total": v, "accuracy": 0.5}, 100: {"total": v - 0.1, "accuracy": 0.6}} for v in values]


def test_seed_noise_agrees_and_a_consistent_shift_does_not():
    rng = np.random.default_rng(0)
    torch = 1.0 + 0.05 * rng.standard_normal(6)
    same = torch + 0.01 * rng.standard_normal(6)          # chaos: per-seed noise around the same mean
    rows = paired_tests(_runs(same), _runs(torch))
    assert len(rows) == 4 and all(r["agree"] for r in rows)
    assert rows[0]["level"] == ALPHA / 4                  # Bonferroni over 2 steps x 2 metrics
    shifted = torch + 0.03 + 0.005 * rng.standard_normal(6)   # below the seed spread, yet every seed
    rows = paired_tests(_runs(shifted), _runs(torch))
    assert not all(r["agree"] for r in rows if r["metric"] == "total")
    assert all(r["agree"] for r in rows if r["metric"] == "accuracy")  # identical: p = 1, no division by 0
    assert all(r["diff_in_sd"] == 0.0 for r in rows if r["metric"] == "accuracy")
