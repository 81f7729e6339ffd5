"""Forgery task: metrics against scikit-learn and a slow threshold loop, the folder data set, configs, and a
tiny end-to-end train -> checkpoint -> evaluate through the Predictor."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score as sk_f1
from sklearn.metrics import roc_auc_score

from fovea.errors import ConfigError
from fovea.forgery.data import ForgeryFolder, SynthForgerySet
from fovea.forgery.metrics import GRID, forgery_metrics, per_image
from fovea.forgery.model import ForgeryModelConfig, build_pipeline


def _maps(seed: int, n: int = 4, shape=(20, 24)):
    rng = np.random.default_rng(seed)
    masks = [rng.random(shape) < 0.2 for _ in range(n)]
    probs = [np.clip(0.35 * m + rng.random(shape) * 0.7, 0, 1).astype(np.float32) for m in masks]
    return probs, masks


def test_per_image_f1_auc_and_threshold_grid_match_sklearn_and_a_slow_loop():
    probs, masks = _maps(0)
    for p, m in zip(probs, masks):
        r = per_image(p, m)
        assert r["f1"] == pytest.approx(sk_f1(m.ravel(), (p > 0.5).ravel()))
        assert r["auc"] == pytest.approx(roc_auc_score(m.ravel(), p.ravel()))
        for k in (0, 24, 49, 98):
            assert r["f1_grid"][k] == pytest.approx(sk_f1(m.ravel(), (p >= GRID[k]).ravel()), abs=1e-12)
    assert np.isnan(per_image(probs[0], np.zeros_like(masks[0]))["auc"])


def test_forgery_metrics_groups_kinds_and_picks_one_threshold_for_the_set():
    probs, masks = _maps(1, n=6)
    masks[5][:] = False  # one authentic image
    kinds = ["splice", "splice", "copy_move", "inpaint", "inpaint", "authentic"]
    m = forgery_metrics(probs, masks, kinds)
    assert sorted(m["by_kind"]) == ["copy_move", "inpaint", "splice"] and m["overall"]["n"] == 5
    splice = m["by_kind"]["splice"]
    assert splice["f1"] == pytest.approx(np.mean([sk_f1(masks[i].ravel(), (probs[i] > 0.5).ravel()) for i in (0, 1)]))
    def f1(pred, truth):  # 2 TP / (2 TP + FP + FN), written out
        tp = np.sum(pred & truth)
        return 2 * tp / (2 * tp + np.sum(pred & ~truth) + np.sum(~pred & truth))

    best = max(GRID, key=lambda t: np.mean([f1(probs[i] >= t, masks[i]) for i in range(5)]))
    assert m["overall"]["best_threshold"] == pytest.approx(best)
    assert m["authentic"]["false_alarm_px"] == pytest.approx(np.mean(probs[5] > 0.5))
    assert m["image_auc"] == pytest.approx(roc_auc_score([1, 1, 1, 1, 1, 0], [p.max() for p in probs]))


def test_folder_binarises_masks_reads_kinds_and_names_the_fix(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = np.full((16, 16, 3), 120, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    for stem, mk in (("a", mask), ("b", np.zeros_like(mask))):
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), img)
        cv2.imwrite(str(tmp_path / "masks" / f"{stem}.png"), mk)
    ds = ForgeryFolder(tmp_path, size=(16, 16))
    image, m = ds.load(0)
    assert m.max() == 1 and m.sum() == 16 and ds[0]["target"].sum() == 16
    assert [ds.kind(0), ds.kind(1)] == ["manipulated", "authentic"]
    (tmp_path / "kinds.json").write_text(json.dumps({"a": "splice"}))
    assert ForgeryFolder(tmp_path, size=(16, 16)).kind(0) == "splice"


def test_configs_refuse_bad_sizes_and_archs():
    with pytest.raises(ConfigError, match="multiple of 128"):
        ForgeryModelConfig("sparsevit", {}, (200, 200))
    with pytest.raises(ConfigError, match="unknown forgery network"):
        ForgeryModelConfig("resnet", {}, (128, 128))
    with pytest.raises(ConfigError, match="bad SparseViT settings"):
        build_pipeline("sparsevit", (128, 128), {"depth": [1, 1, 1, 1]})


def test_a_fitted_threshold_becomes_the_answers_one_half():
    pipe = build_pipeline("unet", (32, 32), {"widths": [4, 8], "stem_stride": 2})
    logits = torch.linspace(-4, 4, 81).reshape(1, 1, 9, 9)
    assert torch.equal(pipe.postprocess(logits, 9, 9), torch.sigmoid(logits))  # default: the probability
    pipe.set_threshold(0.3)
    score = pipe.postprocess(logits, 9, 9)
    assert torch.equal(score > 0.5, torch.sigmoid(logits) > 0.3)
    torch.testing.assert_close(score, 1 / (1 + (1 / torch.sigmoid(logits) - 1) * 0.3 / 0.7))  # odds / (0.3 / 0.7)
    with pytest.raises(ConfigError, match="inside"):
        pipe.set_threshold(1.0)


def test_tiny_training_end_to_end(tmp_path):
    from fovea.engine.train import TrainConfig
    from fovea.forgery.predictor import ForgeryPredictor
    from fovea.forgery.train import evaluate_forgery, train_forgery
    from fovea.synth.forgery import ForgeryConfig, generate_forgeries

    torch.manual_seed(0)
    cfg = ForgeryConfig(size=(64, 64), kinds=("splice", "authentic"))
    train = SynthForgerySet(generate_forgeries(8, 0, cfg), (64, 64), augment=True)
    val = SynthForgerySet(generate_forgeries(4, 1, cfg), (64, 64))
    model_cfg = ForgeryModelConfig("unet", {"widths": [8, 16], "stem_stride": 2}, (64, 64))
    result = train_forgery(train, val, model_cfg, TrainConfig(max_epochs=2, batch_size=4, out_dir=str(tmp_path)),
                           pos_weight=2.0)
    assert result.task == "forgery" and result.monitor == "val_loss" and (result.checkpoint / "recipe.json").is_file()
    predictor = ForgeryPredictor.load(result.checkpoint)
    threshold = predictor.recipe.info["threshold"]
    assert threshold in GRID or threshold == 0.5
    assert float(predictor.pipeline.logit_threshold) == pytest.approx(np.log(threshold / (1 - threshold)), abs=1e-6)
    report = evaluate_forgery(predictor, val)
    assert report.metrics["n_images"] == 4 and len(report.rows) == 4
    res = predictor.predict_one(val.load(0)[0])
    assert res.class_names == ("authentic", "manipulated") and res.probs.shape == (2, 64, 64)
    np.testing.assert_allclose(res.probs.sum(0), 1.0, atol=1e-6)
    with pytest.raises(Exception, match="resized to"):
        train_forgery(SynthForgerySet(train.samples, (32, 32)), None, model_cfg, TrainConfig(out_dir=str(tmp_path)))


@pytest.mark.slow
def test_a_sparsevit_forgery_model_exports_and_answers_as_trained(tmp_path):
    """The contract case runs a UNet; this runs SparseViT's dilated groups through TorchScript and ONNX."""
    import fovea
    from fovea.engine.export import export
    from fovea.forgery.predictor import ForgeryPredictor

    torch.manual_seed(0)
    net = {"depths": [1, 1, 4, 2], "dims": [8, 16, 32, 64], "head_dim": 16, "stage3_sparse": [8, 4, 2, 1],
           "stage4_sparse": [2, 1], "stage3_taps": [1, 2, 3], "stage4_taps": [1]}
    pipe = build_pipeline("sparsevit", (128, 128), net).eval()
    with torch.no_grad():  # LFF and layer-scale gammas start at 1e-6: make the map depend on the image
        pipe.network.fusion.gammas.fill_(1.0)
        for block in [*pipe.network.stage3, *pipe.network.stage4]:
            block.gamma_1.fill_(1.0)
            block.gamma_2.fill_(1.0)
    files = export(pipe, tmp_path, name="model")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 144, 3), dtype=np.uint8) for _ in range(2)]
    ref = ForgeryPredictor.from_pipeline(pipe).predict(images)
    assert ref[0].probs[1].std() > 1e-3
    for path in files.values():
        got = fovea.load_predictor(path).predict(images)
        for a, b in zip(ref, got):
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
