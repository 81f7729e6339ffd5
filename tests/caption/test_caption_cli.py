"""`fovea caption fit/predict` on a captions CSV, and the CSV's bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fovea.caption.data import read_captions_csv
from fovea.cli.main import main
from fovea.errors import DataError
from fovea.io import write_image


def _folder(tmp_path, n=4):
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for i in range(n):
        write_image(tmp_path / f"im{i}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        rows += [f"im{i}.png,a photo number {i}", f"im{i}.png,picture {i}"]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "captions.csv"


def test_fit_then_predict_writes_captions(tmp_path):
    csv = _folder(tmp_path)
    samples = read_captions_csv(csv)
    assert [s.captions for s in samples][1] == ["a photo number 1", "picture 1"]
    out = tmp_path / "model"
    assert main(["caption", "fit", "--captions", str(csv), "--steps", "3", "--batch-size", "4", "--input-size", "32",
                 "--out", str(out)]) == 0
    assert main(["caption", "predict", str(out), str(tmp_path / "im0.png"), "--out", str(tmp_path / "pred")]) == 0
    (line,) = (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert rec["task"] == "caption" and rec["result"]["kind"] == "caption" and isinstance(rec["result"]["text"], str)


def test_bad_captions_csv_errors_name_the_problem(tmp_path):
    csv = _folder(tmp_path, 2)
    (tmp_path / "im1.png").unlink()
    with pytest.raises(DataError, match="not found next to it.*im1.png"):
        read_captions_csv(csv)
    (tmp_path / "bad.csv").write_text("file,text\na.png,x\n")
    with pytest.raises(DataError, match="lack 'image' and 'caption'"):
        read_captions_csv(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("image,caption\nim0.png,\n")
    with pytest.raises(DataError, match="line 2: empty image or caption"):
        read_captions_csv(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_captions_csv(tmp_path / "nope.csv")
