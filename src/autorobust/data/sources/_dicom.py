"""DICOM files as 8-bit images: the pixel data, rescaled and windowed as the file says.

Read with pydicom (the ``dicom`` extra, imported when a DICOM file is decoded). One frame per
file; grey (MONOCHROME1, MONOCHROME2) or RGB. For grey images the stored values x become
``x * RescaleSlope + RescaleIntercept`` (modality units, e.g. Hounsfield), then the file's first
window (WindowCenter c, WindowWidth w, VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID; DICOM PS3.3
C.11.2.1.2) maps them to 0..255; without a window, the minimum and maximum of the rescaled image
map to 0 and 255 (a constant image gives 0). MONOCHROME1 (0 is white) is then inverted, so 255 is
always white. RGB pixels are taken as they are (8 bits) or scaled from BitsStored to 8 bits.
Values are rounded to the nearest integer (halves to even, numpy's rint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autorobust.errors import DataError

__all__ = ["DICOM_EXTENSION", "decode_dicom", "has_dicom_preamble", "is_dicom"]

DICOM_EXTENSION = ".dcm"
_PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM Part 10 file
_MAGIC = b"DICM"
_INSTALL = "pip install 'autorobust[dicom]'"


def has_dicom_preamble(path: Path) -> bool:
    """Whether the file at ``path`` starts with a DICOM Part 10 preamble (128 bytes, "DICM")."""
    try:
        with path.open("rb") as stream:
            head = stream.read(_PREAMBLE + len(_MAGIC))
    except OSError:
        return False
    return head[_PREAMBLE:] == _MAGIC


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is read as DICOM: a ``.dcm`` name (any case) or the DICM preamble."""
    return path.suffix.lower() == DICOM_EXTENSION or has_dicom_preamble(path)


def _first(value: Any) -> float:
    """The first value of a possibly multi-valued numeric element, as a float."""
    if value is None:
        raise ValueError("empty")
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        return float(value)
    if len(value) == 0:
        raise ValueError("empty")
    return float(value[0])


def window_to_uint8(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map rescaled values (any shape, modality units) through a DICOM window to uint8 0..255.

    Args:
        values: rescaled pixel values, float.
        center: WindowCenter c, in the units of ``values``.
        width: WindowWidth w > 0 (>= 1 for LINEAR), in the units of ``values``.
        function: VOILUTFunction: LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2-3).

    Returns:
        uint8 array of the shape of ``values``, rounded to the nearest integer.

    Raises:
        ValueError: a width the function does not allow, or an unknown function.
    """
    x = values.astype(np.float64)
    top = 255.0
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"WindowWidth {width:g} < 1 with VOILUTFunction LINEAR")
        if width == 1:  # the limit of the formula: a threshold at c - 0.5
            y = np.where(x <= center - 0.5, 0.0, top)
        else:
            y = ((x - (center - 0.5)) / (width - 1) + 0.5) * top
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"WindowWidth {width:g} <= 0")
        y = ((x - center) / width + 0.5) * top
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"WindowWidth {width:g} <= 0")
        y = top / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        raise ValueError(f"VOILUTFunction {function!r} (supported: LINEAR, LINEAR_EXACT, SIGMOID)")
    return np.rint(np.clip(y, 0.0, top)).astype(np.uint8)


def minmax_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map values (any shape) linearly so their minimum is 0 and maximum 255, as uint8 (rounded);
    a constant array gives zeros."""
    x = values.astype(np.float64)
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    low, high = float(x.min()), float(x.max())
    if high <= low:
        return np.zeros(x.shape, dtype=np.uint8)
    return np.rint((x - low) / (high - low) * 255.0).astype(np.uint8)


def _grey(dataset: Any, pixels: np.ndarray, path: Path) -> np.ndarray:
    try:
        slope = _first(dataset.get("RescaleSlope", 1.0))
        intercept = _first(dataset.get("RescaleIntercept", 0.0))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable RescaleSlope/RescaleIntercept ({exc})") from None
    values = pixels.astype(np.float64) * slope + intercept
    center = dataset.get("WindowCenter")
    width = dataset.get("WindowWidth")
    if center is not None and width is not None:
        try:
            function = str(dataset.get("VOILUTFunction") or "LINEAR").strip().upper()
            image = window_to_uint8(values, _first(center), _first(width), function)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: unusable window WindowCenter/WindowWidth ({exc})") from None
    else:
        image = minmax_to_uint8(values)
    if str(dataset.PhotometricInterpretation).strip() == "MONOCHROME1":
        image = 255 - image
    return image


def _rgb(dataset: Any, pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    bits = int(dataset.get("BitsStored", 8 * pixels.dtype.itemsize))
    top = float(2**bits - 1)
    return np.rint(np.clip(pixels.astype(np.float64), 0, top) / top * 255.0).astype(np.uint8)


def _can_decode(syntax: Any) -> bool:
    """Whether pydicom has a working decoder (its plugins' dependencies installed) for the
    compressed transfer syntax ``syntax``."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError):  # a syntax pydicom has no decoder class for
        return False


def decode_dicom(path: Path) -> np.ndarray:
    """The image of one single-frame DICOM file as uint8, rescaled and windowed (module docstring).

    Args:
        path: a DICOM file (``.dcm`` with or without the Part 10 preamble, or any name with it).

    Returns:
        uint8 (H, W) for MONOCHROME1/MONOCHROME2, uint8 (H, W, 3) for RGB; 255 is white.

    Raises:
        DataError: one line naming ``path``: pydicom missing, not DICOM, no pixel data,
            multi-frame, a compressed transfer syntax without a decoder installed, an
            unsupported photometric interpretation, or pixel data that does not decode.
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise DataError(f"{path}: a DICOM file; reading it needs pydicom: {_INSTALL}") from None
    try:
        dataset = pydicom.dcmread(path, force=path.suffix.lower() == DICOM_EXTENSION)
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({' '.join(str(exc).split())})") from None
    except Exception as exc:  # pydicom reports a truncated or garbled file in many types
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: unreadable or corrupt DICOM file ({reason})") from None
    if "PixelData" not in dataset:
        raise DataError(f"{path}: DICOM file without pixel data (PixelData) to read as an image")
    frames = dataset.get("NumberOfFrames")
    try:
        frame_count = 1 if frames in (None, "") else int(frames)
    except (TypeError, ValueError):
        raise DataError(f"{path}: unreadable NumberOfFrames {frames!r}") from None
    if frame_count != 1:
        raise DataError(
            f"{path}: multi-frame DICOM ({frame_count} frames); one image per file is supported"
        )
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        raise DataError(
            f"{path}: PhotometricInterpretation {photometric or 'missing'!r} is not supported "
            "(MONOCHROME1, MONOCHROME2 or RGB)"
        )
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed and not _can_decode(syntax):
        raise DataError(
            f"{path}: compressed transfer syntax {syntax.name} ({syntax}) and no pydicom "
            "decoder for it is installed (e.g. pylibjpeg with its plugins); decompress the file "
            "or install one"
        )
    try:
        pixels = np.asarray(dataset.pixel_array)
    except Exception as exc:  # truncated or garbled pixel data, an unknown syntax, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: pixel data does not decode ({reason})") from None
    expected = 3 if photometric == "RGB" else 2
    if pixels.ndim != expected or (expected == 3 and pixels.shape[-1] != 3):
        raise DataError(
            f"{path}: pixel data of shape {pixels.shape}, expected {expected} axes for "
            f"{photometric}"
        )
    if photometric == "RGB":
        return np.ascontiguousarray(_rgb(dataset, pixels))
    return _grey(dataset, pixels, path)
