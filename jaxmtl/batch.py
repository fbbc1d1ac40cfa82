"""The batch both frameworks consume, and its validation.

A Batch holds numpy (or jax) arrays. Images are stored once, NHWC
(B, T, H, W, C) for JAX; `images_nchw` gives torch's (B, T, C, H, W) view of
the same array, so the two frameworks can never see different pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxmtl.config import ModelConfig


class Batch(NamedTuple):
    images: np.ndarray  # (B, T, H, W, C) float
    dyn: np.ndarray     # (B, T, F_dyn) float
    pose: np.ndarray    # (B, T, F_pose) float
    vel: np.ndarray     # (B, T, F_vel) float
    label: np.ndarray   # (B,) int, in [0, num_classes)

    def images_nchw(self) -> np.ndarray:
        """torch layout (B, T, C, H, W) of the same pixels."""
        return np.ascontiguousarray(np.transpose(np.asarray(self.images), (0, 1, 4, 2, 3)))

    def astype(self, dtype) -> "Batch":
        """Float fields cast to `dtype`; labels stay integer."""
        return Batch(*(np.asarray(a, dtype) for a in self[:4]), np.asarray(self.label))


def random_batch(cfg: ModelConfig, seed: int, dtype=np.float32, batch_size: int | None = None) -> Batch:
    """Gaussian inputs and targets of the config's shapes (for parity checks, not learning)."""
    rng = np.random.default_rng(seed)
    b, t, s = batch_size or cfg.batch_size, cfg.seq_len, cfg.image_size
    return Batch(
        images=rng.standard_normal((b, t, s, s, cfg.in_channels)).astype(dtype),
        dyn=rng.standard_normal((b, t, cfg.f_dyn)).astype(dtype),
        pose=rng.standard_normal((b, t, cfg.f_pose)).astype(dtype),
        vel=rng.standard_normal((b, t, cfg.f_vel)).astype(dtype),
        label=rng.integers(0, cfg.num_classes, size=(b,)).astype(np.int32),
    )


def validate_batch(batch: Batch, cfg: ModelConfig, *, layout: str = "NHWC") -> None:
    """Raises ValueError naming the first field that does not fit `cfg`.

    Checked before any compilation so a bad input fails in milliseconds:
    shapes against the config, float dtypes, finite values, labels in range.
    `layout` says how `images` is laid out ("NHWC" for JAX, "NCHW" for torch).
    """
    b, t = np.shape(batch.images)[:2] if np.ndim(batch.images) >= 2 else (None, None)
    s, c = cfg.image_size, cfg.in_channels
    image_shape = (b, t, s, s, c) if layout == "NHWC" else (b, t, c, s, s)
    expected = {
        "images": image_shape,
        "dyn": (b, t, cfg.f_dyn),
        "pose": (b, t, cfg.f_pose),
        "vel": (b, t, cfg.f_vel),
        "label": (b,),
    }
    for name, shape in expected.items():
        arr = getattr(batch, name)
        if tuple(np.shape(arr)) != shape:
            raise ValueError(
                f"batch.{name} has shape {tuple(np.shape(arr))}, config {cfg.name!r} expects "
                f"{shape} ({layout} images, B={b}, T={t}, image_size={s}, channels={c})")
    if t != cfg.seq_len:
        raise ValueError(f"batch has sequence length T={t}, config {cfg.name!r} expects {cfg.seq_len}")
    for name in ("images", "dyn", "pose", "vel"):
        arr = np.asarray(getattr(batch, name))
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"batch.{name} has dtype {arr.dtype}, expected a float dtype")
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise ValueError(f"batch.{name} holds a non-finite value ({arr[tuple(bad)]}) at index {tuple(bad)}")
    label = np.asarray(batch.label)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"batch.label has dtype {label.dtype}, expected an integer dtype")
    if label.size and (label.min() < 0 or label.max() >= cfg.num_classes):
        raise ValueError(f"batch.label holds {label.min() if label.min() < 0 else label.max()}, "
                         f"outside [0, {cfg.num_classes}) for config {cfg.name!r}")
