"""``autorobust export``: ONNX and torch.export files of a tiny digits run agree with load_model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import autorobust
from autorobust.cli import main
from autorobust.errors import AutorobustError

TOLERANCE = 1e-5  # max |p_exported - p_load_model| on the test images, probability units


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """(a finished digits run, 5 of its test images uint8 (5, 8, 8, 1))."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    config = autorobust.load_config(
        "demo",
        [
            "train.epochs=1",
            "train.progress=false",
            "train.threads=1",
            "device=cpu",
            "model.options.width=4",
            f"run_dir={run_dir}",
        ],
    )
    splits = autorobust.build_splits(config)
    autorobust.train_run(config, splits=splits, evaluate_test=False)
    return run_dir, splits.test.images[:5]


def check_description(path: Path, export_format: str) -> None:
    description = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    assert description["format"] == export_format and description["file"] == path.name
    assert description["class_names"] == [str(i) for i in range(10)]
    assert description["input"]["shape"] == ["N", 8, 8, 1]
    assert description["input"]["dtype"] == "uint8"
    assert description["output"]["shape"] == ["N", 10]
    assert 0 <= description["check"]["max_abs_difference"] <= 1e-4


def test_pt2_gives_load_models_probabilities(run, tmp_path: Path) -> None:
    run_dir, images = run
    path = autorobust.export_model(run_dir, "pt2", tmp_path / "m.pt2")
    check_description(path, "pt2")
    loaded = autorobust.load_model(run_dir)
    assert loaded.temperature != 1.0
    program = torch.export.load(io.BytesIO(path.read_bytes()))  # a file written just above
    with torch.no_grad():
        for batch in (images, images[:1]):  # the batch axis is dynamic
            exported = program.module()(torch.from_numpy(batch)).numpy()
            np.testing.assert_allclose(exported, loaded.predict_proba(batch), atol=TOLERANCE)
            assert exported.dtype == np.float32
            np.testing.assert_allclose(exported.sum(axis=1), 1.0, atol=1e-6)


def test_onnx_gives_load_models_probabilities_via_the_cli(run, tmp_path: Path, capsys) -> None:
    onnxruntime = pytest.importorskip(
        "onnxruntime", reason="ONNX export needs the export extra: pip install -e '.[export]'"
    )
    pytest.importorskip("onnxscript", reason="ONNX export needs the export extra")
    run_dir, images = run
    path = tmp_path / "out" / "m.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "-o", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {path} and {path}.json"
    check_description(path, "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    loaded = autorobust.load_model(run_dir)
    for batch in (images, images[:2]):
        (exported,) = session.run(["probabilities"], {"images": batch})
        np.testing.assert_allclose(exported, loaded.predict_proba(batch), atol=TOLERANCE)
    raw = tmp_path / "raw.onnx"
    argv = ["export", str(run_dir), "--format", "onnx", "-o", str(raw), "--no-calibration"]
    assert main(argv) == 0
    session = onnxruntime.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    (exported,) = session.run(["probabilities"], {"images": images})
    uncalibrated = autorobust.load_model(run_dir, calibrated=False).predict_proba(images)
    np.testing.assert_allclose(exported, uncalibrated, atol=TOLERANCE)


def test_a_bad_run_dir_or_format_is_one_line(run, tmp_path: Path, capsys) -> None:
    run_dir, _ = run
    out = tmp_path / "m.pt2"
    assert main(["export", str(run_dir), "--format", "tflite", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "autorobust: error: --format: must be one of onnx, pt2, got 'tflite'"
    )
    assert main(["export", str(tmp_path / "nowhere"), "--format", "pt2", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nowhere") in err
    assert not out.exists() and not Path(f"{out}.json").exists()
    with pytest.raises(AutorobustError, match="must be one of onnx, pt2"):
        autorobust.export_model(run_dir, "ONNX")
