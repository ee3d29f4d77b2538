"""Images held as tensors on the training device, converted to normalised floats per batch.

Keeping uint8 (N, C, H, W) on the device and converting one batch at a time costs 1 byte per pixel
of memory instead of 4, and no per-sample Python or PIL work happens in the training path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Normalization", "images_to_tensor", "resolve_device", "to_unit_float"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"`` as given.

    Raises:
        ConfigError: ``"cuda"`` was asked for on a machine without a CUDA device.
    """
    from autorobust.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) numpy images -> contiguous uint8 (N, C, H, W) tensor on ``device``."""
    array = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if not array.flags.writeable:  # e.g. np.frombuffer of a file: torch wants writable memory
        array = array.copy()
    return torch.from_numpy(array).to(device)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of a training pool, in units of [0, 1] intensity."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_images(cls, images: np.ndarray) -> Normalization:
        """Statistics of uint8 (N, H, W, C) images (a constant channel gets std 1)."""
        pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        std = pixels.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        return cls(tuple(pixels.mean(axis=0).tolist()), tuple(std.tolist()))

    def standardize(self, batch: torch.Tensor) -> torch.Tensor:
        """float (B, C, H, W) intensities in [0, 1] -> standardised per channel."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device).view(shape)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device).view(shape)
        return (batch - mean) / std

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, C, H, W), standardised per channel."""
        return self.standardize(to_unit_float(batch))


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 intensities in [0, 1] (what augmentation expects)."""
    return batch.float() / 255.0
