"""Batched, vectorised image augmentation on float tensors (B, C, H, W).

Every function draws all its random numbers from an explicit ``torch.Generator``, in one call
per batch, with no per-sample Python loop. The numbers are drawn on the generator's device and
moved to the batch's device, so a CPU generator gives the same augmentation for a batch on any
device. Inputs are images scaled to [0, 1] (``uint8 / 255``), before any mean/std
normalisation: colour jitter clamps to [0, 1], and cutout's zero is black.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from autorobust.errors import ConfigError

__all__ = [
    "BatchAugment",
    "color_jitter",
    "cutout",
    "random_crop",
    "random_grayscale",
    "random_horizontal_flip",
]

# ITU-R BT.601 luma weights, as in torchvision's rgb_to_grayscale and PIL's "L" conversion.
_LUMA = (0.299, 0.587, 0.114)


def _check_batch(x: Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float tensor (B, C, H, W), got {x.dtype} {tuple(x.shape)}")


def _check_probability(name: str, p: float) -> None:
    if not (0.0 <= p <= 1.0):
        raise ConfigError(f"{name} must lie in [0, 1], got {p}")


def _check_non_negative_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """n uniform [0, 1) numbers drawn on the generator's device, returned on ``device``."""
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _randint(
    high: int, size: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> Tensor:
    """Integers uniform in [0, high) drawn on the generator's device, returned on ``device``."""
    return torch.randint(high, size, generator=generator, device=generator.device).to(device)


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad every side by ``padding`` pixels, then crop a random H x W window per sample.

    Equivalent to torchvision's ``RandomCrop(size=(H, W), padding=padding)`` (constant zero
    fill): every sample is translated by (dy, dx), each uniform in [-padding, padding], with the
    uncovered border zero. Implemented as two gathers with per-sample row and column indices.

    Args:
        x: float (B, C, H, W).
        padding: non-negative number of pixels; 0 returns ``x``.
        generator: source of the offsets, 2 integers per sample.

    Returns:
        float (B, C, H, W), same dtype and device as ``x``.
    """
    _check_batch(x)
    _check_non_negative_int("padding", padding)
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    offsets = _randint(2 * padding + 1, (2, b), generator, x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    rows = rows[:, None, :, None].expand(b, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = cols[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)


def random_horizontal_flip(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Mirror each sample left-right with probability ``p``.

    Args:
        x: float (B, C, H, W).
        p: flip probability in [0, 1].
        generator: source of B uniform numbers.

    Returns:
        float (B, C, H, W).
    """
    _check_batch(x)
    _check_probability("p", p)
    flip = _uniform(x.shape[0], generator, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _grey(x: Tensor) -> Tensor:
    """Luma of RGB (B, 3, H, W) as (B, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def random_grayscale(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Replace each RGB sample by its luma 0.299 R + 0.587 G + 0.114 B with probability ``p``.

    The luma is copied to all three channels. For grey input (C = 1) this is a no-op and draws
    no random numbers.

    Args:
        x: float (B, C, H, W) with C = 1 or 3.
        p: probability in [0, 1].
        generator: source of B uniform numbers (for C = 3).

    Returns:
        float (B, C, H, W).
    """
    _check_batch(x)
    _check_probability("p", p)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"random_grayscale needs C = 1 or 3 channels, got C = {x.shape[1]}")
    grey = _uniform(x.shape[0], generator, x.device) < p
    return torch.where(grey[:, None, None, None], _grey(x).expand_as(x), x)


