"""A finished run as one standalone file: ``autorobust export`` and :func:`export_model`.

The exported graph is the whole of prediction, so a deployment needs neither autorobust nor the
run directory:

- input ``images``: uint8 (N, H, W, C), the run's image shape (``data.json``, ``image_shape``),
  pixel values 0..255 exactly as the training data held them (and as :func:`read_inputs` decodes
  files); N is dynamic;
- inside: to float in [0, 1], the checkpoint's per-channel standardisation, the selected
  weights, division of the logits by the run's temperature T (``metrics.json``,
  ``calibration``; T = 1 with ``calibrated=False``) and a softmax;
- output ``probabilities``: float32 (N, K), ``softmax(z / T)`` over the K classes in label order,
  what ``load_model(run_dir).predict_proba`` gives.

Formats: ``onnx`` (torch.onnx's dynamo exporter; needs the ``export`` extra: onnx, onnxscript,
onnxruntime) and ``pt2`` (``torch.export.save``; torch only). Beside the file, ``FILE.json``
holds the class names, the input and output description, T and the standardisation. Each file is
written atomically; before writing, the serialised bytes are loaded back (onnxruntime, or
``torch.export.load``) and their outputs on a few seeded random images are compared with
``load_model(run_dir).predict_proba``: a difference above :data:`TOLERANCE` refuses the export
and writes nothing.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autorobust import __version__
from autorobust._io import atomic_write
from autorobust.errors import AutorobustError
from autorobust.inference import LoadedEnsemble, LoadedModel, load_model

__all__ = ["FORMATS", "TOLERANCE", "CalibratedClassifier", "EnsembleClassifier", "export_model"]

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4  # max |p_exported - p_in_memory| over the check images, probability units
_CHECK_IMAGES = 8  # seeded random images the written file is checked on
_INSTALL = "pip install 'autorobust[export]'"


class CalibratedClassifier(torch.nn.Module):
    """A classifier with its preprocessing and temperature: what is exported.

    ``forward``: uint8 images (N, H, W, C) -> float32 probabilities (N, K) summing to 1 per row.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.model = loaded.model
        shape = (1, -1, 1, 1)
        mean = torch.tensor(loaded.normalize.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(loaded.normalize.std, dtype=torch.float32).view(shape)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean.to(loaded.device))
        self.register_buffer("std", std.to(loaded.device))
        self.temperature = float(loaded.temperature)
        k = len(loaded.class_names)
        shift = np.zeros(k) if loaded.prior_shift is None else loaded.prior_shift
        self.shift: torch.Tensor
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).to(loaded.device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) pixel values 0..255 -> float32 (N, K) ``softmax(z / T)``."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        logits = self.model(x).float()
        return torch.softmax(logits / self.temperature + self.shift, dim=1)


class EnsembleClassifier(torch.nn.Module):
    """The mean of its members' :class:`CalibratedClassifier` probabilities (a design's kept
    ensemble). ``forward``: uint8 (N, H, W, C) -> float32 (N, K) summing to 1 per row."""

    def __init__(self, loaded: LoadedEnsemble) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(CalibratedClassifier(m) for m in loaded.members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) pixel values 0..255 -> float32 (N, K), the members' mean."""
        return torch.stack([member(images) for member in self.members]).mean(dim=0)


def _check_images(shape: tuple[int, int, int]) -> torch.Tensor:
    generator = np.random.default_rng(0)
    pixels = generator.integers(0, 256, size=(_CHECK_IMAGES, *shape), dtype=np.uint8)
    return torch.from_numpy(pixels)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise AutorobustError(
            f"--format onnx: needs onnx, onnxscript and onnxruntime ({exc.name} is missing); "
            f"run {_INSTALL}"
        ) from None


def _export_onnx(
    module: torch.nn.Module, example: torch.Tensor, path: Path
) -> tuple[bytes, np.ndarray]:
    """``module`` as ONNX bytes, and onnxruntime's outputs of them on ``example``."""
    import onnx
    import onnxruntime

    batch = torch.export.Dim.DYNAMIC
    # the exporter logs every torchvision operator it skips, and torch's own deprecations
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    try:
        registration.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_shapes={"images": {0: batch}},
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter reports unsupported operators in many types
        raise AutorobustError(
            f"{path}: torch.onnx.export failed ({' '.join(str(exc).split())[:300]})"
        ) from None
    finally:
        registration.setLevel(level)
    if program is None:  # only the legacy exporter returns None
        raise AutorobustError(f"{path}: torch.onnx.export returned no program")
    proto = program.model_proto
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["probabilities"], {"images": example.cpu().numpy()})
    return data, np.asarray(outputs)


def _export_pt2(
    module: torch.nn.Module, example: torch.Tensor, path: Path
) -> tuple[bytes, np.ndarray]:
    """``module`` as a torch.export archive's bytes, and the outputs on ``example`` of the
    program loaded back from them."""
    batch = torch.export.Dim.DYNAMIC
    try:
        program = torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}})
    except Exception as exc:  # unsupported Python in the model's forward, in many types
        raise AutorobustError(
            f"{path}: torch.export failed ({' '.join(str(exc).split())[:300]})"
        ) from None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    _refuse_pickled_payloads(data, path)
    reloaded = torch.export.load(io.BytesIO(data))  # raw tensors and JSON only (checked above)
    with torch.no_grad():
        outputs = reloaded.module()(example)
    return data, outputs.detach().float().cpu().numpy()


