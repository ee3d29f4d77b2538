"""Class probabilities of new images from a finished run: ``autorobust predict`` and
:func:`load_model`.

A run directory holds everything prediction needs: the model (``config.yaml``), its selected
weights and training standardisation (``checkpoint.pt``, read with ``weights_only=True``), the
classes and image shape (``data.json``) and the temperature fitted on the clean meta set
(``metrics.json``, ``calibration``). No training data is read.

Input images are preprocessed as in training: files are decoded like the ``image-folder`` source
(Pillow, RGB or grey, bilinear resize to the run's H x W), arrays of an ``.npz`` must already have
the run's (H, W) and are only given a channel axis; both are standardised with the checkpoint's
per-channel mean and standard deviation.

What the probabilities are: ``softmax(z / T)``, z the selected weights' raw logits and T the
temperature (1 with ``calibrated=False``). docs/running.md ("Predicting") says which posterior z
models under each loss.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from autorobust._io import atomic_write
from autorobust.data.sources.image_folder import IMAGE_EXTENSIONS, decode_images, is_image_file
from autorobust.data.tensors import Normalization, images_to_tensor, resolve_device
from autorobust.errors import AutorobustError, DataError
from autorobust.experiment import (
    DATA_NAME,
    METRICS_NAME,
    build_splits,
    config_fingerprint,
    load_run_config,
)
from autorobust.models import Classifier, create_model
from autorobust.train.calibration import softmax
from autorobust.train.trainer import CHECKPOINT_NAME, load_checkpoint

__all__ = [
    "ENSEMBLE_NAME",
    "LoadedEnsemble",
    "LoadedModel",
    "load_model",
    "predict_files",
    "read_inputs",
    "write_predictions",
]

_NPZ_KEYS = ("images", "test_images")  # the array an input .npz is read from, in this order


@dataclass(frozen=True)
class LoadedModel:
    """A run's selected weights, ready to predict.

    Attributes:
        model: the classifier, in eval mode, on ``device``.
        normalize: the per-channel standardisation it was trained with.
        class_names: the K class names, in label order.
        image_shape: (H, W, C) of the images it takes, in pixels and channels.
        temperature: T, dimensionless; 1.0 when loaded with ``calibrated=False``.
        device: where the model runs.
        run_dir: the run directory it was loaded from.
        prior_shift: float64 (K,) added to ``z / T`` before the softmax: ``-log π`` of the
            training labels' class frequencies π for a loss whose z learns their long-tailed
            prior (cross-entropy, focal, generalized CE), which turns the posterior into the
            balanced, uniform-prior one (Saerens et al., Neural Computation 2002); zeros for a
            loss that learns the balanced posterior already, or with ``balanced=False``.
    """

    model: Classifier
    normalize: Normalization
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    temperature: float
    device: torch.device
    run_dir: Path
    prior_shift: np.ndarray | None = None

    def logits(
        self, images: np.ndarray, *, batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """Raw logits z, float32 (N, K), of uint8 images (N, H, W, C) of :attr:`image_shape`."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"images must be uint8 (N, {', '.join(map(str, self.image_shape))}), got "
                f"{images.dtype} {images.shape}"
            )
        chunks = []
        self.model.eval()
        starts = range(0, len(images), batch_size)
        with torch.no_grad():
            for start in tqdm(starts, desc="predict", unit="batch", disable=not progress):
                batch = images_to_tensor(images[start : start + batch_size], self.device)
                chunks.append(self.model(self.normalize(batch)).float().cpu().numpy())
        if not chunks:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate(chunks)

    def predict_proba(
        self, images: np.ndarray, *, batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """Probabilities ``softmax(z / T + shift)``, float64 (N, K) summing to 1 per row, of
        uint8 images (N, H, W, C); ``shift`` is :attr:`prior_shift` (none: 0)."""
        logits = self.logits(images, batch_size=batch_size, progress=progress)
        scaled = np.asarray(logits, dtype=np.float64) / self.temperature
        if self.prior_shift is not None:
            scaled = scaled + self.prior_shift
        return softmax(scaled)


ENSEMBLE_NAME = "ensemble.json"
"""A run directory holding this file is an ensemble (``autorobust design`` keeps its finalists'
ensemble as ``best/``): ``members``, the member run directories relative to it."""


@dataclass(frozen=True)
class LoadedEnsemble:
    """An ensemble of finished runs: the mean of its members' probabilities.

    Attributes:
        members: the loaded member runs (same classes and image shape).
        run_dir: the ensemble's directory (the one holding ``ensemble.json``).
    """

    members: tuple[LoadedModel, ...]
    run_dir: Path

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.members[0].class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.members[0].image_shape

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def predict_proba(
        self, images: np.ndarray, *, batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """The mean over members of their probabilities (each ``softmax(z / T)`` with its own
        temperature), float64 (N, K), of uint8 images (N, H, W, C)."""
        return np.mean(
            [
                m.predict_proba(images, batch_size=batch_size, progress=progress)
                for m in self.members
            ],
            axis=0,
        )

    def logits(
        self, images: np.ndarray, *, batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """log of :meth:`predict_proba`, float32 (N, K): logits whose softmax is the ensemble's
        probabilities."""
        probabilities = self.predict_proba(images, batch_size=batch_size, progress=progress)
        return np.log(np.clip(probabilities, 1e-12, 1.0)).astype(np.float32)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AutorobustError(f"{path}: missing; is {path.parent} a finished autorobust run?")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AutorobustError(f"{path}: not valid JSON") from None
    if not isinstance(value, dict):
        raise AutorobustError(f"{path}: expected a JSON object")
    return value


def load_model(
    run_dir: str | Path, *, device: str = "cpu", calibrated: bool = True, balanced: bool = True
) -> LoadedModel | LoadedEnsemble:
    """The selected weights of the finished run in ``run_dir``, with its preprocessing; for a
    directory holding ``ensemble.json`` (a design's kept ensemble), every member's.

    Args:
        run_dir: a run directory written by ``autorobust train`` (or a search's ``best/``).
        device: "cpu", "cuda" or "auto".
        calibrated: divide the logits by the temperature fitted on the meta set
            (``metrics.json``, ``calibration.temperature``); False: T = 1, the raw softmax.
        balanced: for a loss whose logits learn the training labels' long-tailed prior
            (cross-entropy, focal, generalized CE), shift the posterior to the uniform prior
            (:attr:`LoadedModel.prior_shift`); False: the posterior under the training prior.

    Returns:
        :class:`LoadedModel`.

    Raises:
        AutorobustError: one line naming the file: no run there, a checkpoint of another
            config, or (with ``calibrated``) a run finished before calibration existed.
    """
    run_dir = Path(run_dir)
    if (run_dir / ENSEMBLE_NAME).is_file():
        return _load_ensemble(run_dir, device=device, calibrated=calibrated, balanced=balanced)
    return _load_run(run_dir, device=device, calibrated=calibrated, balanced=balanced)


def _load_ensemble(
    run_dir: Path, *, device: str, calibrated: bool, balanced: bool
) -> LoadedEnsemble:
    path = run_dir / ENSEMBLE_NAME
    members = _read_json(path).get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise AutorobustError(f"{path}: 'members' must be a non-empty list of run directories")
    loaded = []
    for member in members:
        member_dir = (run_dir / member).resolve()
        if run_dir.resolve() not in member_dir.parents:
            raise AutorobustError(f"{path}: member {member!r} lies outside {run_dir}")
        loaded.append(
            _load_run(member_dir, device=device, calibrated=calibrated, balanced=balanced)
        )
    if len({(m.class_names, m.image_shape) for m in loaded}) != 1:
        raise AutorobustError(f"{path}: its members differ in classes or image shape")
    return LoadedEnsemble(members=tuple(loaded), run_dir=run_dir)


# Losses whose logits learn the posterior under the training labels' own (long-tailed) prior.
LONG_TAILED_LOSSES = ("cross_entropy", "focal", "generalized_ce")


def _load_run(run_dir: Path, *, device: str, calibrated: bool, balanced: bool) -> LoadedModel:
    config = load_run_config(run_dir)
    resolved = resolve_device(device)
    data = _read_json(run_dir / DATA_NAME)
    temperature = 1.0
    if calibrated:
        metrics_path = run_dir / METRICS_NAME
        calibration = _read_json(metrics_path).get("calibration")
        if not isinstance(calibration, dict) or "temperature" not in calibration:
            raise AutorobustError(
                f"{metrics_path}: has no calibration.temperature (a run from an earlier "
                "version); retrain it, or predict without calibration (--no-calibration)"
            )
        temperature = float(calibration["temperature"])
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=resolved)
    if checkpoint["fingerprint"] != config_fingerprint(config):
        raise AutorobustError(f"{run_dir}: checkpoint and config.yaml do not belong together")
    stats = checkpoint.get("normalization")
    shape = data.get("image_shape")
    if stats is None or shape is None:  # a run from an earlier version: rebuild its splits
        pool = build_splits(config).train.images
        shape = list(pool.shape[1:])
        if stats is None:
            stats = {k: list(v) for k, v in vars(Normalization.from_images(pool)).items()}
    normalize = Normalization(tuple(stats["mean"]), tuple(stats["std"]))
    height, width, channels = (int(v) for v in shape)
    class_names = tuple(str(name) for name in data["class_names"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # as build_model: the weights are replaced below
        model = create_model(
            config.model.name,
            num_classes=len(class_names),
            in_channels=channels,
            **config.model.options,
        )
    model.load_state_dict(checkpoint["best_model"])
    model.to(resolved).eval()
    return LoadedModel(
        model=model,
        normalize=normalize,
        class_names=class_names,
        image_shape=(height, width, channels),
        temperature=temperature,
        device=resolved,
        run_dir=run_dir,
        prior_shift=_prior_shift(config, data) if balanced else None,
    )


def _prior_shift(config: Any, data: dict[str, Any]) -> np.ndarray | None:
    """``-log π`` (K,) of the training labels' class frequencies for a long-tailed loss (a
    class without labels gets the rarest present class's shift), or None."""
    if config.loss.name not in LONG_TAILED_LOSSES or config.method != "erm":
        return None
    counts = np.asarray(data.get("train_class_counts") or [], dtype=np.float64)
    if counts.size == 0 or counts.sum() <= 0:
        return None
    counts = np.where(counts > 0, counts, counts[counts > 0].min())
    return -np.log(counts / counts.sum())


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and is_image_file(path)
    )
    if not files:
        raise DataError(f"{folder}: holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _csv_files(path: Path, column: str) -> tuple[list[str], list[Path]]:
    names, files = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            if not reader.fieldnames or column not in reader.fieldnames:
                found = ", ".join(reader.fieldnames or []) or "no header"
                raise DataError(f"{path}: no column {column!r} of image paths; found {found}")
            for row in reader:
                name = (row.get(column) or "").strip()
                where = f"{path} line {reader.line_num}"
                if not name:
                    raise DataError(f"{where}: empty {column}")
                file = Path(name).expanduser()
                file = file if file.is_absolute() else path.parent / file
                if not file.is_file():
                    raise DataError(f"{where}: image {name!r} not found")
                names.append(name)
                files.append(file)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from None
    if not files:
        raise DataError(f"{path}: CSV has a header but no rows")
    return names, files


def _npz_images(path: Path, image_shape: tuple[int, int, int]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = next((k for k in _NPZ_KEYS if k in archive.files), None)
            if key is None:
                raise DataError(
                    f"{path}: no array {' or '.join(_NPZ_KEYS)}; found "
                    f"{', '.join(archive.files) or 'none'}"
                )
            images = archive[key]
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:  # not a zip, object arrays, truncated
        raise DataError(f"{path}: not a readable .npz archive of plain arrays ({exc})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != image_shape:
        raise DataError(
            f"{path}: {key} must be (N, {', '.join(map(str, image_shape))}) like the run's "
            f"training images, got {images.shape}"
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or (
            images.size and (images.min() < 0 or images.max() > 255)
        ):
            raise DataError(f"{path}: {key} must hold integers 0..255, got {images.dtype}")
        images = images.astype(np.uint8)
    return images


def read_inputs(
    path: str | Path, image_shape: tuple[int, int, int], *, image_column: str = "image"
) -> tuple[list[str], np.ndarray]:
    """The images of ``predict``'s INPUT, preprocessed to the run's shape.

    Args:
        path: a folder of images (searched recursively; hidden entries skipped), a ``.csv``
            whose ``image_column`` names image files (relative to the CSV's folder, or
            absolute), or an ``.npz`` whose ``images`` (else ``test_images``) array holds uint8
            (N, H, W) or (N, H, W, C) images of the run's shape.
        image_shape: the run's (H, W, C).
        image_column: the CSV column of image paths.

    Returns:
        (a name per image: its path relative to the folder, its CSV entry, or its index in the
        archive; uint8 images (N, H, W, C)).

    Raises:
        DataError: one line naming ``path`` (or the file, CSV line) and the problem.
    """
    path = Path(path).expanduser()
    height, width, channels = image_shape
    if path.is_dir():
        files = _image_files(path)
        names = [file.relative_to(path).as_posix() for file in files]
    elif path.is_file() and path.suffix.lower() == ".csv":
        names, files = _csv_files(path, image_column)
    elif path.is_file() and path.suffix.lower() == ".npz":
        images = _npz_images(path, image_shape)
        return [str(i) for i in range(len(images))], images
    elif not path.exists():
        raise DataError(f"{path}: not found; INPUT is an image folder, a .csv or an .npz")
    else:
        raise DataError(
            f"{path}: not an image folder, a .csv of image paths or an .npz archive of images"
        )
    return names, decode_images(files, height=height, width=width, channels=channels)


def write_predictions(
    path: str | Path,
    names: Sequence[str],
    class_names: Sequence[str],
    probabilities: np.ndarray,
) -> Path:
    """Write one CSV row per image, atomically: ``image``, ``predicted`` (the class name of the
    highest probability), then ``p_<class>`` for every class (probabilities (N, K) in [0, 1])."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "predicted", *(f"p_{name}" for name in class_names)])
    predicted = probabilities.argmax(axis=1) if len(probabilities) else []
    for name, row, best in zip(names, probabilities, predicted, strict=True):
        writer.writerow([name, class_names[int(best)], *(f"{p:.6g}" for p in row)])
    data = buffer.getvalue().encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def predict_files(
    run_dir: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    device: str = "cpu",
    calibrated: bool = True,
    balanced: bool = True,
    batch_size: int = 256,
    image_column: str = "image",
    progress: bool = True,
) -> Path:
    """``autorobust predict``: class probabilities of INPUT's images written to ``output``.

    Args:
        run_dir: the finished run (see :func:`load_model`).
        input_path: an image folder, a CSV of image paths or an ``.npz`` (see
            :func:`read_inputs`).
        output: the CSV to write (see :func:`write_predictions`); replaced atomically.
        device: "cpu", "cuda" or "auto".
        calibrated: use the run's temperature (False: T = 1).
        balanced: the uniform-prior posterior for a long-tailed loss (see :func:`load_model`).
        batch_size: images per forward pass, >= 1.
        image_column: the column of image paths of a CSV input.
        progress: show a progress bar over the batches.

    Returns:
        The path written.

    Raises:
        AutorobustError: a bad run directory or INPUT, in one line naming it.
    """
    if batch_size < 1:
        raise AutorobustError(f"--batch-size: must be >= 1, got {batch_size}")
    loaded = load_model(run_dir, device=device, calibrated=calibrated, balanced=balanced)
    names, images = read_inputs(input_path, loaded.image_shape, image_column=image_column)
    probabilities = loaded.predict_proba(images, batch_size=batch_size, progress=progress)
    return write_predictions(output, names, loaded.class_names, probabilities)