def _factors(strength: float, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Per-sample factors uniform in [max(0, 1 - strength), 1 + strength], shape (n, 1, 1, 1)."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return (low + (high - low) * _uniform(n, generator, device)).view(n, 1, 1, 1)


def color_jitter(
    x: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    generator: torch.Generator,
) -> Tensor:
    """Random brightness, contrast and saturation, applied in that fixed order.

    With factors f drawn per sample uniformly from [max(0, 1 - s), 1 + s] for strength s (as in
    torchvision's ColorJitter, which however shuffles the order):
    brightness x -> f x; contrast x -> f x + (1 - f) mean(luma(x)); saturation (C = 3 only)
    x -> f x + (1 - f) luma(x). The result is clamped to [0, 1] after each step. A strength of
    0 skips that step and draws nothing. Hue is not supported.

    Args:
        x: float (B, C, H, W) in [0, 1], C = 1 or 3.
        brightness, contrast, saturation: non-negative strengths.
        generator: source of up to 3 B uniform numbers.

    Returns:
        float (B, C, H, W) in [0, 1].
    """
    _check_batch(x)
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    for name, value in strengths.items():
        if not value >= 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    b, c = x.shape[:2]
    if c not in (1, 3):
        raise ValueError(f"color_jitter needs C = 1 or 3 channels, got C = {c}")
    if brightness > 0:
        x = (x * _factors(brightness, b, generator, x.device)).clamp(0.0, 1.0)
    if contrast > 0:
        luma = x if c == 1 else _grey(x)
        mean = luma.mean(dim=(1, 2, 3), keepdim=True)
        f = _factors(contrast, b, generator, x.device)
        x = (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)
    if saturation > 0 and c == 3:
        f = _factors(saturation, b, generator, x.device)
        x = (f * x + (1.0 - f) * _grey(x)).clamp(0.0, 1.0)
    return x


def cutout(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Zero one size x size square per sample, all channels (DeVries & Taylor 2017).

    The centre (cy, cx) is uniform over the H x W pixel grid; the square covers rows
    [cy - size // 2, cy - size // 2 + size) and the same for columns, clipped at the borders, so
    near a border less than size x size is zeroed. (The authors' code covers
    [cy - size // 2, cy + size // 2), one pixel less for odd sizes.)

    Args:
        x: float (B, C, H, W).
        size: side of the square in pixels; 0 returns ``x``.
        generator: source of 2 integers per sample.

    Returns:
        float (B, C, H, W).
    """
    _check_batch(x)
    _check_non_negative_int("size", size)
    if size == 0:
        return x
    b, _, h, w = x.shape
    cy = _randint(h, (b,), generator, x.device)
    cx = _randint(w, (b,), generator, x.device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (B, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


class BatchAugment:
    """A fixed pipeline of batched augmentations: crop, flip, colour jitter, grayscale, cutout.

    That order follows the usual training pipelines: geometry first (pad-and-crop, flip, as in
    the CIFAR recipes of all three papers), then colour (jitter then grayscale, as in SimCLR /
    PIRL views), then cutout last (DeVries & Taylor apply it to the finished image).

    Args:
        crop_padding: zero padding of :func:`random_crop`; 0 disables it.
        hflip: flip horizontally with probability 0.5.
        grayscale_p: probability of :func:`random_grayscale` (RGB only).
        jitter: strength of brightness, contrast and saturation in :func:`color_jitter`.
        cutout: side of the :func:`cutout` square; 0 disables it.
        class_strength: per-class probability (K,) in [0, 1] that a sample of class c is
            augmented at all (AutoBalance's individualised augmentation); None: every sample is.
    """

    def __init__(
        self,
        *,
        crop_padding: int = 0,
        hflip: bool = False,
        grayscale_p: float = 0.0,
        jitter: float = 0.0,
        cutout: int = 0,
        class_strength: Sequence[float] | None = None,
    ) -> None:
        _check_non_negative_int("crop_padding", crop_padding)
        _check_probability("grayscale_p", grayscale_p)
        if not jitter >= 0:
            raise ConfigError(f"jitter must be >= 0, got {jitter}")
        _check_non_negative_int("cutout", cutout)
        self.crop_padding = crop_padding
        self.hflip = bool(hflip)
        self.grayscale_p = grayscale_p
        self.jitter = jitter
        self.cutout = cutout
        self.class_strength: Tensor | None = None
        if class_strength is not None:
            strength = torch.as_tensor(list(class_strength), dtype=torch.float32)
            if strength.ndim != 1 or not strength.numel():
                raise ConfigError(f"class_strength must be K probabilities, got {strength}")
            if not bool(((strength >= 0) & (strength <= 1)).all()):
                raise ConfigError(f"class_strength must lie in [0, 1], got {strength.tolist()}")
            self.class_strength = strength

    def check_classes(self, num_classes: int) -> None:
        """Raise :class:`ConfigError` unless ``class_strength`` (if set) has K = ``num_classes``."""
        if self.class_strength is not None and len(self.class_strength) != num_classes:
            raise ConfigError(
                f"train.augment.class_strength has {len(self.class_strength)} values, "
                f"the data have {num_classes} classes"
            )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is switched on."""
        return bool(
            self.crop_padding or self.hflip or self.grayscale_p or self.jitter or self.cutout
        )

    def __call__(
        self, x: Tensor, generator: torch.Generator, labels: Tensor | None = None
    ) -> Tensor:
        """Augment a float batch (B, C, H, W) in [0, 1]; returns ``x`` itself when all are off.

        With ``class_strength``, ``labels`` (B,) int are required: sample i keeps its augmented
        version with probability ``class_strength[labels[i]]`` and is left as it was otherwise
        (one more uniform number per sample, drawn after the pipeline's).
        """
        _check_batch(x)
        if not self.enabled:
            return x
        augmented = self._pipeline(x, generator)
        if self.class_strength is None:
            return augmented
        if labels is None or labels.shape != (x.shape[0],):
            raise ValueError(f"class_strength needs labels of shape ({x.shape[0]},), got {labels}")
        strength = self.class_strength.to(x.device)[labels.to(x.device)]
        keep = _uniform(x.shape[0], generator, x.device) < strength
        return torch.where(keep[:, None, None, None], augmented, x)

    def _pipeline(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_horizontal_flip(x, 0.5, generator)
        if self.jitter:
            x = color_jitter(x, self.jitter, self.jitter, self.jitter, generator)
        if self.grayscale_p:
            x = random_grayscale(x, self.grayscale_p, generator)
        if self.cutout:
            x = cutout(x, self.cutout, generator)
        return x

    def __repr__(self) -> str:
        strength = None if self.class_strength is None else self.class_strength.tolist()
        return (
            f"BatchAugment(crop_padding={self.crop_padding}, hflip={self.hflip}, "
            f"grayscale_p={self.grayscale_p}, jitter={self.jitter}, cutout={self.cutout}, "
            f"class_strength={strength})"
        )
