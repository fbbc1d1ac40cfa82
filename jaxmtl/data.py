"""A procedurally rendered motion data set, numpy only, deterministic from a seed.

Generative process (one sample, image coordinates normalised to [-1, 1]):

1. Start pose, drawn the same way for every class: position c0 ~ U(-0.45, 0.45)^2,
   heading phi ~ U(0, 2 pi). So a single frame (where the arrow is, where it
   points) says nothing about the class.
2. Motion class k ~ U{0..3}, with per-frame time t = 0..T-1:
   - 0 line:    constant speed s ~ U(0.04, 0.08) along the heading; omega = 0.
   - 1 circle:  speed s' = R |w| (R ~ U(0.15, 0.28), w = +-U(0.25, 0.45) rad/frame),
                heading tangent to the circle, turning at the constant rate w.
   - 2 spin:    the position stays put; the heading turns at w = +-U(0.25, 0.45).
   - 3 zig-zag: speed s along a heading that alternates phi +- alpha
                (alpha ~ U(0.5, 0.9)) every 2 frames (random phase); omega = 0
                between the switches.
3. Labels per frame: pose (x, y, sin theta, cos theta); velocity, the analytic time
   derivative of the trajectory, scaled to O(1): (VEL_SCALE * dx/dt, VEL_SCALE *
   dy/dt, OMEGA_SCALE * dtheta/dt). Velocity needs at least two frames: it is
   independent of the pose in any one frame.
4. Dynamic data per frame (f_dyn = 6), a noisy body-frame "IMU" in the same
   units: (forward speed, lateral speed, gyro omega, forward accel, lateral accel,
   speed^2), each plus N(0, DYN_NOISE^2). Forward acceleration is zero for every
   class (constant speeds), so that channel is pure noise: a realistic distractor. It is body-frame, so the world-frame
   velocity needs the heading, which only the image shows: the GRU must fuse the
   CNN's features with the readings, and average the noise over frames.
5. Images (T, H, W, 3): a per-sample static background texture (three random
   plane waves per channel, amplitude 0.12 each), an arrow-shaped triangle
   (tip at +r along the heading, so orientation is visible; r = 0.3) of a
   random bright colour, anti-aliased over one pixel, plus N(0, 0.05^2) pixel
   noise per frame.
   (The first setting, r = 0.22, amplitude 0.25, pixel noise 0.1, learned pose
   too slowly for this 2-core machine; the present one is easier.)

Splits and order: sample j of split "train"/"val" is a pure function of
(seed, split, j). Training batch i of epoch e takes the samples
perm_e[i*B:(i+1)*B], perm_e a permutation drawn from (seed, e); global step s
is batch s % batches_per_epoch of epoch s // batches_per_epoch. So the batch at
any step is a pure function of (seed, step): both frameworks see identical
batches in identical order, and resuming needs only the step.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from jaxmtl.batch import Batch
from jaxmtl.config import ModelConfig

CLASS_NAMES = ("line", "circle", "spin", "zigzag")
VEL_SCALE = 10.0      # 0.1 image-half-widths per frame -> 1
OMEGA_SCALE = 3.0     # ~0.33 rad per frame -> 1
DYN_NOISE = 0.3       # std of the sensor noise, in the scaled units
ARROW_R = 0.3         # arrow half-length, in normalised image units
_SPLIT_IDS = {"train": 1, "val": 2}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Size of the splits and the seed; batch size and shapes come from ModelConfig."""

    seed: int = 0
    train_size: int = 50_000
    val_size: int = 512

    def __post_init__(self) -> None:
        if self.train_size < 1 or self.val_size < 1:
            raise ValueError(f"train_size and val_size must be >= 1, got {self.train_size}, {self.val_size}")


