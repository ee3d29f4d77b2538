"""The eight DARTS operations (Liu et al. 2019, "DARTS", §2.1 and its ``operations.py``).

Every operation maps a float feature map (B, C, H, W) to (B, C, H', W') with the same channel
count C; with ``stride=2`` it halves the resolution to ``H' = ceil(H / 2)`` (odd sizes such as
Fashion-MNIST's 7x7 are handled, unlike the reference code's factorized reduction). The operations
are the CSNAS search space O (paper 000, §III-A1):

``none`` (the zero operation), ``skip_connect`` (identity, or a factorized reduction with stride 2),
``max_pool_3x3``, ``avg_pool_3x3``, ``sep_conv_3x3``, ``sep_conv_5x5`` (two stacked
ReLU-depthwise-pointwise-BN blocks) and ``dil_conv_3x3``, ``dil_conv_5x5`` (one dilated
ReLU-depthwise-pointwise-BN block, dilation 2).

A cell never instantiates ``none``: an edge carrying it is simply absent (see
:mod:`autorobust.methods.csnas.darts.genotype`), so no parameter exists that could not receive a
gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autorobust._registry import Registry

__all__ = [
    "OPERATIONS",
    "OPERATION_NAMES",
    "DilConv",
    "FactorizedReduce",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "create_operation",
]

OperationFactory = Callable[[int, int], nn.Module]

OPERATIONS: Registry[OperationFactory] = Registry("operation")
"""Operation name -> factory ``(channels, stride) -> nn.Module``."""

OPERATION_NAMES: tuple[str, ...] = (
    "none",
    "skip_connect",
    "max_pool_3x3",
    "avg_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The search space's operations in the paper's (and DARTS') order; categorical choices use it."""


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output shape (never built inside a cell)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """float (B, C, H, W) -> zeros (B, C, ceil(H / stride), ceil(W / stride))."""
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class ReLUConvBN(nn.Sequential):
    """ReLU, k x k convolution without bias, batch norm: (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) k x k convolution, pointwise 1 x 1 convolution, batch norm."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in,
                c_in,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=c_in,
                bias=False,
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two :class:`DilConv` blocks with dilation 1; only the first one strides (as in DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, 1),
            DilConv(c_in, c_out, kernel_size, 1, padding, 1),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing every other pixel: two 1 x 1 stride-2 convolutions.

    One convolution sees the even pixels, the other the odd ones (the input shifted by one pixel);
    their outputs, ``c_out // 2`` and ``c_out - c_out // 2`` channels, are concatenated and batch
    normalised. The shifted input is zero-padded at the bottom/right so both halves have
    ``ceil(H / 2)`` rows also for odd H (DARTS' version fails there).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        # A module, not F.relu, so that activation hooks (the NASWOT fitness) see it; no weights.
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        """float (B, C_in, H, W) -> (B, C_out, ceil(H / 2), ceil(W / 2))."""
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


@OPERATIONS.register("none")
def _none(channels: int, stride: int) -> nn.Module:
    return Zero(stride)


@OPERATIONS.register("skip_connect")
def _skip(channels: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)


@OPERATIONS.register("max_pool_3x3")
def _max_pool(channels: int, stride: int) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@OPERATIONS.register("avg_pool_3x3")
def _avg_pool(channels: int, stride: int) -> nn.Module:
    # count_include_pad=False: border pixels average only real neighbours, as in DARTS.
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@OPERATIONS.register("sep_conv_3x3")
def _sep3(channels: int, stride: int) -> nn.Module:
    return SepConv(channels, channels, 3, stride, 1)


@OPERATIONS.register("sep_conv_5x5")
def _sep5(channels: int, stride: int) -> nn.Module:
    return SepConv(channels, channels, 5, stride, 2)


@OPERATIONS.register("dil_conv_3x3")
def _dil3(channels: int, stride: int) -> nn.Module:
    return DilConv(channels, channels, 3, stride, 2, 2)


@OPERATIONS.register("dil_conv_5x5")
def _dil5(channels: int, stride: int) -> nn.Module:
    return DilConv(channels, channels, 5, stride, 4, 2)


def create_operation(name: str, *, channels: int, stride: int) -> nn.Module:
    """Build operation ``name`` for ``channels`` channels and ``stride`` 1 or 2.

    Raises:
        UnknownNameError: ``name`` is not one of :data:`OPERATION_NAMES` (the message lists them).
    """
    return OPERATIONS.get(name)(channels, stride)
