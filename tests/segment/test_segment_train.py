"""train_segmenter through the engine on a few tiny apple scenes; evaluation through the Predictor
(the CLI's fit/test/predict/export are tested in tests/cli)."""

import numpy as np
import torch

from fovea.engine.train import TrainConfig
from fovea.segment.data import MaskFolderDataset
from fovea.segment.predictor import SegmentationPredictor
from fovea.segment.train import class_weights_from_frequency, evaluate_segmenter, train_segmenter
from fovea.synth.apples import CLASS_NAMES, generate_apple_scenes


def test_train_segmenter_learns_and_evaluates(tmp_path):
    torch.manual_seed(0)
    data = generate_apple_scenes(tmp_path / "d", n=4, size=48, seed=0, n_apples=(1, 2), radius_frac=(0.25, 0.35))
    ds = MaskFolderDataset(data / "images", data / "masks", size=(48, 48))
    assert ds.class_names == CLASS_NAMES
    w = class_weights_from_frequency(ds, len(CLASS_NAMES))
    assert w[0] < w[1] or w[0] == w[1]  # background is the most frequent class -> smallest weight
    cfg = TrainConfig(lr=3e-3, batch_size=4, max_epochs=3, seed=0, out_dir=str(tmp_path / "run"))
    res = train_segmenter(ds, ds, len(CLASS_NAMES), CLASS_NAMES, config=cfg, weights="random")
    hist = res.history
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert res.task == "segment" and res.checkpoint == tmp_path / "run" / "model"
    assert res.best_epoch is not None and res.metrics["val_miou"] == hist[res.best_epoch]["val_miou"]
    pred = SegmentationPredictor.load(res.checkpoint)
    m = evaluate_segmenter(pred, ds, overlay_dir=tmp_path / "ov", max_overlays=1).metrics
    assert set(m["iou"]) == set(CLASS_NAMES) and 0 <= m["pixel_accuracy"] <= 1
    assert (tmp_path / "ov" / "00000.png").is_file()
    # the saved checkpoint answers exactly as the returned predictor
    img, _ = ds.load(0)
    again = SegmentationPredictor.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(again.probs(img), pred.probs(img), atol=1e-6)