def _trajectory(rng: np.random.Generator, t: np.ndarray):
    """One sample's class and per-frame (x, y, theta, vx, vy, omega) in normalised units."""
    c0 = rng.uniform(-0.45, 0.45, size=2)
    phi = rng.uniform(0.0, 2 * np.pi)
    k = int(rng.integers(0, len(CLASS_NAMES)))
    s = rng.uniform(0.04, 0.08)
    w = rng.uniform(0.25, 0.45) * rng.choice([-1.0, 1.0])
    zeros = np.zeros_like(t)
    if k == 0:  # line
        theta = phi + zeros
        vx, vy, om = s * np.cos(theta), s * np.sin(theta), zeros
        x, y = c0[0] + vx * t, c0[1] + vy * t
    elif k == 1:  # circle: centre chosen so the start is c0 with tangent heading phi
        radius = rng.uniform(0.15, 0.28)
        a = phi - np.sign(w) * np.pi / 2 + w * t          # angle of the position on the circle
        a0 = phi - np.sign(w) * np.pi / 2
        cx, cy = c0[0] - radius * np.cos(a0), c0[1] - radius * np.sin(a0)
        x, y = cx + radius * np.cos(a), cy + radius * np.sin(a)
        vx, vy = -radius * w * np.sin(a), radius * w * np.cos(a)
        theta, om = phi + w * t, w + zeros
    elif k == 2:  # spin in place
        x, y = c0[0] + zeros, c0[1] + zeros
        vx, vy = zeros, zeros
        theta, om = phi + w * t, w + zeros
    else:  # zig-zag: heading phi + alpha * sq(t + t0), sq = +1 on [0, 2), -1 on [2, 4) (period 4)
        alpha = rng.uniform(0.5, 0.9)
        t0 = rng.uniform(0.0, 4.0)

        def plus_time(u):  # time spent in the + phase during [0, u]
            return 2 * np.floor(u / 4) + np.minimum(np.mod(u, 4), 2)

        g = plus_time(t0 + t) - plus_time(t0)
        d_plus = np.array([np.cos(phi + alpha), np.sin(phi + alpha)])
        d_minus = np.array([np.cos(phi - alpha), np.sin(phi - alpha)])
        x = c0[0] + s * (g * d_plus[0] + (t - g) * d_minus[0])
        y = c0[1] + s * (g * d_plus[1] + (t - g) * d_minus[1])
        sq = np.where(np.mod(t0 + t, 4) < 2, 1.0, -1.0)
        theta = phi + alpha * sq
        vx, vy, om = s * np.cos(theta), s * np.sin(theta), zeros
    # body-frame acceleration of the analytic trajectory (zero except the circle's centripetal term)
    a_lat = np.hypot(vx, vy) * om if k == 1 else zeros
    return k, np.stack([x, y, theta, vx, vy, om], axis=-1), a_lat


def _sample_params(seed: int, split: str, index: int, cfg: ModelConfig):
    """Everything random about one sample, from its own generator."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    t = np.arange(cfg.seq_len, dtype=np.float64)
    k, traj, a_lat = _trajectory(rng, t)
    colour = rng.uniform(0.6, 1.0, size=3)
    waves = rng.normal(0.0, 1.0, size=(3, 3, 2)) * 4.0   # (wave, channel, frequency xy)
    phases = rng.uniform(0, 2 * np.pi, size=(3, 3))
    dyn_noise = rng.normal(0.0, DYN_NOISE, size=(cfg.seq_len, cfg.f_dyn))
    pix_noise_seed = int(rng.integers(0, 2**63 - 1))
    return k, traj, a_lat, colour, waves, phases, dyn_noise, pix_noise_seed


def _labels(traj: np.ndarray, a_lat: np.ndarray, dyn_noise: np.ndarray):
    x, y, theta, vx, vy, om = np.moveaxis(traj, -1, 0)
    pose = np.stack([x, y, np.sin(theta), np.cos(theta)], axis=-1)
    vel = np.stack([VEL_SCALE * vx, VEL_SCALE * vy, OMEGA_SCALE * om], axis=-1)
    v_fwd = VEL_SCALE * (vx * np.cos(theta) + vy * np.sin(theta))
    v_lat = VEL_SCALE * (-vx * np.sin(theta) + vy * np.cos(theta))
    zeros = np.zeros_like(x)
    dyn = np.stack([v_fwd, v_lat, OMEGA_SCALE * om, zeros, VEL_SCALE * OMEGA_SCALE * a_lat,
                    v_fwd**2 + v_lat**2], axis=-1) + dyn_noise
    return pose, vel, dyn


def _render(traj: np.ndarray, colour: np.ndarray, waves: np.ndarray, phases: np.ndarray,
            noise: np.ndarray, size: int) -> np.ndarray:
    """(N, T, 6) trajectories -> (N, T, S, S, 3) images, vectorised over samples, frames and pixels."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1                  # pixel centres in [-1, 1]
    gy, gx = np.meshgrid(coords, coords, indexing="ij")               # row = y, column = x
    # background: sum of plane waves, static over the frames of a sample -> (N, S, S, 3)
    arg = (waves[..., 0, None, None] * gx + waves[..., 1, None, None] * gy + phases[..., None, None])
    bg = 0.12 * np.sin(arg).sum(axis=1)                               # (N, 3, S, S)
    bg = np.moveaxis(bg, 1, -1)
    # arrow in the object frame: tip (1, 0), rear corners (-0.6, +-0.55), times ARROW_R
    x, y, th = (traj[..., i][..., None, None] for i in range(3))     # (N, T, 1, 1)
    dx, dy = gx - x, gy - y
    u = (np.cos(th) * dx + np.sin(th) * dy) / ARROW_R                 # along the heading
    v = (-np.sin(th) * dx + np.cos(th) * dy) / ARROW_R
    verts = np.array([[1.0, 0.0], [-0.6, 0.55], [-0.6, -0.55]])
    dist = np.full(u.shape, np.inf)
    for i in range(3):                                                # signed distance to each edge
        (ax, ay), (bx, by) = verts[i], verts[(i + 1) % 3]
        ex, ey = bx - ax, by - ay
        norm = np.hypot(ex, ey)
        inside = ((u - ax) * ey - (v - ay) * ex) / norm * -1           # > 0 inside (counter-clockwise)
        dist = np.minimum(dist, inside)
    pixel = 2.0 / size / ARROW_R
    alpha = np.clip(dist / pixel + 0.5, 0.0, 1.0)[..., None]          # one-pixel anti-aliasing
    img = bg[:, None] * (1 - alpha) + colour[:, None, None, None, :] * alpha
    return img + noise


