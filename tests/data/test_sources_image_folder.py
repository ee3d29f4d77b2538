"""The image-folder source on small generated PNG / JPEG / BMP files, folders and CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autorobust.data.sources import ImageFolderSource
from autorobust.errors import ConfigError, DataError

COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "eel": (10, 10, 200)}


def save(path: Path, colour: tuple[int, int, int], size: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def make_tree(root: Path, counts: dict[str, int], ext: str = ".png") -> None:
    for name, count in counts.items():
        for i in range(count):
            save(root / name / f"{name}{i}{ext}", COLOURS[name])


def test_class_folders_with_a_test_split(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"cat": 3, "dog": 2})
    make_tree(tmp_path / "test", {"dog": 1, "cat": 2})
    data = ImageFolderSource(root=tmp_path, image_size=4).load()
    assert data.class_names == ("cat", "dog")
    assert data.train.images.shape == (5, 4, 4, 3) and data.test.images.shape == (3, 4, 4, 3)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.test.labels.tolist() == [0, 0, 1]
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    # a solid colour stays the same colour after the bilinear resize
    assert data.train.images[0, 2, 3].tolist() == [200, 10, 10]
    assert data.test.images[2, 0, 0].tolist() == [10, 200, 10]
    assert data.train.groups is None
    assert data.metadata["layout"] == "folders"
    assert data.metadata["test_files"][0].endswith("cat0.png")


def test_grey_output_and_other_formats(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"cat": 2}, ext=".jpg")
    make_tree(tmp_path / "train", {"eel": 2}, ext=".BMP")
    make_tree(tmp_path / "test", {"eel": 1}, ext=".jpeg")
    data = ImageFolderSource(root=tmp_path, channels=1, image_size=6).load()
    assert data.train.images.shape == (4, 6, 6, 1)
    # ITU-R 601 luma of the BMP's exact (10, 10, 200): 0.299*10 + 0.587*10 + 0.114*200 = 31.66
    assert data.train.images[2, 3, 3, 0] == 32
    assert data.test.labels.tolist() == [1]


def test_without_a_test_folder_a_stratified_share_is_held_out(tmp_path: Path) -> None:
    make_tree(tmp_path, {"cat": 5, "dog": 10, "eel": 2})
    source = ImageFolderSource(root=tmp_path, image_size=2, test_fraction=0.2, split_seed=3)
    data = source.load()
    assert data.class_names == ("cat", "dog", "eel")
    assert np.bincount(data.test.labels).tolist() == [1, 2, 1]
    assert np.bincount(data.train.labels).tolist() == [4, 8, 1]
    again = source.load()
    assert again.metadata["test_files"] == data.metadata["test_files"]
    held_out = {Path(f).name for f in data.metadata["test_files"]}
    assert held_out.isdisjoint(Path(f).name for f in data.metadata["train_files"])


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def make_csv_images(image_dir: Path) -> None:
    save(image_dir / "ISIC_1.jpg", COLOURS["cat"], size=8)
    save(image_dir / "ISIC_2.png", COLOURS["dog"], size=8)
    save(image_dir / "ISIC_3.png", COLOURS["dog"], size=8)
    save(image_dir / "ISIC_4.png", COLOURS["cat"], size=8)


def test_csv_with_names_groups_and_a_test_csv(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    make_csv_images(image_dir)
    train_csv = write_csv(
        tmp_path / "train.csv",
        "image,label,group\nISIC_1,nevus,female\nISIC_2.png,melanoma,male\nISIC_3,melanoma,female\n",
    )
    test_csv = write_csv(tmp_path / "test.csv", "label,image,group\nnevus,ISIC_4,male\n")
    source = ImageFolderSource(
        train_csv=train_csv, test_csv=test_csv, image_dir=image_dir, image_size=4
    )
    assert source.required_files() == [train_csv, test_csv, image_dir]
    data = source.load()
    assert data.class_names == ("melanoma", "nevus")
    assert data.train.labels.tolist() == [1, 0, 0] and data.test.labels.tolist() == [1]
    assert data.metadata["group_names"] == ("female", "male")
    assert data.train.groups is not None and data.train.groups.tolist() == [0, 1, 0]
    assert data.test.groups is not None and data.test.groups.tolist() == [1]
    # JPEG is lossy: the decoded colour is only close to the saved one
    assert np.abs(data.train.images[0, 1, 1].astype(int) - [200, 10, 10]).max() <= 8
    assert data.test.images.shape == (1, 4, 4, 3)


def test_csv_with_integer_labels_and_a_held_out_split(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    csv = write_csv(
        tmp_path / "labels.csv", "image,label\nISIC_1,0\nISIC_2,2\nISIC_3,2\nISIC_4,0\n"
    )
    data = ImageFolderSource(train_csv=csv, image_size=3, test_fraction=0.5).load()
    assert data.class_names == ("0", "1", "2")
    assert sorted(data.test.labels.tolist()) == [0, 2]
    assert sorted(data.train.labels.tolist()) == [0, 2]
    assert data.metadata["image_dir"] == str(tmp_path)


def test_a_numeric_label_column_must_hold_integers(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    csv = write_csv(tmp_path / "labels.csv", "image,label\nISIC_1,0\nISIC_2,1.5\nISIC_3,1\n")
    with pytest.raises(
        DataError, match=r"labels\.csv line 3: label '1\.5' is not an integer, but the label "
    ):
        ImageFolderSource(train_csv=csv).load()
    # Names that merely contain digits are names.
    csv = write_csv(tmp_path / "names.csv", "image,label\nISIC_1,1.5mm\nISIC_2,2mm\n")
    data = ImageFolderSource(train_csv=csv, test_fraction=0.5).load()
    assert data.class_names == ("1.5mm", "2mm")


def test_an_image_with_two_labels_is_refused_naming_both_rows(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    csv = write_csv(tmp_path / "l.csv", "image,label\nISIC_1,a\nISIC_2,b\nISIC_1.jpg,b\n")
    with pytest.raises(
        DataError,
        match=r"l\.csv line 4: image 'ISIC_1\.jpg' is labelled 'b', but .*l\.csv line 2 labels "
        r"it 'a'$",
    ):
        ImageFolderSource(train_csv=csv).load()
    # Listed twice with the same label: kept (a duplicate row, not a contradiction).
    csv = write_csv(tmp_path / "d.csv", "image,label\nISIC_1,a\nISIC_2,b\nISIC_1,a\nISIC_3,b\n")
    data = ImageFolderSource(train_csv=csv, test_fraction=0.5).load()
    assert len(data.train.labels) + len(data.test.labels) == 4


def test_csv_labels_may_use_given_class_names_or_indices(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    csv = write_csv(tmp_path / "l.csv", "image,label\nISIC_1,b\nISIC_2,0\nISIC_3,a\nISIC_4,2\n")
    data = ImageFolderSource(train_csv=csv, class_names=["a", "b", "c"], test_fraction=0.25).load()
    labels = sorted([*data.train.labels.tolist(), *data.test.labels.tolist()])
    assert labels == [0, 0, 1, 2] and data.class_names == ("a", "b", "c")


def test_csv_naming_an_absent_image_names_the_line(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    csv = write_csv(tmp_path / "train.csv", "image,label\nISIC_1,a\nISIC_9,b\n")
    with pytest.raises(DataError, match=r"train\.csv line 3: image 'ISIC_9' not found in "):
        ImageFolderSource(train_csv=csv).load()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../outside.png", "leads outside the image folder"),
        ("sub/../../outside.png", "leads outside the image folder"),
        ("{outside}", "is absolute"),
        ("C:\\data\\outside.png", "is absolute"),
    ],
)
def test_csv_image_paths_must_stay_inside_the_image_folder(
    tmp_path: Path, name: str, problem: str
) -> None:
    images = tmp_path / "images"
    make_csv_images(images)
    outside = save(tmp_path / "outside.png", COLOURS["cat"])  # present: it would have been read
    name = name.format(outside=outside)
    csv = write_csv(images / "train.csv", f"image,label\nISIC_1,a\n{name},b\n")
    with pytest.raises(DataError) as info:
        ImageFolderSource(train_csv=csv, test_fraction=0.5).load()
    assert str(info.value).startswith(f"{csv} line 3: image path {name!r} {problem}")


def test_csv_image_paths_may_name_sub_folders(tmp_path: Path) -> None:
    save(tmp_path / "a" / "x.png", COLOURS["cat"])
    save(tmp_path / "b" / "y.png", COLOURS["dog"])
    csv = write_csv(tmp_path / "train.csv", "image,label\na/x.png,0\na/../b/y.png,1\n./a/x,0\n")
    data = ImageFolderSource(train_csv=csv, image_size=2, test_fraction=0.34).load()
    assert len(data.train) + len(data.test) == 3


def test_csv_missing_a_column_lists_the_columns(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    csv = write_csv(tmp_path / "meta.csv", "image_id,diagnosis\nISIC_1,a\n")
    with pytest.raises(
        DataError, match=r"meta\.csv: missing column\(s\) image, label; found image_id, diagnosis"
    ):
        ImageFolderSource(train_csv=csv).load()


def test_csv_errors_for_empty_cells_and_unknown_test_labels(tmp_path: Path) -> None:
    make_csv_images(tmp_path)
    empty = write_csv(tmp_path / "empty.csv", "image,label\nISIC_1,\n")
    with pytest.raises(DataError, match=r"empty\.csv line 2: empty label"):
        ImageFolderSource(train_csv=empty).load()
    train = write_csv(tmp_path / "train.csv", "image,label\nISIC_1,a\nISIC_2,b\n")
    test = write_csv(tmp_path / "test.csv", "image,label\nISIC_3,c\n")
    with pytest.raises(DataError, match=r"test\.csv line 2: label 'c' does not occur"):
        ImageFolderSource(train_csv=train, test_csv=test).load()
    missing = tmp_path / "nothing.csv"
    with pytest.raises(DataError, match=r"nothing\.csv: CSV file not found"):
        ImageFolderSource(train_csv=missing).load()


def test_corrupt_and_truncated_images_are_named(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    (tmp_path / "train" / "dog" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image"):
        ImageFolderSource(root=tmp_path).load()
    (tmp_path / "train" / "dog" / "bad.png").unlink()
    big = save(tmp_path / "train" / "cat" / "big.png", (1, 2, 3), size=64)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)
    raw = big.read_bytes()
    big.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"big\.png: unreadable or corrupt image"):
        ImageFolderSource(root=tmp_path).load()


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: folder not found"):
        ImageFolderSource(root=tmp_path / "nowhere").load()
    make_tree(tmp_path / "train", {"cat": 2})
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"dog: class folder holds no images"):
        ImageFolderSource(root=tmp_path).load()
    (tmp_path / "train" / "dog" / "notes.txt").unlink()
    (tmp_path / "train" / "dog").rmdir()
    make_tree(tmp_path / "test", {"eel": 1})
    with pytest.raises(DataError, match=r"eel: class 'eel' has no folder in the training split"):
        ImageFolderSource(root=tmp_path).load()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 2}, "channels must be 1 or 3, got 2"),
        ({"image_size": 0}, "image_size must be an integer >= 1, got 0"),
        ({"test_csv": "t.csv"}, "test_csv and image_dir need train_csv"),
        ({"root": "r", "train_csv": "t.csv"}, "pass either root"),
        ({"test_fraction": 1.0}, "test_fraction must be a number in"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=f"image-folder: {message}"):
        ImageFolderSource(**options)  # type: ignore[arg-type]
