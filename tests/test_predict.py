"""``autorobust predict`` and ``autorobust.load_model`` on a tiny trained digits run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import autorobust
from autorobust.cli import main
from autorobust.data.tensors import images_to_tensor
from autorobust.experiment import load_best_model
from autorobust.train.trainer import predict

N = 12  # test images predicted


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(run directory, N digits test images uint8 (N, 8, 8, 1), their raw logits by hand)."""
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    config = autorobust.load_config(
        "demo",
        [
            "train.epochs=2",
            "train.progress=false",
            "train.threads=1",
            "device=cpu",
            "model.options.width=8",
            f"run_dir={run_dir}",
        ],
    )
    splits = autorobust.build_splits(config)
    autorobust.train_run(config, splits=splits, evaluate_test=False)
    images = splits.test.images[:N]
    model, normalize, _ = load_best_model(config, splits)
    with torch.no_grad():
        logits = predict(model, images_to_tensor(images), normalize).numpy()
    return run_dir, images, logits


def by_hand(logits: np.ndarray, temperature: float, run_dir: Path | None = None) -> np.ndarray:
    """softmax(z / T), or with ``run_dir`` (the demo trains with cross-entropy on a long tail)
    the posterior moved to the uniform prior: p(y | x) / π(y), renormalised, π the training
    labels' class frequencies in data.json."""
    z = logits.astype(np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    if run_dir is not None:
        data = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
        prior = np.asarray(data["train_class_counts"], dtype=np.float64)
        p = p / (prior / prior.sum())
        p = p / p.sum(axis=1, keepdims=True)
    return p


def temperature_of(run_dir: Path) -> float:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return float(metrics["calibration"]["temperature"])


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    return rows[0], rows[1:]


def test_load_model_gives_the_calibrated_probabilities_of_the_model_by_hand(run) -> None:
    run_dir, images, logits = run
    loaded = autorobust.load_model(run_dir)
    t = temperature_of(run_dir)
    assert loaded.temperature == t and t != 1.0
    assert loaded.image_shape == (8, 8, 1)
    assert loaded.class_names == tuple(str(i) for i in range(10))
    np.testing.assert_allclose(loaded.logits(images, batch_size=5), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_proba(images), by_hand(logits, t, run_dir), atol=1e-6)
    raw = autorobust.load_model(run_dir, calibrated=False, balanced=False)
    assert raw.temperature == 1.0 and raw.prior_shift is None
    np.testing.assert_allclose(raw.predict_proba(images), by_hand(logits, 1.0), atol=1e-6)
    # Under the training prior (balanced=False) the calibrated posterior is softmax(z / T).
    prior = autorobust.load_model(run_dir, balanced=False)
    np.testing.assert_allclose(prior.predict_proba(images), by_hand(logits, t), atol=1e-6)


def check_csv(path: Path, names: list[str], expected: np.ndarray) -> None:
    header, rows = read_csv(path)
    assert header == ["image", "predicted", *(f"p_{i}" for i in range(10))]
    assert [row[0] for row in rows] == names
    probabilities = np.array([[float(v) for v in row[2:]] for row in rows])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert [row[1] for row in rows] == [str(c) for c in expected.argmax(axis=1)]


def test_predict_an_npz(run, tmp_path: Path, capsys) -> None:
    run_dir, images, logits = run
    np.savez(tmp_path / "new.npz", images=images[..., 0])  # (N, H, W): a channel axis is added
    out = tmp_path / "out" / "p.csv"
    code = main(
        ["predict", str(run_dir), str(tmp_path / "new.npz"), "-o", str(out), "--no-progress"]
    )
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    check_csv(out, [str(i) for i in range(N)], by_hand(logits, temperature_of(run_dir), run_dir))


def test_predict_an_image_folder_and_a_csv(run, tmp_path: Path) -> None:
    run_dir, images, logits = run
    folder = tmp_path / "images"
    names = []
    for i, image in enumerate(images):
        name = f"{'ab'[i % 2]}/img{i:02d}.png"  # PNG is lossless, 8 x 8 grey: no resize
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0], mode="L").save(folder / name)
        names.append(name)
    order = np.argsort(names)  # the folder is read in sorted path order
    out = tmp_path / "folder.csv"
    assert main(["predict", str(run_dir), str(folder), "-o", str(out), "--no-progress"]) == 0
    expected = by_hand(logits, temperature_of(run_dir), run_dir)
    check_csv(out, [names[i] for i in order], expected[order])

    listing = tmp_path / "list.csv"
    listing.write_text("file\n" + "".join(f"images/{n}\n" for n in names), encoding="utf-8")
    out = tmp_path / "list-out.csv"
    args = ["predict", str(run_dir), str(listing), "-o", str(out), "--image-column", "file"]
    assert main([*args, "--no-calibration", "--no-progress"]) == 0
    check_csv(out, [f"images/{n}" for n in names], by_hand(logits, 1.0, run_dir))
    # --no-balance: the posterior under the training labels' long-tailed prior.
    assert main([*args, "--no-calibration", "--no-balance", "--no-progress"]) == 0
    check_csv(out, [f"images/{n}" for n in names], by_hand(logits, 1.0))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent", "absent: not found; INPUT is an image folder, a .csv or an .npz"),
        (lambda d: d / "notes.txt", "notes.txt: not an image folder, a .csv of image paths"),
        (lambda d: d / "empty", "empty: holds no images"),
        (lambda d: d / "bad.npz", "bad.npz: images must be (N, 8, 8, 1)"),
        (lambda d: d / "bad.csv", "bad.csv: no column 'image' of image paths; found name"),
        (lambda d: d / "gone.csv", "gone.csv line 2: image 'x.png' not found"),
    ],
)
def test_a_bad_input_is_one_line_naming_it(run, tmp_path: Path, capsys, make, message) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 5, 5), np.uint8))
    (tmp_path / "bad.csv").write_text("name\nx.png\n", encoding="utf-8")
    (tmp_path / "gone.csv").write_text("image\nx.png\n", encoding="utf-8")
    out = tmp_path / "never.csv"
    code = main(["predict", str(run[0]), str(make(tmp_path)), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("autorobust: error: ")
    assert message in err
    assert not out.exists()


def test_a_directory_without_a_run_is_named(tmp_path: Path, capsys) -> None:
    code = main(["predict", str(tmp_path), str(tmp_path), "--no-progress"])
    assert code == 2
    assert f"{tmp_path / 'config.yaml'}: missing" in capsys.readouterr().err