class MotionDataset:
    """The data set for one ModelConfig: `train_batch(step)` and `val_batch(i)`, both pure functions."""

    def __init__(self, cfg: ModelConfig, data_cfg: DataConfig = DataConfig(), *,
                 batch_size: int | None = None, dtype=np.float32):
        self.cfg, self.data_cfg = cfg, data_cfg
        self.batch_size = int(batch_size or cfg.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if data_cfg.train_size < self.batch_size:
            raise ValueError(f"train_size={data_cfg.train_size} is smaller than one batch ({self.batch_size})")
        if cfg.f_dyn != 6 or cfg.f_pose != 4 or cfg.f_vel != 3 or cfg.num_classes != len(CLASS_NAMES):
            raise ValueError(f"config {cfg.name!r}: the motion data set makes f_dyn=6, f_pose=4, "
                             f"f_vel=3 and {len(CLASS_NAMES)} classes")
        self.dtype = dtype
        self.batches_per_epoch = data_cfg.train_size // self.batch_size

    def samples(self, split: str, indices) -> Batch:
        """The samples `indices` of `split` as one Batch (images NHWC)."""
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        per = [_sample_params(self.data_cfg.seed, split, int(j), self.cfg) for j in indices]
        labels = np.array([p[0] for p in per], np.int32)
        traj = np.stack([p[1] for p in per])
        pose, vel, dyn = (np.stack(a) for a in zip(*(_labels(p[1], p[2], p[6]) for p in per)))
        s, t = self.cfg.image_size, self.cfg.seq_len
        noise = np.stack([np.random.default_rng(p[7]).normal(0.0, 0.05, size=(t, s, s, 3)) for p in per])
        images = _render(traj, np.stack([p[3] for p in per]), np.stack([p[4] for p in per]),
                         np.stack([p[5] for p in per]), noise, s)
        dt = self.dtype
        return Batch(images.astype(dt), dyn.astype(dt), pose.astype(dt), vel.astype(dt), labels)

    @functools.lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.data_cfg.seed, 1000, epoch]).permutation(self.data_cfg.train_size)

    def train_indices(self, step: int) -> np.ndarray:
        """Sample indices of the training batch at global `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, i = divmod(int(step), self.batches_per_epoch)
        return self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]

    def train_batch(self, step: int) -> Batch:
        return self.samples("train", self.train_indices(step))

    @property
    def val_batches(self) -> int:
        return max(1, self.data_cfg.val_size // self.batch_size)

    def val_indices(self, i: int) -> list[int]:
        """Sample indices of validation batch i (fixed, in order)."""
        n = self.data_cfg.val_size
        return [(i * self.batch_size + j) % n for j in range(self.batch_size)]

    def val_batch(self, i: int) -> Batch:
        return self.samples("val", self.val_indices(i))

    def target_means(self, n_samples: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Mean pose and velocity over the first `n_samples` training samples (the 'predict the mean' baseline)."""
        idx = np.arange(min(n_samples, self.data_cfg.train_size))
        per = [_sample_params(self.data_cfg.seed, "train", int(j), self.cfg) for j in idx]
        pose, vel, _ = (np.stack(a) for a in zip(*(_labels(p[1], p[2], p[6]) for p in per)))
        return pose.reshape(-1, pose.shape[-1]).mean(0), vel.reshape(-1, vel.shape[-1]).mean(0)


class ProcessShare:
    """Process `index` of `count`'s rows of every batch of `data`, rendered by that process alone.

    Rows [index * B / count, (index + 1) * B / count) of the global batch of B at
    each step (the rows jaxmtl.data_parallel places on this process's devices).
    `batch_size` stays the global B; `jaxmtl.loop.fit` drives a share like the data set.
    """

    def __init__(self, data: MotionDataset, index: int, count: int):
        if data.batch_size % count:
            raise ValueError(f"the global batch of {data.batch_size} does not divide over {count} processes")
        if not 0 <= index < count:
            raise ValueError(f"process index {index} outside [0, {count})")
        share = data.batch_size // count
        self.data, self.rows = data, slice(index * share, (index + 1) * share)
        self.batch_size, self.val_batches = data.batch_size, data.val_batches

    def train_batch(self, step: int) -> Batch:
        return self.data.samples("train", self.data.train_indices(step)[self.rows])

    def val_batch(self, i: int) -> Batch:
        return self.data.samples("val", self.data.val_indices(i)[self.rows])

    def target_means(self, n_samples: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        return self.data.target_means(n_samples)
