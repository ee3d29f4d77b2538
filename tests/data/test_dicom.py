"""DICOM files in the image-folder source: rescale, window, MONOCHROME1, RGB and refusals.

The files are written here with pydicom (explicit VR little endian, a few pixels each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="DICOM needs the dicom extra: pip install -e '.[dicom]'")

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

import autorobust
from autorobust.data.sources import ImageFolderSource
from autorobust.data.sources._dicom import decode_dicom
from autorobust.data.sources.image_folder import decode_images
from autorobust.errors import DataError


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    preamble: bool = True,
    syntax: str = ExplicitVRLittleEndian,
    **elements: object,
) -> Path:
    """Write ``pixels`` (uint16/int16 (H, W) or uint8 (H, W, 3)) as a one-frame DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    else:
        ds.SamplesPerPixel = 1
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes() if "PixelData" not in elements else elements["PixelData"]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble)
    return path


STORED = np.array([[0, 100, 200], [300, 400, 1000]], dtype=np.uint16)


def test_rescale_then_the_linear_window_exactly(tmp_path: Path) -> None:
    # rescaled: x * 2 - 1000 = [[-1000, -800, -600], [-400, -200, 1000]]
    # window c = -500, w = 401: y = ((x + 500.5) / 400 + 0.5) * 255, clipped, rounded
    path = write_dicom(
        tmp_path / "a.dcm",
        STORED,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=[-500, 40],  # multi-valued: the first is used
        WindowWidth=[401, 80],
    )
    # -600: (-99.5 / 400 + 0.5) * 255 = 64.07; -400: (100.5 / 400 + 0.5) * 255 = 191.57
    assert decode_dicom(path).tolist() == [[0, 0, 64], [192, 255, 255]]


def test_linear_exact_and_sigmoid_windows(tmp_path: Path) -> None:
    exact = write_dicom(
        tmp_path / "e.dcm", STORED, WindowCenter=200, WindowWidth=400, VOILUTFunction="LINEAR_EXACT"
    )
    # ((x - 200) / 400 + 0.5) * 255: 0 -> 0, 100 -> 63.75, 200 -> 127.5, 300 -> 191.25
    assert decode_dicom(exact).tolist() == [[0, 64, 128], [191, 255, 255]]
    sigmoid = write_dicom(
        tmp_path / "s.dcm", STORED, WindowCenter=200, WindowWidth=400, VOILUTFunction="SIGMOID"
    )
    x = STORED.astype(np.float64)
    expected = np.rint(255 / (1 + np.exp(-4 * (x - 200) / 400))).astype(int)
    assert decode_dicom(sigmoid).tolist() == expected.tolist()


def test_without_a_window_min_max_of_the_rescaled_signed_pixels(tmp_path: Path) -> None:
    signed = np.array([[-50, 0], [50, 150]], dtype=np.int16)
    path = write_dicom(tmp_path / "m.dcm", signed, RescaleSlope=0.5, RescaleIntercept=10)
    # rescaled [[-15, 10], [35, 85]]: (x + 15) / 100 * 255
    assert decode_dicom(path).tolist() == [[0, 64], [128, 255]]
    flat = write_dicom(tmp_path / "flat.dcm", np.full((2, 2), 7, dtype=np.uint16))
    assert decode_dicom(flat).tolist() == [[0, 0], [0, 0]]


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "inv.dcm", STORED, photometric="MONOCHROME1")
    # min-max: 0 100 200 300 400 1000 -> 0 25.5 51 76.5 102 255, rounded half to even
    # (numpy rint) 0 26 51 76 102 255, then 255 - y
    assert decode_dicom(path).tolist() == [[255, 229, 204], [179, 153, 0]]


