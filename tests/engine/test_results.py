"""TrainResult / TestReport: JSON round trips, and the predictions.jsonl record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fovea.core import ClassResult
from fovea.engine.results import TestReport, TrainResult, prediction_record
from fovea.errors import ConfigError


def test_train_result_round_trips_through_json(tmp_path):
    res = TrainResult(task="classify", checkpoint=tmp_path / "run", metrics={"accuracy": np.float32(0.75), "n": 8},
                      history=[{"epoch": 0, "train_loss": 1.5, "val_acc": 0.5}],
                      curves_png=tmp_path / "run" / "curves.png", timings_s={"fit": 2.5}, best_epoch=0,
                      best_metric=0.5, monitor="val_acc", last_checkpoint=tmp_path / "run" / "last.ckpt",
                      out_dir=tmp_path / "run", skipped=[(str(tmp_path / "bad.png"), "the file is empty (0 bytes)")])
    text = json.dumps(res.to_dict())  # plain JSON: paths as strings, numpy scalars as numbers
    d = json.loads(text)
    assert d["checkpoint"] == str(tmp_path / "run") and d["metrics"]["accuracy"] == pytest.approx(0.75)
    back = TrainResult.from_dict(d)
    assert back.checkpoint == tmp_path / "run" and isinstance(back.curves_png, Path)
    assert back.skipped == res.skipped and back.history == res.history and back.best_epoch == 0
    assert back.to_dict() == d


def test_nan_metrics_become_null_and_unknown_keys_are_refused(tmp_path):
    d = TrainResult(task="anomaly", checkpoint=None, metrics={"auroc": float("nan"), "inf": math.inf}).to_dict()
    assert d["metrics"]["auroc"] is None and d["metrics"]["inf"] == math.inf
    with pytest.raises(ConfigError, match="unknown TrainResult keys \\['epochs'\\]"):
        TrainResult.from_dict({"task": "x", "checkpoint": None, "epochs": 3})


def test_test_report_round_trips_with_typed_results(tmp_path):
    result = ClassResult(probs=np.array([0.2, 0.8], np.float32), class_names=("ok", "bad"), image_path="a.png")
    rep = TestReport(task="classify", model="m", backend="onnx", data="d", metrics={"accuracy": 1.0},
                     rows=[{"image": "a.png", "truth": "bad", "result": result}],
                     paths={"metrics": tmp_path / "metrics.json"})
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["rows"][0]["result"]["class_name"] == "bad"  # typed results serialise with their to_dict
    back = TestReport.from_dict(d)
    assert back.paths == {"metrics": tmp_path / "metrics.json"} and back.metrics == {"accuracy": 1.0}


def test_prediction_record_names_the_task():
    result = ClassResult(probs=np.array([0.9, 0.1], np.float32), class_names=("ok", "bad"), image_path="x.png")
    rec = prediction_record("classify", Path("x.png"), result)
    assert rec == {"task": "classify", "image": "x.png", "result": result.to_dict()}
    assert json.loads(json.dumps(rec))["result"]["class_name"] == "ok"
