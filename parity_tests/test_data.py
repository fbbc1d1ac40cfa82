"""The motion data set: determinism, layout, label structure (tiny config)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmtl.batch import validate_batch
from jaxmtl.config import TINY
from jaxmtl.data import OMEGA_SCALE, VEL_SCALE, DataConfig, MotionDataset


@pytest.fixture(scope="module")
def data():
    return MotionDataset(TINY, DataConfig(seed=3, train_size=64, val_size=16))


@pytest.fixture(scope="module")
def many(data):
    """300 training samples: enough for distribution checks, fast on tiny."""
    return data.samples("train", range(300))


def test_batches_are_valid_and_deterministic(data):
    b = data.train_batch(5)
    validate_batch(b, TINY)
    again = MotionDataset(TINY, DataConfig(seed=3, train_size=64, val_size=16)).train_batch(5)
    for x, y in zip(b, again):
        np.testing.assert_array_equal(x, y)
    other_seed = MotionDataset(TINY, DataConfig(seed=4, train_size=64, val_size=16)).train_batch(5)
    assert not np.array_equal(b.images, other_seed.images)


def test_batch_order_is_a_function_of_step(data):
    """Every epoch is a permutation of the training set; epochs differ; steps differ."""
    per_epoch = data.batches_per_epoch
    assert per_epoch == 64 // TINY.batch_size
    epoch0 = np.concatenate([data.train_indices(s) for s in range(per_epoch)])
    epoch1 = np.concatenate([data.train_indices(s) for s in range(per_epoch, 2 * per_epoch)])
    assert sorted(epoch0) == list(range(64)) and sorted(epoch1) == list(range(64))
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(data.train_batch(0).images, data.train_batch(1).images)


def test_val_split_differs_from_train(data):
    assert not np.array_equal(data.samples("val", [0]).images, data.samples("train", [0]).images)
    with pytest.raises(ValueError, match="split"):
        data.samples("test", [0])


def test_nchw_view_is_the_same_pixels(data):
    b = data.train_batch(0)
    nchw = b.images_nchw()
    assert nchw.shape == (TINY.batch_size, TINY.seq_len, 3, TINY.image_size, TINY.image_size)
    np.testing.assert_array_equal(nchw[1, 2, :, 4, 7], b.images[1, 2, 4, 7, :])


def test_pose_is_unit_heading_and_velocity_is_trajectory_derivative(many):
    sin, cos = many.pose[..., 2], many.pose[..., 3]
    np.testing.assert_allclose(sin**2 + cos**2, 1.0, atol=1e-5)
    # For line and circle the heading is the direction of travel: v || (cos, sin).
    vx, vy = many.vel[..., 0] / VEL_SCALE, many.vel[..., 1] / VEL_SCALE
    moving = np.isin(many.label, [0, 1])
    cross = (vx * sin - vy * cos)[moving]
    np.testing.assert_allclose(cross, 0.0, atol=1e-6)
    # Lines: the position advances by exactly the velocity each frame (independent finite difference).
    line = many.label == 0
    dx = np.diff(many.pose[line][..., 0], axis=1)
    np.testing.assert_allclose(dx, vx[line][:, 1:], atol=1e-6)
    # Spin: the position is fixed and omega is nonzero.
    spin = many.label == 2
    assert np.all(np.abs(np.diff(many.pose[spin][..., :2], axis=1)) < 1e-6)
    assert np.all(np.abs(many.vel[spin][..., 2]) >= 0.25 * OMEGA_SCALE - 1e-6)


def test_first_frame_does_not_reveal_the_class(many):
    """Start position and heading have the same distribution in every class."""
    first = many.pose[:, 0]
    for k in range(4):
        sel = first[many.label == k]
        assert len(sel) > 50
        np.testing.assert_allclose(sel[:, :2].mean(0), 0.0, atol=0.07)   # U(-0.45, 0.45): std 0.26
        np.testing.assert_allclose(sel[:, 2:].mean(0), 0.0, atol=0.2)    # uniform heading
        np.testing.assert_allclose(sel[:, :2].std(0), 0.9 / np.sqrt(12), rtol=0.2)


def test_targets_are_order_one(many):
    for name in ("pose", "vel", "dyn"):
        std = getattr(many, name).reshape(-1, getattr(many, name).shape[-1]).std(0)
        assert np.all(std > 0.1) and np.all(std < 2.0), (name, std)


def test_bad_data_settings_are_refused():
    with pytest.raises(ValueError, match="train_size"):
        DataConfig(train_size=0)
    with pytest.raises(ValueError, match="smaller than one batch"):
        MotionDataset(TINY, DataConfig(train_size=1))