def test_rgb_is_taken_as_it_is_and_resized_like_any_image(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 10, 30
    rgb[0, 0] = (1, 2, 3)
    path = write_dicom(tmp_path / "c.dcm", rgb, photometric="RGB")
    assert decode_dicom(path).tolist() == rgb.tolist()
    images = decode_images([path], height=2, width=2, channels=3)
    assert images.shape == (1, 2, 2, 3) and images[0, 1, 1].tolist() == [200, 10, 30]
    grey = decode_images([path], height=4, width=4, channels=1)
    # ITU-R 601 luma, as for PNGs: 0.299 * 200 + 0.587 * 10 + 0.114 * 30 = 69.09
    assert grey[0, 3, 3, 0] == 69


def test_a_file_with_the_preamble_needs_no_extension_and_dcm_needs_no_preamble(
    tmp_path: Path,
) -> None:
    named = write_dicom(tmp_path / "IM0001", STORED, WindowCenter=500, WindowWidth=1001)
    bare = write_dicom(tmp_path / "raw.dcm", STORED, preamble=False)
    assert decode_dicom(named)[0, 0] == 0 and decode_dicom(bare)[1, 2] == 255
    grey = decode_images([named, bare], height=2, width=3, channels=1)
    assert grey.shape == (2, 2, 3, 1) and grey[1, :, :, 0].tolist() == [[0, 26, 51], [76, 102, 255]]


# One of the malformed files makes pydicom guess its VR encoding aloud before refusing it.
@pytest.mark.filterwarnings("ignore:Expected implicit VR, but found explicit VR:UserWarning")
def test_corrupt_or_unsupported_files_are_refused_in_one_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.dcm"  # a file cut short in its header: pydicom reads what is there
    cut.write_bytes(write_dicom(cut, STORED).read_bytes()[:300])
    text = tmp_path / "notes.dcm"
    text.write_text("not DICOM at all\n")
    no_pixels = write_dicom(tmp_path / "nopix.dcm", STORED)
    from pydicom import dcmread

    dataset = dcmread(no_pixels)
    del dataset.PixelData
    dataset.save_as(no_pixels)
    frames = write_dicom(
        tmp_path / "frames.dcm", np.zeros((2, 2, 2), np.uint16).reshape(2, 4), NumberOfFrames=2
    )
    compressed = write_dicom(
        tmp_path / "jls.dcm",
        STORED,
        syntax=JPEGLSLossless,
        PixelData=encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"]),
    )
    truncated = write_dicom(tmp_path / "short.dcm", STORED, PixelData=STORED.tobytes()[:4])
    palette = write_dicom(tmp_path / "pal.dcm", STORED, photometric="PALETTE COLOR")
    expected = {
        cut: "DICOM file without pixel data (PixelData)",
        text: "DICOM file without pixel data (PixelData)",
        no_pixels: "DICOM file without pixel data (PixelData)",
        frames: "multi-frame DICOM (2 frames); one image per file is supported",
        compressed: "compressed transfer syntax JPEG-LS Lossless Image Compression "
        "(1.2.840.10008.1.2.4.80) and no pydicom decoder for it is installed",
        truncated: "pixel data does not decode",
        palette: "PhotometricInterpretation 'PALETTE COLOR' is not supported",
    }
    for path, message in expected.items():
        with pytest.raises(DataError) as info:
            decode_images([path], height=2, width=3, channels=1)
        text = str(info.value)
        assert text.startswith(f"{path}: {message}") and "\n" not in text, text


def test_class_folders_and_a_csv_of_dicoms(tmp_path: Path) -> None:
    square = np.array([[0, 100], [300, 1000]], dtype=np.uint16)  # min-max: 0 26 76 255
    for i, name in enumerate(("IM1", "IM2.dcm", "IM3.DCM")):
        write_dicom(tmp_path / "train" / "lung" / name, square + i)
    write_dicom(tmp_path / "train" / "bone" / "b.dcm", square, photometric="MONOCHROME1")
    (tmp_path / "train" / "bone" / "notes.txt").write_text("not an image")
    for name in ("bone", "lung"):
        write_dicom(tmp_path / "test" / name / "t.dcm", square)
    data = ImageFolderSource(root=tmp_path, image_size=2, channels=1).load()
    assert data.class_names == ("bone", "lung") and data.train.labels.tolist() == [0, 1, 1, 1]
    assert data.train.images[0, :, :, 0].tolist() == [[255, 229], [179, 0]]
    assert data.train.images[1, :, :, 0].tolist() == [[0, 26], [76, 255]]
    assert data.metadata["train_files"][1].endswith("IM1")
    # CSV layout: a name without extension finds the .dcm; an extensionless DICOM by its name
    csv = tmp_path / "train" / "lung" / "labels.csv"
    csv.write_text("image,label\nIM2,lung\nIM1,lung\nIM3.DCM,other\n")
    data = ImageFolderSource(train_csv=csv, test_csv=csv, image_size=2).load()
    assert data.train.images.shape == (3, 2, 2, 3) and data.class_names == ("lung", "other")
    assert data.train.images[1, 1, 1].tolist() == [255, 255, 255]
    assert data.train.images[1, 0, 1].tolist() == [26, 26, 26]


def test_an_image_folder_of_dicoms_trains_one_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label, (name, level) in enumerate((("dark", 100), ("bright", 900))):
        for i in range(12):
            pixels = rng.normal(level, 60, size=(8, 8)).clip(0, 1000).astype(np.uint16)
            write_dicom(
                tmp_path / "data" / name / f"{i}.dcm",
                pixels,
                photometric="MONOCHROME1" if i % 2 else "MONOCHROME2",
                RescaleIntercept=-label,
                WindowCenter=500,
                WindowWidth=1000,
            )
    config = autorobust.load_config(
        "demo",
        [
            "data.source=image-folder",
            f"data.options.root={tmp_path / 'data'}",
            "data.options.image_size=8",
            "data.options.channels=1",
            "data.meta_per_class=2",
            "shift.imbalance=none",
            "shift.noise=none",
            "shift.rho=1",
            "shift.noise_rate=0",
            "train.epochs=1",
            "train.progress=false",
            "train.threads=1",
            "device=cpu",
            "model.options.width=4",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    result = autorobust.train_run(config)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert result.test["num_samples"] > 0
