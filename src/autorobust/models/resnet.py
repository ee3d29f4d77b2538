"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning", §4.2): ResNet-20 and ResNet-32.

Three stages of ``n`` BasicBlocks with 16, 32 and 64 channels (6n + 2 layers), the second and third
stage halving the resolution. The shortcut is option A, as in the paper's CIFAR experiments and in
the MW-Net and LDAM code: identity, and where the shape changes, stride-2 subsampling with the new
channels zero-padded (no parameters). Weights get Kaiming-normal init (He et al. 2015).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from autorobust.models.base import Classifier, _check_positive_int, _kaiming_init
from autorobust.models.registry import register_model

__all__ = ["CifarResNet", "resnet20", "resnet32"]


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad ``pad`` channels on each side."""

    def __init__(self, *, stride: int, pad: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            # Option A pads the channel difference evenly on both sides, as the reference code does.
            self.shortcut: nn.Module = _ShortcutA(
                stride=stride, pad=(out_channels - in_channels) // 2
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet with ``blocks_per_stage`` BasicBlocks in each of three stages (depth 6n + 2).

    Intermediate layers (outputs pooled to (B, dim)): ``stem`` (w), ``layer1`` (w),
    ``layer2`` (2w), ``layer3`` (4w; its pooled output is the feature vector); w = ``width``.

    Args:
        num_classes: K >= 2.
        in_channels: C >= 1.
        blocks_per_stage: n (5 for ResNet-32, 3 for ResNet-20).
        width: w, channels of the first stage (16 in He et al.; parameters grow as w²).
    """

    def __init__(
        self, *, num_classes: int, in_channels: int, blocks_per_stage: int, width: int = 16
    ) -> None:
        blocks_per_stage = _check_positive_int(
            blocks_per_stage, "blocks_per_stage", 1, "model 'resnet'"
        )
        width = _check_positive_int(width, "width", 1, "model 'resnet'")
        w1, w2, w3 = width, 2 * width, 4 * width
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            feature_dim=w3,
            intermediate_dims={"stem": w1, "layer1": w1, "layer2": w2, "layer3": w3},
        )
        self.blocks_per_stage = blocks_per_stage
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w1, 3, padding=1, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(inplace=True),
        )
        self.layer1 = self._stage(w1, w1, stride=1)
        self.layer2 = self._stage(w1, w2, stride=2)
        self.layer3 = self._stage(w2, w3, stride=2)
        self.head = nn.Linear(w3, num_classes)
        _kaiming_init(self)

    def _stage(self, in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_channels, out_channels, stride=stride)]
        blocks += [
            BasicBlock(out_channels, out_channels, stride=1)
            for _ in range(self.blocks_per_stage - 1)
        ]
        return nn.Sequential(*blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images float (B, C, H, W) -> features float (B, 4w)."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return x.mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        """Features float (B, 4w) -> logits float (B, num_classes)."""
        return self.head(features)


@register_model("resnet32")
def resnet32(*, num_classes: int, in_channels: int, width: int = 16) -> CifarResNet:
    """ResNet-32 (5 blocks per stage, 0.46 M parameters for K = 10 at width 16), as in MW-Net and
    LDAM; ``width`` scales every stage (parameters ∝ width²)."""
    return CifarResNet(
        num_classes=num_classes, in_channels=in_channels, blocks_per_stage=5, width=width
    )


@register_model("resnet20")
def resnet20(*, num_classes: int, in_channels: int, width: int = 16) -> CifarResNet:
    """ResNet-20 (3 blocks per stage, 0.27 M parameters for K = 10 at width 16); ``width`` scales
    every stage (parameters ∝ width²)."""
    return CifarResNet(
        num_classes=num_classes, in_channels=in_channels, blocks_per_stage=3, width=width
    )
