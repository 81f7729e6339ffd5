"""`fovea forgery synth -> fit -> test -> predict` through the CLI on a tiny generated set, and its errors."""

from __future__ import annotations

import json

from fovea.cli.main import main


def test_synth_fit_test_predict(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    assert main(["forgery", "synth", str(data), "--n", "8", "--size", "64", "64", "--seed", "3"]) == 0
    kinds = json.loads((data / "kinds.json").read_text())
    assert len(kinds) == 8 and len(list((data / "masks").glob("*.png"))) == 8
    assert main(["forgery", "fit", str(data), "--out", str(out), "--model", "unet", "--size", "64", "64",
                 "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["skipped_files"] == 0
    assert main(["forgery", "test", str(out / "model"), str(data), "--out", str(tmp_path / "test")]) == 0
    tested = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert tested["n_images"] == 8 and set(tested["by_kind"]) <= {"splice", "copy_move", "inpaint"}
    assert main(["forgery", "predict", str(out / "model"), str(data / "images"), "--out", str(tmp_path / "pred")]) == 0
    lines = [json.loads(s) for s in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and {ln["task"] for ln in lines} == {"forgery"}
    assert set(lines[0]["result"]["pixel_counts"]) == {"authentic", "manipulated"}
    assert len(list((tmp_path / "pred" / "maps").glob("*.png"))) == 8


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["forgery", "fit", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images/ and masks/ folders" in capsys.readouterr().err
    data = tmp_path / "data"
    assert main(["forgery", "synth", str(data), "--n", "2", "--size", "64", "64"]) == 0
    assert main(["forgery", "fit", str(data), "--out", str(tmp_path / "o"), "--size", "100", "100"]) == 2
    assert "multiple of 128" in capsys.readouterr().err
