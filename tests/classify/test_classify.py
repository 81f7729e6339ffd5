"""fovea.classify: data layouts, metrics vs scikit-learn, training, predictor/export agreement, CLI.

Models are timm's tiny `test_efficientnet` (random init) so the suite stays fast; the real
EfficientNet-Lite0 run is `benchmarks/classify_apples.py`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fovea.classify.data import ImageClassDataset, balanced_sampler, load_samples, stratified_split
from fovea.classify.metrics import classification_metrics
from fovea.classify.model import ClassifierRecipe, build_classifier, save_classifier
from fovea.classify.predictor import ClassifierPredictor, export_classifier, load_predictor
from fovea.classify.train import evaluate_classifier, train_classifier
from fovea.core import Frame
from fovea.engine.train import TrainConfig
from fovea.errors import DataError
from fovea.io import write_image

TINY = "test_efficientnet"
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 200)}


def colour_image(rgb, rng, size=(40, 48)):
    """A noisy image of a dominant colour: learnable by a tiny net in a few epochs."""
    base = np.array(rgb, np.float32) * rng.uniform(0.7, 1.1)
    img = base + rng.normal(0, 25, (*size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        for name, rgb in COLOURS.items():
            for i in range(n):
                write_image(root / split / name / f"{i:03d}.png", colour_image(rgb, rng))
    return root


def test_csv_and_folder_layouts_agree(folders, tmp_path):
    samples, names = load_samples(folders / "train")
    assert names == sorted(COLOURS) and len(samples) == 36
    csv = folders / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{s.path.relative_to(folders)},{names[s.label]}\n" for s in samples))
    from_csv, csv_names = load_samples(csv)
    assert csv_names == names
    assert [(s.path.resolve(), s.label) for s in from_csv] == [(s.path.resolve(), s.label) for s in samples]
    bad = folders / "bad.csv"
    bad.write_text("path,label\ntrain/red/000.png,purple\n")
    with pytest.raises(DataError, match="purple"):
        load_samples(bad, class_names=names)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_samples(tmp_path / "empty")


def test_stratified_split_keeps_every_class(folders):
    samples, _ = load_samples(folders / "train")
    keep, held = stratified_split(samples, 0.25, seed=3)
    assert sorted(np.bincount([s.label for s in held])) == [3, 3, 3]
    assert not {s.path for s in keep} & {s.path for s in held}
    assert [s.path for s in held] == [s.path for s in stratified_split(samples, 0.25, seed=3)[1]]


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 6))
    targets = rng.integers(0, 6, 200)
    logits[np.arange(200), targets] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = [f"c{i}" for i in range(6)]
    m = classification_metrics(probs, targets, names, topk=(1, 3, 5))
    preds = probs.argmax(1)
    p, r, f, s = skm.precision_recall_fscore_support(targets, preds, labels=range(6), zero_division=0)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(targets, preds))
    for k in (3, 5):
        assert m[f"top{k}_accuracy"] == pytest.approx(skm.top_k_accuracy_score(targets, probs, k=k, labels=range(6)))
    for i, n in enumerate(names):
        assert m["per_class"][n]["precision"] == pytest.approx(p[i])
        assert m["per_class"][n]["recall"] == pytest.approx(r[i])
        assert m["per_class"][n]["f1"] == pytest.approx(f[i])
        assert m["per_class"][n]["support"] == s[i]
    assert m["confusion_matrix"] == skm.confusion_matrix(targets, preds, labels=range(6)).tolist()


def test_balanced_sampler_draws_classes_equally():
    targets = np.array([0] * 90 + [1] * 10)
    sampler = balanced_sampler(targets, 2, num_samples=4000)
    torch.manual_seed(0)
    drawn = targets[list(sampler)]
    assert abs(drawn.mean() - 0.5) < 0.03  # vs 0.1 without balancing


def test_predictor_torchscript_and_onnx_agree(tmp_path):
    recipe = ClassifierRecipe(backbone=TINY, class_names=["a", "b", "c"], input_size=(48, 48), weights="random")
    torch.manual_seed(0)
    pipe = build_classifier(recipe)
    with torch.no_grad():  # a non-trivial head so probabilities are far from uniform
        pipe.backbone.get_classifier().weight.normal_(0, 20.0)
    save_classifier(pipe.eval(), recipe, tmp_path / "model")
    paths = export_classifier(tmp_path / "model", tmp_path / "export")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)[100:260, 200:390],  # a crop of a 640x480 frame
              Frame(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), meta={"path": "x.png"}),
              rng.integers(0, 256, (160, 190, 3), dtype=np.uint8), rng.integers(0, 256, (30, 70, 3), dtype=np.uint8)]
    frames[0] = np.ascontiguousarray(frames[0])
    preds = {k: load_predictor(p) for k, p in [("torch", tmp_path / "model"), *paths.items()]}
    probs = {k: p.predict_probs(frames) for k, p in preds.items()}
    assert probs["torch"].std() > 0.01
    for k in ("torchscript", "onnx"):
        np.testing.assert_allclose(probs[k], probs["torch"], atol=1e-4)
        assert preds[k].class_names == ("a", "b", "c")
    # the in-process predictor is the trained module: compare to a direct forward
    with torch.no_grad():
        direct = torch.softmax(pipe(torch.from_numpy(frames[2])[None]), 1).numpy()
    np.testing.assert_allclose(probs["torch"][2], direct[0], atol=1e-5)
    results = preds["onnx"].predict(frames)
    assert [r.class_id for r in results] == list(probs["torch"].argmax(1))
    assert results[1].image_path == "x.png" and abs(results[0].probs.sum() - 1) < 1e-5


def test_train_learns_and_writes_outputs(folders, tmp_path):
    cfg = TrainConfig(optimizer="adamw", lr=3e-3, batch_size=12, max_epochs=4, seed=0)
    res = train_classifier(folders / "train", tmp_path / "run", val_source=folders / "val", backbone=TINY,
                           weights="random", input_size=32, config=cfg)
    out = res.out_dir
    for name in ("model.safetensors", "recipe.json", "curves.png", "metrics.json", "confusion_val.png",
                 "last.ckpt", "history.json"):
        assert (out / name).is_file(), name
    assert res.task == "classify" and res.checkpoint == out
    assert res.metrics["accuracy"] >= 0.8, res.history
    # the saved model, reloaded through the predictor at full image size, reproduces a sane test accuracy
    report = evaluate_classifier(out, folders / "test", tmp_path / "test")
    m = report.metrics
    assert m["accuracy"] >= 0.8 and (tmp_path / "test" / "confusion.png").is_file()
    assert len(report.rows) == m["n"] and report.task == "classify"
    hits = sum(row["truth"] == row["result"]["class_name"] for row in report.rows)
    assert hits / len(report.rows) == pytest.approx(m["accuracy"])  # rows agree with the metric
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == res.best_epoch


def test_linear_probe_trains_only_the_head(folders, tmp_path):
    recipe = ClassifierRecipe(backbone=TINY, class_names=sorted(COLOURS), input_size=(32, 32), linear_probe=True,
                              weights="random")
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in build_classifier(recipe).state_dict().items()}
    cfg = TrainConfig(lr=1e-2, batch_size=12, max_epochs=1, seed=0)
    res = train_classifier(folders / "train", tmp_path / "probe", val_source=folders / "val", backbone=TINY,
                           weights="random", input_size=32, linear_probe=True, config=cfg)
    from safetensors.torch import load_file

    after = load_file(str(res.out_dir / "model.safetensors"))
    head = {k for k in after if k.startswith("network.classifier.")}
    assert head and all(not torch.equal(after[k], before[k]) for k in head)
    # everything else, batch-norm running statistics included, is untouched
    assert all(torch.equal(after[k], before[k]) for k in after if k not in head)


def test_dataset_yields_uint8_at_input_size(folders):
    samples, names = load_samples(folders / "train")
    ds = ImageClassDataset(samples[:4], names, (24, 20), train=True)
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (24, 20, 3)
    assert ImageClassDataset(samples[:4], names, (24, 20))[1]["image"].shape == (24, 20, 3)
