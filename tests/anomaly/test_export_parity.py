"""In-process, TorchScript and ONNX predictions agree (the bug class of Anomalib #2448/#2747)."""

import numpy as np
import pytest
import torch

from fovea.anomaly.export import export
from fovea.anomaly.models import build_model
from fovea.anomaly.pipeline import AnomalyPipeline
from fovea.anomaly.predictor import AnomalyPredictor
from fovea.engine.postprocess import Thresholds


def _textured(rng, h, w):
    base = rng.integers(90, 160, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    base += 40 * np.sin(xx[..., None] / 3.0)
    return base.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["patchcore", "padim"])
def fitted(request, tmp_path_factory):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(request.param, weights="random")
    pipe = AnomalyPipeline(model, (96, 96)).eval()
    train = [_textured(rng, 96, 96) for _ in range(4)]
    model.fit([torch.cat([pipe.preprocess(torch.from_numpy(t)[None]) for t in train])])
    tests = [_textured(rng, 80 + 10 * i, 120 - 7 * i) for i in range(3)]
    tests[1][20:40, 30:60] = 255  # a bright defect
    with torch.no_grad():
        raws = [pipe.raw(torch.from_numpy(t)[None]) for t in tests]
    scores = np.array([float(s) for s, _ in raws])
    maps = np.concatenate([m.numpy().ravel() for _, m in raws])
    # thresholds inside the observed ranges, so normalised values are not clamped to 0 or 1
    s_span, m_span = np.ptp(scores) + 1.0, np.ptp(maps)
    pipe.set_thresholds(Thresholds(float(scores.mean()), float(np.median(maps)), scores.min() - s_span,
                                   scores.max() + s_span, float(maps.min() - m_span), float(maps.max() + m_span)))
    out = tmp_path_factory.mktemp(request.param)
    pipe.save(out / "model")
    files = export(pipe, out / "export")
    return pipe, out, files, tests


def test_exported_models_agree_with_in_process(fitted):
    pipe, out, files, tests = fitted
    predictors = [AnomalyPredictor.load(out / "model"), AnomalyPredictor.load(files["torchscript"]),
                  AnomalyPredictor.load(files["onnx"])]
    assert [p.kind for p in predictors] == ["in-process", "torchscript", "onnx"]
    for img in tests:
        ref, *others = [p.predict_one(img) for p in predictors]
        assert ref.anomaly_map.shape == img.shape[:2]
        assert 0.0 < ref.score < 1.0 and 0.0 < ref.anomaly_map.mean() < 1.0  # not clamped
        for res in others:
            assert abs(res.score - ref.score) < 1e-4
            np.testing.assert_allclose(res.anomaly_map, ref.anomaly_map, atol=1e-4)
            if abs(ref.score - 0.5) > 1e-4:  # a score on the threshold may round either way
                assert res.label == ref.label


def test_checkpoint_round_trip_keeps_results(fitted):
    pipe, out, files, tests = fitted
    loaded = AnomalyPredictor.load(out / "model")
    direct = AnomalyPredictor.from_pipeline(pipe)
    for img in tests:
        a, b = direct.predict_one(img), loaded.predict_one(img)
        assert a.score == pytest.approx(b.score, abs=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)  # float rounding only
    assert loaded.thresholds.image_threshold == pytest.approx(pipe.get_thresholds().image_threshold)


def test_bad_model_paths_give_clear_errors(tmp_path):
    from fovea.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        AnomalyPredictor.load(tmp_path / "nope.onnx")
    with pytest.raises(CheckpointError, match="not a fovea anomaly checkpoint"):
        AnomalyPredictor.load(tmp_path)
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model file type"):
        AnomalyPredictor.load(tmp_path / "m.bin")
