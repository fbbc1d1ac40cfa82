"""The ResNet+GRU multi-task model from stock torch layers, NCHW.

`ResNet.state_dict()` has torchvision resnet18's keys and shapes minus `fc`
(conv1, bn1, layer1.0.conv1, ..., layer4.1.bn2, layerN.0.downsample.0/1), so
torchvision weights load into it when the widths are (64, 128, 256, 512).
"""

from __future__ import annotations

import torch
from torch import nn

from jaxmtl.config import ModelConfig


def _init_like_torchvision(module: nn.Module) -> None:
    # torchvision.models.resnet: kaiming_normal_(fan_out, relu) for convs, BN weight 1 / bias 0.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class ResNet(nn.Module):
    """resnet18 topology with configurable widths, without fc: (N, C, H, W) -> (N, D)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}",
                    nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width, 1)))
            in_ch = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class MultiTaskModel(nn.Module):
    """ResNet (+ pose head) per frame, fusion, nn.GRU (+ velocity head), classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.in_channels, cfg.widths)
        self.pose_head = nn.Linear(cfg.feature_dim, cfg.f_pose)
        self.gru = nn.GRU(cfg.gru_input_dim, cfg.gru_hidden, num_layers=1, batch_first=True)
        self.vel_head = nn.Linear(cfg.gru_hidden, cfg.f_vel)
        self.classifier = nn.Linear(cfg.gru_hidden, cfg.num_classes)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, D): all B*T frames through the one ResNet as one batch."""
        b, t = images.shape[:2]
        return self.backbone(images.reshape((b * t,) + tuple(images.shape[2:]))).reshape(b, t, -1)

    def heads(self, feats: torch.Tensor, dyn: torch.Tensor) -> dict[str, torch.Tensor]:
        fused = torch.cat((feats, dyn), dim=2)
        hs, h_n = self.gru(fused)
        return {"logits": self.classifier(h_n[-1]),
                "pose": self.pose_head(feats),
                "vel": self.vel_head(hs)}

    def forward(self, images: torch.Tensor, dyn: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.encode_frames(images), dyn)


def build_model(cfg: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> MultiTaskModel:
    """A freshly initialised reference model, deterministic in `seed`."""
    with torch.random.fork_rng(devices=[]):  # leaves the global generator untouched
        torch.manual_seed(seed)
        return MultiTaskModel(cfg).to(dtype)
