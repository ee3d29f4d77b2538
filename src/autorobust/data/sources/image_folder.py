"""Images on disk: a folder per class, or a folder of images with a CSV of labels (ISIC layout)."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

import numpy as np

from autorobust.data.base import DataSource, ImageDataset, SourceData, register_source
from autorobust.data.sources._common import (
    check_fraction,
    check_positive_int,
    check_seed,
    resolve_path,
    stratified_holdout,
)
from autorobust.data.sources._dicom import decode_dicom, has_dicom_preamble, is_dicom
from autorobust.errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderSource", "decode_images", "is_image_file"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".dcm")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_TRUE = ("1", "true", "yes", "y", "t")
_FALSE = ("", "0", "false", "no", "n", "f")


@dataclass
class _Entries:
    """The rows of one split before decoding: files, raw labels and raw groups."""

    where: list[str]  # "<csv> line <n>" or the class folder, for error messages
    files: list[Path]
    labels: list[str]
    groups: list[str] | None
    trusted: list[bool] | None = None  # a CSV's trusted column, when it has one

    def take(self, keep: list[bool]) -> _Entries:
        """The rows where ``keep`` is True."""
        rows = [i for i, k in enumerate(keep) if k]
        return _Entries(
            [self.where[i] for i in rows],
            [self.files[i] for i in rows],
            [self.labels[i] for i in rows],
            None if self.groups is None else [self.groups[i] for i in rows],
        )

    def __add__(self, other: _Entries) -> _Entries:
        both = self.groups is not None and other.groups is not None
        return _Entries(
            self.where + other.where,
            self.files + other.files,
            self.labels + other.labels,
            self.groups + other.groups if both else None,  # type: ignore[operator]
        )


def is_image_file(path: Path) -> bool:
    """Whether the file ``path`` is read as an image: one of :data:`IMAGE_EXTENSIONS` (any case),
    or a DICOM file of another name (the 128-byte preamble and "DICM")."""
    return path.suffix.lower() in IMAGE_EXTENSIONS or has_dicom_preamble(path)


def _refuse_conflicting_labels(entries: _Entries) -> None:
    """One image listed with two different labels is refused (a CSV that cannot be trusted to
    say which is right), naming both rows; the same image twice with one label is kept."""
    first: dict[Path, tuple[str, str]] = {}
    for where, file, label in zip(entries.where, entries.files, entries.labels, strict=True):
        seen = first.setdefault(file.resolve(), (label, where))
        if seen[0] != label:
            raise DataError(
                f"{where}: image {file.name!r} is labelled {label!r}, but {seen[1]} labels it "
                f"{seen[0]!r}"
            )


def _check_inside(name: str, image_dir: Path, where: str) -> None:
    """Refuse an image name that is absolute or climbs out of ``image_dir`` with ``..``.

    A CSV may come from elsewhere than the images; its rows must not make the loader read files
    outside the image folder. The check is on the name as written (``a/../b.png`` stays inside):
    symbolic links placed in the folder by its owner are followed.
    """
    pure = PurePath(name)
    if pure.is_absolute() or pure.anchor or PureWindowsPath(name).anchor:
        raise DataError(
            f"{where}: image path {name!r} is absolute; name images relative to {image_dir}"
        )
    depth = 0
    for part in pure.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            raise DataError(
                f"{where}: image path {name!r} leads outside the image folder {image_dir}"
            )


@register_source("image-folder")
class ImageFolderSource(DataSource):
    """Image files decoded with Pillow, from class folders or from a CSV of ``image,label`` rows.

    **Class folders** (when ``train_csv`` is None): ``root/train/<class>/*`` and optionally
    ``root/test/<class>/*``; when ``root`` has no ``train`` folder, its own sub-folders are the
    classes. Class names are the sorted folder names of the training split; a test folder must
    name one of them.

    **CSV** (``train_csv`` given; e.g. ISIC): each row names an image in ``image_dir`` (default:
    the CSV's folder), with or without its extension, and a label, either a class name or an
    integer class index. Integer labels give ``max + 1`` classes named "0", "1", ...; names give
    the sorted names found in the training CSV. An optional group column (e.g. a sensitive
    attribute, integer or name) becomes ``ImageDataset.groups``; names are coded in sorted order
    and listed in ``metadata["group_names"]``.

    **Trusted set** (images whose labels were checked by hand): a ``meta/<class>/`` folder next
    to ``train/`` (class folders), or, in the CSV layout, the rows whose ``trusted_column`` holds
    1 / true / yes, and every row of ``meta_csv``. These images become the meta / validation set
    (``SourceData.meta``) instead of a random draw from the (unverified) training labels; they
    are neither trained on nor held out for test.

    Without a test folder or ``test_csv``, a stratified ``test_fraction`` of every class is held
    out with ``default_rng(split_seed)``. Files with extensions .png, .jpg, .jpeg and .bmp (any
    case) are read, converted to RGB (``channels=3``) or grey (``channels=1``) and resized
    bilinearly to ``image_size`` x ``image_size``. DICOM files (.dcm, or any name with the DICM
    preamble; the ``dicom`` extra) are rescaled and windowed to 8 bits first (RescaleSlope and
    RescaleIntercept, then the first WindowCenter/WindowWidth, else the image's min-max;
    MONOCHROME1 inverted); multi-frame files, compressed ones without a decoder and files
    without pixel data are refused, naming the file.

    Args:
        root: class-folder tree; default ``~/.cache/autorobust/image-folder``.
        train_csv: CSV of the training images (selects the CSV layout).
        test_csv: CSV of the test images (CSV layout only).
        image_dir: folder of the images named in the CSVs.
        image_column: CSV column naming the image file.
        label_column: CSV column holding the label.
        group_column: optional CSV column holding a group attribute (ignored when absent).
        trusted_column: optional column of ``train_csv`` marking trusted rows (1 / true / yes;
            0 / false / no / empty for the others); ignored when absent.
        meta_csv: CSV of trusted images (same columns as ``train_csv``; CSV layout only).
        class_names: the classes in label order; CSV labels may then be these names or indices.
        channels: 3 (RGB) or 1 (grey).
        image_size: side in pixels of the square output images.
        test_fraction: fraction of each class held out when no test split is given, in (0, 1).
        split_seed: seed of that hold-out.

    ``load`` returns images uint8 (N, image_size, image_size, channels) and labels int64.
    """

    description = "image files: class folders root/train/<class>/ or a CSV image,label[,group]"
    user_data = True
    default_root = "~/.cache/autorobust/image-folder"

    def __init__(
        self,
        *,
        root: str | Path | None = None,
        train_csv: str | Path | None = None,
        test_csv: str | Path | None = None,
        image_dir: str | Path | None = None,
        image_column: str = "image",
        label_column: str = "label",
        group_column: str = "group",
        trusted_column: str = "trusted",
        meta_csv: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        channels: int = 3,
        image_size: int = 32,
        test_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        if train_csv is None and (
            test_csv is not None or image_dir is not None or meta_csv is not None
        ):
            raise ConfigError(
                "image-folder: test_csv and image_dir need train_csv (so does meta_csv)"
            )
        if train_csv is not None and root is not None:
            raise ConfigError(
                "image-folder: pass either root (class folders) or train_csv, not both"
            )
        if channels not in (1, 3):
            raise ConfigError(f"image-folder: channels must be 1 or 3, got {channels!r}")
        if class_names is not None and (isinstance(class_names, str) or len(class_names) == 0):
            raise ConfigError(
                f"image-folder: class_names must be a non-empty list of names, got {class_names!r}"
            )
        self.root = root
        self.train_csv = train_csv
        self.test_csv = test_csv
        self.image_dir = image_dir
        self.image_column = image_column
        self.label_column = label_column
        self.group_column = group_column
        self.trusted_column = trusted_column
        self.meta_csv = meta_csv
        self.class_names = None if class_names is None else tuple(str(n) for n in class_names)
        self.channels = channels
        self.image_size = check_positive_int("image-folder", "image_size", image_size)
        self.test_fraction = check_fraction("image-folder", "test_fraction", test_fraction)
        self.split_seed = check_seed("image-folder", "split_seed", split_seed)

    # ----------------------------------------------------------------------------------- paths
    def _csv_paths(self) -> tuple[Path, Path | None, Path]:
        train_csv = Path(self.train_csv).expanduser()  # type: ignore[arg-type]
        test_csv = None if self.test_csv is None else Path(self.test_csv).expanduser()
        image_dir = resolve_path(self.image_dir, train_csv.parent)
        return train_csv, test_csv, image_dir

    def required_files(self) -> list[Path]:
        """The root folder, or the CSV file(s) and the image folder (not each image)."""
        if self.train_csv is None:
            return [resolve_path(self.root, self.default_root)]
        train_csv, test_csv, image_dir = self._csv_paths()
        meta_csv = [] if self.meta_csv is None else [Path(self.meta_csv).expanduser()]
        return [train_csv, *([] if test_csv is None else [test_csv]), *meta_csv, image_dir]

    # ----------------------------------------------------------------------- class folders
    def _scan_folders(
        self,
    ) -> tuple[_Entries, _Entries | None, _Entries | None, dict[str, str]]:
        root = resolve_path(self.root, self.default_root)
        if not root.is_dir():
            raise DataError(f"{root}: folder not found; pass root= a folder of class folders")
        train_dir = root / "train" if (root / "train").is_dir() else root
        test_dir = root / "test" if train_dir != root and (root / "test").is_dir() else None
        train = self._scan_split(train_dir, allowed=None)
        classes = sorted(set(train.labels))
        test = None if test_dir is None else self._scan_split(test_dir, allowed=classes)
        meta_dir = root / "meta" if train_dir != root and (root / "meta").is_dir() else None
        meta = None if meta_dir is None else self._scan_split(meta_dir, allowed=classes)
        return train, test, meta, {"layout": "folders", "root": str(root)}

    def _scan_split(self, split_dir: Path, allowed: list[str] | None) -> _Entries:
        class_dirs = sorted(
            path for path in split_dir.iterdir() if path.is_dir() and not path.name.startswith(".")
        )
        if not class_dirs:
            raise DataError(f"{split_dir}: no class folders found")
        entries = _Entries([], [], [], None)
        for class_dir in class_dirs:
            if allowed is not None and class_dir.name not in allowed:
                raise DataError(
                    f"{class_dir}: class {class_dir.name!r} has no folder in the training split"
                )
            files = sorted(
                path for path in class_dir.iterdir() if path.is_file() and is_image_file(path)
            )
            if not files:
                raise DataError(
                    f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            entries.where += [str(class_dir)] * len(files)
            entries.files += files
            entries.labels += [class_dir.name] * len(files)
        return entries

    # -------------------------------------------------------------------------------- CSV
    def _scan_csvs(
        self,
    ) -> tuple[_Entries, _Entries | None, _Entries | None, dict[str, str]]:
        train_csv, test_csv, image_dir = self._csv_paths()
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: image folder not found (image_dir)")
        train = self._read_csv(train_csv, image_dir, trusted=True)
        test = None if test_csv is None else self._read_csv(test_csv, image_dir)
        meta = None
        if train.trusted is not None and any(train.trusted):
            meta = train.take(train.trusted)
            train = train.take([not t for t in train.trusted])
            if not train.files:
                raise DataError(f"{train_csv}: every row is trusted; no training image is left")
        if self.meta_csv is not None:
            extra = self._read_csv(Path(self.meta_csv).expanduser(), image_dir)
            meta = extra if meta is None else meta + extra
        info = {"layout": "csv", "train_csv": str(train_csv), "image_dir": str(image_dir)}
        if test_csv is not None:
            info["test_csv"] = str(test_csv)
        if self.meta_csv is not None:
            info["meta_csv"] = str(Path(self.meta_csv).expanduser())
        return train, test, meta, info

    def _read_csv(self, path: Path, image_dir: Path, *, trusted: bool = False) -> _Entries:
        if not path.is_file():
            raise DataError(f"{path}: CSV file not found")
        try:
            with path.open(newline="", encoding="utf-8-sig") as stream:
                reader = csv.DictReader(stream)
                columns = reader.fieldnames
                if not columns:
                    raise DataError(
                        f"{path}: empty CSV, expected a header with columns "
                        f"{self.image_column}, {self.label_column}"
                    )
                missing = [c for c in (self.image_column, self.label_column) if c not in columns]
                if missing:
                    raise DataError(
                        f"{path}: missing column(s) {', '.join(missing)}; "
                        f"found {', '.join(columns)}"
                    )
                has_groups = self.group_column in columns
                has_trusted = trusted and self.trusted_column in columns
                entries = _Entries(
                    [], [], [], [] if has_groups else None, [] if has_trusted else None
                )
                for row in reader:
                    where = f"{path} line {reader.line_num}"
                    entries.where.append(where)
                    entries.files.append(self._find_image(row, image_dir, where))
                    entries.labels.append(self._cell(row, self.label_column, where))
                    if entries.groups is not None:
                        entries.groups.append(self._cell(row, self.group_column, where))
                    if entries.trusted is not None:
                        entries.trusted.append(self._flag(row, self.trusted_column, where))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: unreadable CSV ({exc})") from None
        if not entries.files:
            raise DataError(f"{path}: CSV has a header but no rows")
        _refuse_conflicting_labels(entries)
        return entries

    @staticmethod
    def _cell(row: dict[str, str | None], column: str, where: str) -> str:
        value = (row.get(column) or "").strip()
        if not value:
            raise DataError(f"{where}: empty {column}")
        return value

    @staticmethod
    def _flag(row: dict[str, str | None], column: str, where: str) -> bool:
        value = (row.get(column) or "").strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise DataError(
            f"{where}: {column} must be 1/true/yes or 0/false/no (or empty), got {value!r}"
        )

    def _find_image(self, row: dict[str, str | None], image_dir: Path, where: str) -> Path:
        name = self._cell(row, self.image_column, where)
        _check_inside(name, image_dir, where)
        candidates = [image_dir / name]
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            candidates += [image_dir / f"{name}{ext}" for ext in IMAGE_EXTENSIONS]
            candidates += [image_dir / f"{name}{ext.upper()}" for ext in IMAGE_EXTENSIONS]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise DataError(
            f"{where}: image {name!r} not found in {image_dir} (tried {len(candidates)} names)"
        )

    # ------------------------------------------------------------------------ labels, groups
    def _label_codes(
        self, train: _Entries, *others: _Entries
    ) -> tuple[list[np.ndarray], tuple[str, ...]]:
        splits = [train, *others]
        if self.class_names is not None:
            names = self.class_names
            index = {name: i for i, name in enumerate(names)}
            codes = []
            for split in splits:
                values = []
                for where, label in zip(split.where, split.labels, strict=True):
                    if label in index:
                        values.append(index[label])
                    elif _INTEGER.fullmatch(label) and 0 <= int(label) < len(names):
                        values.append(int(label))
                    else:
                        raise DataError(
                            f"{where}: label {label!r} is neither one of the {len(names)} "
                            "class_names nor an index into them"
                        )
                codes.append(np.asarray(values, dtype=np.int64))
            return codes, names
        every = [label for split in splits for label in split.labels]
        if all(_NUMBER.fullmatch(label) for label in every):
            # A numeric label column holds class indices: 1.5 is a typo, not a class named "1.5".
            for split in splits:
                for where, label in zip(split.where, split.labels, strict=True):
                    if not _INTEGER.fullmatch(label):
                        raise DataError(
                            f"{where}: label {label!r} is not an integer, but the label column "
                            "is numeric (class indices must be integers)"
                        )
        if all(_INTEGER.fullmatch(label) for label in every):
            for split in splits:
                for where, label in zip(split.where, split.labels, strict=True):
                    if int(label) < 0:
                        raise DataError(f"{where}: label {label} is negative, expected >= 0")
            codes = [np.asarray([int(v) for v in split.labels], dtype=np.int64) for split in splits]
            num_classes = max(int(code.max()) for code in codes) + 1
            return codes, tuple(str(i) for i in range(num_classes))
        names = tuple(sorted(set(train.labels)))
        index = {name: i for i, name in enumerate(names)}
        codes = [np.asarray([index.get(v, -1) for v in train.labels], dtype=np.int64)]
        for other in others:
            for where, label in zip(other.where, other.labels, strict=True):
                if label not in index:
                    raise DataError(
                        f"{where}: label {label!r} does not occur in the training split"
                    )
            codes.append(np.asarray([index[v] for v in other.labels], dtype=np.int64))
        return codes, names

    @staticmethod
    def _group_codes(
        train: _Entries, *others: _Entries
    ) -> tuple[list[np.ndarray | None], tuple[str, ...] | None]:
        splits = [train, *others]
        every = [g for split in splits if split.groups is not None for g in split.groups]
        if not every:
            return [None] * len(splits), None
        if all(_INTEGER.fullmatch(g) for g in every):
            return [
                None if s.groups is None else np.asarray([int(g) for g in s.groups], np.int64)
                for s in splits
            ], None
        names = tuple(sorted(set(every)))
        index = {name: i for i, name in enumerate(names)}
        return [
            None if s.groups is None else np.asarray([index[g] for g in s.groups], np.int64)
            for s in splits
        ], names

    # ------------------------------------------------------------------------------ decode
    def _decode(self, files: list[Path]) -> np.ndarray:
        size = self.image_size
        return decode_images(files, height=size, width=size, channels=self.channels)

    def load(self) -> SourceData:
        """Scan, check and decode the images; raise :class:`DataError` naming a faulty file."""
        if self.train_csv is None:
            train, test, meta, info = self._scan_folders()
        else:
            train, test, meta, info = self._scan_csvs()
        others = [split for split in (test, meta) if split is not None]
        label_codes, class_names = self._label_codes(train, *others)
        group_codes, group_names = self._group_codes(train, *others)
        meta_set = None
        if meta is not None:
            at = len(others)  # the meta set is the last of the codes
            meta_set = ImageDataset(self._decode(meta.files), label_codes[at], group_codes[at])
        full_train = ImageDataset(self._decode(train.files), label_codes[0], group_codes[0])
        train_files = [str(p) for p in train.files]
        if test is None:
            train_index, test_index = stratified_holdout(
                label_codes[0], self.test_fraction, self.split_seed
            )
            train_set, test_set = full_train.subset(train_index), full_train.subset(test_index)
            test_files = [train_files[i] for i in test_index]
            train_files = [train_files[i] for i in train_index]
        else:
            train_set = full_train
            test_set = ImageDataset(self._decode(test.files), label_codes[1], group_codes[1])
            test_files = [str(p) for p in test.files]
        metadata: dict[str, object] = {
            "source": "image-folder",
            **info,
            "train_files": tuple(train_files),
            "test_files": tuple(test_files),
        }
        if group_names is not None:
            metadata["group_names"] = group_names
        if meta is not None:
            metadata["meta_files"] = tuple(str(p) for p in meta.files)
        return SourceData(
            train=train_set,
            test=test_set,
            class_names=class_names,
            metadata=metadata,
            meta=meta_set,
        )


def decode_images(files: Sequence[Path], *, height: int, width: int, channels: int) -> np.ndarray:
    """Decode image files as the image-folder source does: Pillow, converted to RGB
    (``channels=3``) or grey (``channels=1``), resized bilinearly to ``width`` x ``height``.
    DICOM files (``.dcm``, or the DICM preamble) are first read with pydicom and rescaled and
    windowed to 8 bits (see ``autorobust.data.sources._dicom``).

    Args:
        files: the N image files.
        height: H, output rows in pixels.
        width: W, output columns in pixels.
        channels: C, 1 or 3.

    Returns:
        uint8 (N, H, W, C).

    Raises:
        DataError: one line naming a file that is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError  # imported when images are read

    mode = "RGB" if channels == 3 else "L"
    images = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            if is_dicom(path):  # rescaled and windowed to 8 bits, then as any other image
                converted = Image.fromarray(decode_dicom(path)).convert(mode)
            else:
                with Image.open(path) as image:
                    converted = image.convert(mode)
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
        except DataError:  # a DICOM file's own one-line refusal
            raise
        except UnidentifiedImageError:
            raise DataError(f"{path}: not a readable image (unknown or corrupt format)") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None
        images[i] = pixels.reshape(height, width, channels)
    return images
