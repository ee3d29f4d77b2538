"""The user's own trusted set: an image folder's ``meta/<class>/``, a CSV's trusted rows or
``meta_csv``, an ``.npz``'s ``meta_images`` become the meta set, and only they."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import autorobust
from autorobust.data.sources import ImageFolderSource, NpzSource
from autorobust.data.splits import make_splits
from autorobust.errors import DataError

CLASSES = ("cat", "dog")


def grey(path: Path, value: int) -> Path:
    """A 4 x 4 grey PNG of one intensity: the value identifies the image after loading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), value).save(path)
    return path


def values(images: np.ndarray) -> list[int]:
    """The identifying intensity of every image (N, H, W, 1), sorted."""
    return sorted(int(v) for v in images[:, 0, 0, 0])


# Untrusted images have values 10..99, trusted ones 200..; class c gets 10 * c + i / 100 + ...
UNTRUSTED = {"cat": [10, 11, 12, 13, 14, 15], "dog": [50, 51, 52, 53, 54, 55]}
TRUSTED = {"cat": [200, 201], "dog": [220]}


def check_meta(source_data, splits) -> None:
    trusted = sorted(v for vs in TRUSTED.values() for v in vs)
    assert values(source_data.meta.images) == trusted
    assert values(splits.meta.images) == trusted
    assert splits.meta.labels.tolist() == [0, 0, 1]  # in the order the source gives them
    assert splits.meta_trusted and splits.meta_index.shape == (0,)
    assert splits.summary()["meta_source"] == "trusted"
    every = set(values(splits.train.images)) | set(values(splits.test.images))
    assert not every & set(trusted)  # neither trained on nor tested on
    assert every == {v for vs in UNTRUSTED.values() for v in vs}  # nothing drawn away


def test_image_folder_meta_folder(tmp_path: Path) -> None:
    for name in CLASSES:
        for v in UNTRUSTED[name]:
            grey(tmp_path / "train" / name / f"{v}.png", v)
        for v in TRUSTED[name]:
            grey(tmp_path / "meta" / name / f"{v}.png", v)
    data = ImageFolderSource(root=tmp_path, image_size=4, channels=1).load()
    assert data.metadata["meta_files"][0].endswith("200.png")
    check_meta(data, make_splits(data, meta_per_class=2, seed=0))


def test_image_folder_meta_folder_must_name_training_classes(tmp_path: Path) -> None:
    grey(tmp_path / "train" / "cat" / "1.png", 1)
    grey(tmp_path / "train" / "cat" / "2.png", 2)
    grey(tmp_path / "meta" / "owl" / "3.png", 3)
    with pytest.raises(DataError, match=r"meta/owl: class 'owl' has no folder"):
        ImageFolderSource(root=tmp_path, image_size=4).load()


def write_csv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    path.write_text("\n".join(",".join(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_csv_trusted_column(tmp_path: Path) -> None:
    rows = [("image", "label", "trusted")]
    for name in CLASSES:
        for v in UNTRUSTED[name]:
            rows.append((f"{grey(tmp_path / f'{v}.png', v).name}", name, ""))
        for v in TRUSTED[name]:
            rows.append((f"{grey(tmp_path / f'{v}.png', v).name}", name, "yes"))
    data = ImageFolderSource(
        train_csv=write_csv(tmp_path / "labels.csv", rows), image_size=4, channels=1
    ).load()
    check_meta(data, make_splits(data, meta_per_class=2, seed=0))


def test_csv_separate_meta_csv(tmp_path: Path) -> None:
    rows = [("image", "label")]
    meta_rows = [("image", "label")]
    for name in CLASSES:
        rows += [(grey(tmp_path / f"{v}.png", v).name, name) for v in UNTRUSTED[name]]
        meta_rows += [(grey(tmp_path / f"{v}.png", v).name, name) for v in TRUSTED[name]]
    data = ImageFolderSource(
        train_csv=write_csv(tmp_path / "labels.csv", rows),
        meta_csv=write_csv(tmp_path / "trusted.csv", meta_rows),
        image_size=4,
        channels=1,
    ).load()
    check_meta(data, make_splits(data, meta_per_class=2, seed=0))


def test_csv_bad_trusted_value_names_the_line(tmp_path: Path) -> None:
    grey(tmp_path / "a.png", 1)
    csv = write_csv(tmp_path / "l.csv", [("image", "label", "trusted"), ("a.png", "cat", "maybe")])
    with pytest.raises(DataError, match=r"l.csv line 2: trusted must be 1/true/yes"):
        ImageFolderSource(train_csv=csv, image_size=4).load()


def npz_arrays() -> dict[str, np.ndarray]:
    def block(table: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
        flat = [(c, v) for c, name in enumerate(CLASSES) for v in table[name]]
        images = np.array([np.full((4, 4), v, np.uint8) for _, v in flat])
        return images, np.array([c for c, _ in flat])

    train_images, train_labels = block(UNTRUSTED)
    meta_images, meta_labels = block(TRUSTED)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": train_images[:0],
        "test_labels": train_labels[:0],
        "meta_images": meta_images,
        "meta_labels": meta_labels,
    }


def test_npz_meta_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", **npz_arrays())
    data = NpzSource(path=tmp_path / "d.npz").load()
    assert data.metadata["ignored_keys"] == ()
    check_meta(data, make_splits(data, meta_per_class=2, seed=0))


def test_npz_half_a_pair_is_refused(tmp_path: Path) -> None:
    arrays = npz_arrays()
    del arrays["meta_labels"]
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=r"d.npz: has meta_images but no meta_labels"):
        NpzSource(path=tmp_path / "d.npz").load()


def test_a_trusted_set_without_a_class_is_refused(tmp_path: Path) -> None:
    arrays = npz_arrays()
    arrays["meta_labels"] = np.zeros_like(arrays["meta_labels"])
    np.savez(tmp_path / "d.npz", **arrays)
    data = NpzSource(path=tmp_path / "d.npz").load()
    with pytest.raises(DataError, match=r"d.npz: the trusted set has no image of class 1 \('1'\)"):
        make_splits(data, meta_per_class=1, seed=0)


def test_the_simulated_shift_path_keeps_its_draw() -> None:
    config = autorobust.load_config("demo", ["device=cpu"])
    splits = autorobust.build_splits(config)
    assert not splits.meta_trusted and splits.summary()["meta_source"] == "drawn"
    assert len(splits.meta_index) == len(splits.meta) > 0


@pytest.mark.parametrize("trusted", [False, True])
def test_real_data_without_a_trusted_set_is_named_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trusted: bool
) -> None:
    arrays = npz_arrays()
    arrays["test_images"], arrays["test_labels"] = arrays["train_images"], arrays["train_labels"]
    if not trusted:
        del arrays["meta_images"], arrays["meta_labels"]
    np.savez(tmp_path / "d.npz", **arrays)
    config = autorobust.load_config(
        "demo",
        [
            "data.source=npz",
            f"data.options={{path: {tmp_path / 'd.npz'}}}",
            "data.meta_per_class=1",
            "shift.imbalance=none",
            "shift.rho=1",
            "shift.noise=none",
            "shift.noise_rate=0",
            "device=cpu",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="autorobust"):
        splits = autorobust.build_splits(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert splits.meta_trusted is trusted
    if trusted:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "\n" not in warnings[0]
        assert "drawn from unverified labels" in warnings[0]
