"""`fovea classify|segment fit -> test -> export -> predict` through the CLI on tiny data sets.

Accuracy is checked against the data's known labels (easy colours / rendered apple masks), the
predictions of the exported model against the checkpoint's own test rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fovea.cli.main import cli
from fovea.io import write_image
from fovea.synth.apples import generate_apple_scenes

TINY = "test_efficientnet"  # timm's test network: random init, fast
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 200)}


def _lines(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """DATA/{train,val,test}/<colour>/*.png: noisy images of one dominant colour each."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        for name, rgb in COLOURS.items():
            for i in range(n):
                img = np.array(rgb, np.float32) * rng.uniform(0.7, 1.1) + rng.normal(0, 25, (40, 48, 3))
                write_image(root / split / name / f"{i:03d}.png", np.clip(img, 0, 255).astype(np.uint8))
    return root


def test_classify_fit_test_export_predict(colours, tmp_path):
    run = CliRunner()
    out = tmp_path / "cls"
    r = run.invoke(cli, ["classify", "fit", str(colours), "--out", str(out), "--backbone", TINY, "--weights",
                         "random", "--input-size", "32", "--epochs", "4", "--batch-size", "12", "--lr", "3e-3",
                         "--warmup-epochs", "0", "--schedule", "none", "--weight-decay", "0"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (out / "metrics.json").is_file() and (out / "curves.png").is_file()
    r = run.invoke(cli, ["classify", "test", str(out), str(colours)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["n"] == 18 and metrics["accuracy"] >= 0.8, metrics  # colours are easy
    r = run.invoke(cli, ["classify", "export", str(out), "--format", "torchscript"])
    assert r.exit_code == 0, r.output
    pred = tmp_path / "pred"
    r = run.invoke(cli, ["classify", "predict", str(out / "export" / "model.pt"), str(colours / "test" / "red"),
                         "--out", str(pred)])
    assert r.exit_code == 0, r.output
    lines = _lines(pred / "predictions.jsonl")
    assert len(lines) == 6 and {ln["task"] for ln in lines} == {"classify"}
    assert sum(ln["result"]["class_name"] == "red" for ln in lines) >= 5


def test_classify_skip_bad_lists_the_bad_image_and_train_alias_runs_fit(colours, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(colours / "train", data)
    (data / "red" / "broken.png").write_bytes(b"not a png")
    args = ["classify", "fit", str(data), "--out", str(tmp_path / "o"), "--backbone", TINY, "--weights", "random",
            "--input-size", "32", "--epochs", "1", "--batch-size", "12"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "broken.png" in str(r.exception)
    args[1] = "train"  # the hidden alias runs the same command
    r = CliRunner().invoke(cli, args + ["--skip-bad"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "skipped 1 unreadable file(s)" in r.output and str(data / "red" / "broken.png") in r.output
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["skipped_files"] == 1


def test_segment_fit_test_export_predict(tmp_path):
    data = generate_apple_scenes(tmp_path / "d", n=4, size=32, seed=1, n_apples=(1, 1))
    run = CliRunner()
    r = run.invoke(cli, ["segment", "fit", str(data), "--out", str(tmp_path / "r"), "--size", "32", "32", "--epochs",
                         "1", "--batch-size", "4", "--weights", "random", "--val-fraction", "0.25"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "mean IoU" in r.output and json.loads((tmp_path / "r" / "metrics.json").read_text())["n_images"] == 1
    r = run.invoke(cli, ["segment", "test", str(tmp_path / "r" / "model"), str(data), "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    r = run.invoke(cli, ["segment", "export", str(tmp_path / "r" / "model"), "--format", "torchscript"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    for model in (tmp_path / "r" / "model", tmp_path / "r" / "model" / "export" / "model.pt"):
        out = tmp_path / f"p_{model.name}"
        r = run.invoke(cli, ["segment", "predict", str(model), str(data / "images"), "--out", str(out)])
        assert r.exit_code == 0, r.output + repr(r.exception)
        assert len(list((out / "overlays").glob("*.png"))) == 4 and len(list((out / "masks").glob("*.png"))) == 4
        lines = _lines(out / "predictions.jsonl")
        assert len(lines) == 4 and lines[0]["task"] == "segment" and lines[0]["result"]["kind"] == "segment"
        mask = np.asarray(__import__("cv2").imread(str(out / "masks" / f"{lines[0]['image'].split('/')[-1]}"), -1))
        counts = lines[0]["result"]["pixel_counts"]
        names = lines[0]["result"]["class_names"]
        assert [int((mask == i).sum()) for i in range(len(names))] == [counts[n] for n in names]