def _refuse_pickled_payloads(data: bytes, path: Path) -> None:
    """Refuse a .pt2 archive whose weights or constants would be read back with pickle.

    ``torch.export.save`` stores plain tensors as raw bytes described by JSON; only tensor
    subclasses and opaque objects go through pickle, which ``torch.export.load`` would unpickle.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        configs = [
            name
            for name in archive.namelist()
            if name.endswith(".json") and ("weights_config" in name or "constants_config" in name)
        ]
        if any(_uses_pickle(json.loads(archive.read(name))) for name in configs):
            raise AutorobustError(
                f"{path}: the model holds tensors torch.export would pickle; not exported"
            )


def _uses_pickle(value: Any) -> bool:
    """Whether a parsed payload config marks any entry ``"use_pickle": true``."""
    if isinstance(value, dict):
        return value.get("use_pickle") is True or any(_uses_pickle(v) for v in value.values())
    if isinstance(value, list):
        return any(_uses_pickle(v) for v in value)
    return False


def _describe(
    loaded: LoadedModel | LoadedEnsemble, export_format: str, path: Path, difference: float
) -> dict[str, Any]:
    if isinstance(loaded, LoadedEnsemble):
        described = _describe(loaded.members[0], export_format, path, difference)
        described["output"]["values"] = (
            "the mean over the ensemble's members of their calibrated class probabilities "
            "softmax(z / T), classes in class_names order, each row summing to 1"
        )
        described["members"] = [
            {
                "run_dir": str(m.run_dir),
                "temperature": m.temperature,
                "normalization": {"mean": list(m.normalize.mean), "std": list(m.normalize.std)},
            }
            for m in loaded.members
        ]
        for key in ("temperature", "normalization", "prior_shift"):
            del described[key]
        described["run_dir"] = str(loaded.run_dir)
        return described
    height, width, channels = loaded.image_shape
    return {
        "format": export_format,
        "file": path.name,
        "class_names": list(loaded.class_names),
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": ["N", height, width, channels],
            "layout": "NHWC",
            "values": "pixel intensities 0..255 as the run's training images (grey: C = 1)",
        },
        "output": {
            "name": "probabilities",
            "dtype": "float32",
            "shape": ["N", len(loaded.class_names)],
            "values": "calibrated class probabilities softmax(z / T + prior_shift), classes in "
            "class_names "
            "order, each row summing to 1",
        },
        "temperature": loaded.temperature,
        "prior_shift": None if loaded.prior_shift is None else loaded.prior_shift.tolist(),
        "normalization": {"mean": list(loaded.normalize.mean), "std": list(loaded.normalize.std)},
        "check": {
            "images": _CHECK_IMAGES,
            "max_abs_difference": difference,
            "tolerance": TOLERANCE,
            "against": "the run's model in autorobust (load_model(...).predict_proba)",
        },
        "run_dir": str(loaded.run_dir),
        "autorobust_version": __version__,
        "torch_version": torch.__version__,
    }


def export_model(
    run_dir: str | Path,
    export_format: str,
    output: str | Path | None = None,
    *,
    calibrated: bool = True,
    balanced: bool = True,
) -> Path:
    """Export the finished run in ``run_dir`` as one file taking uint8 images and giving
    calibrated class probabilities (see the module docstring), plus ``FILE.json`` beside it.

    Args:
        run_dir: a run directory written by ``autorobust train`` (or a search's ``best/``).
        export_format: "onnx" or "pt2".
        output: the file to write; default ``model.onnx`` / ``model.pt2`` in the current folder.
        calibrated: divide the logits by the run's temperature (False: T = 1).
        balanced: include the shift to the uniform-prior posterior of a long-tailed loss
            (:func:`autorobust.load_model`).

    Returns:
        The path of the model file (its description is that path + ``.json``).

    Raises:
        AutorobustError: one line: an unknown format, a bad run directory (naming the file),
            the ``export`` extra missing for ONNX, an export that fails or disagrees with the
            model in memory by more than :data:`TOLERANCE`.
    """
    if export_format not in FORMATS:
        raise AutorobustError(
            f"--format: must be one of {', '.join(FORMATS)}, got {export_format!r}"
        )
    if export_format == "onnx":
        _require_onnx()
    path = Path(output if output is not None else f"model.{export_format}").expanduser()
    loaded = load_model(run_dir, device="cpu", calibrated=calibrated, balanced=balanced)
    module = (
        EnsembleClassifier(loaded)
        if isinstance(loaded, LoadedEnsemble)
        else CalibratedClassifier(loaded)
    ).eval()
    example = _check_images(loaded.image_shape)
    expected = loaded.predict_proba(example.numpy())
    with torch.random.fork_rng(devices=[]):
        if export_format == "onnx":
            model_bytes, outputs = _export_onnx(module, example, path)
        else:
            model_bytes, outputs = _export_pt2(module, example, path)
    if outputs.shape != expected.shape:
        raise AutorobustError(
            f"{path}: the exported model gives shape {outputs.shape}, expected {expected.shape}"
        )
    difference = float(np.abs(outputs.astype(np.float64) - expected).max())
    if not difference <= TOLERANCE:
        raise AutorobustError(
            f"{path}: the exported model's probabilities differ from the run's by {difference:.3g} "
            f"(> {TOLERANCE:g}); not exported"
        )
    description = json.dumps(_describe(loaded, export_format, path, difference), indent=2)
    data = (description + "\n").encode("utf-8")
    atomic_write(path, lambda handle: handle.write(model_bytes))
    atomic_write(path.with_name(path.name + ".json"), lambda handle: handle.write(data))
    return path
