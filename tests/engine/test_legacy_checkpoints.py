"""Checkpoints and exports written before the task layer keep loading and answering as they did.

The fixtures under tests/fixtures/legacy/ were written by the pre-task-layer code
(`make_fixtures.py`, commit a0adeaf), together with the predictions that code gave on three
images (`expected.json`). `fovea.load_predictor` must open every one of them (anomaly and segment
`config.json` + `model.safetensors`, classify `classifier.json` + `best.safetensors`, the old
`.pt` files and the old `.onnx` files with their recipe beside them and the input named `image`)
and reproduce those predictions; re-saved in the current format they still do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fovea
from fovea.engine.checkpoint import RECIPE_FILE
from fovea.io import read_image

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
IMAGES = {name: read_image(LEGACY / "images" / name) for name in sorted(EXPECTED["classify"])}
KIND = {"anomaly_patchcore": "anomaly", "anomaly_padim": "anomaly", "classify": "classify", "segment": "segment"}


def _check(predictor, fixture: str, atol: float) -> None:
    assert predictor.kind == KIND[fixture]
    results = predictor.predict(list(IMAGES.values()))
    for (name, img), r in zip(IMAGES.items(), results):
        want = EXPECTED[fixture][name]
        if predictor.kind == "anomaly":
            assert r.score == pytest.approx(want["score"], abs=atol)
            assert r.raw_score == pytest.approx(want["raw_score"], abs=atol, rel=1e-5)
            np.testing.assert_allclose(r.anomaly_map, want["anomaly_map"], atol=atol, err_msg=name)
            if abs(want["score"] - 0.5) > atol:
                assert r.label == want["label"]
        elif predictor.kind == "classify":
            np.testing.assert_allclose(r.probs, want["probs"], atol=atol, err_msg=name)
        else:
            np.testing.assert_allclose(r.probs, want["probs"], atol=atol, err_msg=name)
            assert (r.class_map == np.asarray(want["class_map"])).mean() > 0.999


@pytest.mark.parametrize("fixture", sorted(KIND))
def test_legacy_checkpoint_folders_predict_as_when_written(fixture, tmp_path):
    predictor = fovea.load_predictor(LEGACY / fixture)
    assert predictor.recipe.legacy is not None
    _check(predictor, fixture, 1e-5)
    # re-saved in the current format, the model answers the same
    predictor.save(tmp_path / "upgraded")
    assert json.loads((tmp_path / "upgraded" / RECIPE_FILE).read_text())["task"] == KIND[fixture]
    upgraded = fovea.load_predictor(tmp_path / "upgraded")
    assert upgraded.recipe.legacy is None
    _check(upgraded, fixture, 1e-5)


@pytest.mark.parametrize("name", ["anomaly_patchcore", "classify", "segment"])
@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_legacy_exports_predict_as_when_written(name, suffix):
    predictor = fovea.load_predictor(LEGACY / "exports" / f"{name}{suffix}")
    assert predictor.runtime == ("torchscript" if suffix == ".pt" else "onnx")
    _check(predictor, name, 1e-4)
