"""Named model configurations shared by the JAX model and the torch reference.

Each preset is a frozen dataclass, so a config is hashable and can be a static
argument of a jitted function. `torch_ref` imports this same module: both
frameworks read their sizes from one place.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the ResNet+GRU multi-task model and the loss weights.

    Input: images (B, T, C, H, W) in torch layout, (B, T, H, W, C) in JAX
    layout, and dynamic data (B, T, f_dyn).
    """

    name: str
    image_size: int          # H == W
    widths: tuple[int, int, int, int]  # channels of ResNet stages layer1..layer4
    seq_len: int             # T
    batch_size: int          # B
    gru_hidden: int          # H_gru
    in_channels: int = 3
    f_dyn: int = 6           # dynamic (sensor-like) features per frame
    f_pose: int = 4          # per-frame pose target: x, y, sin(theta), cos(theta)
    f_vel: int = 3           # per-frame velocity target: vx, vy, omega
    num_classes: int = 4     # motion classes
    w_pose: float = 0.5      # weight of the ResNet auxiliary (pose) loss
    w_vel: float = 0.5       # weight of the GRU auxiliary (velocity) loss

    def __post_init__(self) -> None:
        # The stem (stride 2) and max-pool (stride 2) and three stride-2 stages
        # divide the image by 32; anything smaller collapses to an empty map.
        if self.image_size < 32:
            raise ValueError(
                f"config {self.name!r}: image_size={self.image_size} is below 32, "
                "the smallest size the ResNet's five stride-2 stages can take")
        if self.seq_len < 1 or self.batch_size < 1:
            raise ValueError(f"config {self.name!r}: seq_len and batch_size must be >= 1")
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"config {self.name!r}: widths must be four positive ints, got {self.widths}")

    @property
    def feature_dim(self) -> int:
        """D: size of the pooled per-frame ResNet feature."""
        return self.widths[-1]

    @property
    def gru_input_dim(self) -> int:
        """D + F_dyn: size of the fused per-frame GRU input."""
        return self.feature_dim + self.f_dyn


TINY = ModelConfig(name="tiny", image_size=32, widths=(8, 16, 32, 64),
                   seq_len=4, batch_size=2, gru_hidden=16)
SMALL = ModelConfig(name="small", image_size=64, widths=(16, 32, 64, 128),
                    seq_len=8, batch_size=16, gru_hidden=64)
RESNET18 = ModelConfig(name="resnet18", image_size=64, widths=(64, 128, 256, 512),
                       seq_len=8, batch_size=8, gru_hidden=256)

CONFIGS: dict[str, ModelConfig] = {c.name: c for c in (TINY, SMALL, RESNET18)}


def get_config(name: str) -> ModelConfig:
    """Returns the preset called `name`, or raises naming the known presets."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; known: {sorted(CONFIGS)}") from None


def require_x64(dtype: str, what: str = "float64") -> None:
    """The one x64 guard: float64 needs JAX's x64 mode, which the caller switches on, never a constructor."""
    import jax

    if str(dtype) == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError(f"{what} needs JAX's x64 mode, switched on before any JAX array exists: "
                           "jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1 "
                           "(jaxmtl.parity.set_full_precision('float64') for parity runs)")
