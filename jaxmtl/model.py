"""The ResNet+GRU multi-task model as Flax NNX modules, NHWC.

Data flow:
  frames (B, T, H, W, C) --ResNet, shared over t--> features (B, T, D) --pose_head--> pose (B, T, F_pose)
  concat(features, dyn) (B, T, D + F_dyn) --GRU--> hs (B, T, H_gru) --vel_head--> vel (B, T, F_vel)
  hs[:, -1] --classifier--> logits (B, num_classes)

Attribute names mirror torch_ref/model.py so the conversion table reads as a
rename: backbone.layer1[0].conv1 <-> backbone.layer1.0.conv1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmtl.config import ModelConfig
from jaxmtl.nn import GRU, BatchNorm2d, Conv2d, global_avg_pool, max_pool2d, torch_linear


class BasicBlock(nnx.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, + (downsampled) identity, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, rngs=rngs)
        self.bn1 = BatchNorm2d(out_ch)
        self.conv2 = Conv2d(out_ch, out_ch, 3, stride=1, padding=1, rngs=rngs)
        self.bn2 = BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            # torch: downsample = Sequential(conv1x1(stride), BatchNorm2d) -> keys downsample.0 / .1
            self.downsample_conv = Conv2d(in_ch, out_ch, 1, stride=stride, padding=0, rngs=rngs)
            self.downsample_bn = BatchNorm2d(out_ch)
        else:
            self.downsample_conv = None
            self.downsample_bn = None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x), train=train))
        y = self.bn2(self.conv2(y), train=train)
        identity = x
        if self.downsample_conv is not None:
            identity = self.downsample_bn(self.downsample_conv(x), train=train)
        return jax.nn.relu(y + identity)


class ResNet(nnx.Module):
    """resnet18 topology with configurable stage widths, without its fc: (N, H, W, C) -> (N, D)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int], *, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_channels, widths[0], 7, stride=2, padding=3, rngs=rngs)
        self.bn1 = BatchNorm2d(widths[0])
        stages = []
        in_ch = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nnx.List([BasicBlock(in_ch, width, stride, rngs=rngs),
                                    BasicBlock(width, width, 1, rngs=rngs)]))
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # named_scope only labels the compiled ops (profiles, HLO dumps) by layer.
        with jax.named_scope("stem"):
            x = jax.nn.relu(self.bn1(self.conv1(x), train=train))
            x = max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for i, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            with jax.named_scope(f"layer{i + 1}"):
                for block in stage:
                    x = block(x, train=train)
        return global_avg_pool(x)


class MultiTaskModel(nnx.Module):
    """ResNet (+ pose head) per frame, fusion, GRU (+ velocity head), classifier."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.backbone = ResNet(cfg.in_channels, cfg.widths, rngs=rngs)
        self.pose_head = torch_linear(cfg.feature_dim, cfg.f_pose, rngs=rngs)
        self.gru = GRU(cfg.gru_input_dim, cfg.gru_hidden, rngs=rngs)
        self.vel_head = torch_linear(cfg.gru_hidden, cfg.f_vel, rngs=rngs)
        self.classifier = torch_linear(cfg.gru_hidden, cfg.num_classes, rngs=rngs)

    def encode_frames(self, images: jax.Array, *, train: bool) -> jax.Array:
        """(B, T, H, W, C) -> per-frame features (B, T, D), one shared ResNet.

        All B*T frames go through the ResNet as one batch, as in the torch
        reference, so BatchNorm's batch statistics cover the same B*T frames.
        """
        b, t = images.shape[:2]
        feats = self.backbone(images.reshape((b * t,) + images.shape[2:]), train=train)
        return feats.reshape(b, t, -1)

    def heads(self, feats: jax.Array, dyn: jax.Array) -> dict[str, jax.Array]:
        """Everything after the ResNet: pose head, fusion, GRU, velocity head, classifier."""
        fused = jnp.concatenate([feats, dyn], axis=-1)  # torch.cat(..., dim=2)
        hs, h_last = self.gru(fused)
        return {"logits": self.classifier(h_last),
                "pose": self.pose_head(feats),
                "vel": self.vel_head(hs)}

    def __call__(self, images: jax.Array, dyn: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        """images (B, T, H, W, C), dyn (B, T, F_dyn) -> {"logits", "pose", "vel"}."""
        return self.heads(self.encode_frames(images, train=train), dyn)
