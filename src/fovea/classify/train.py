"""Train and evaluate image classifiers with `fovea.engine.train.fit`.

`train_classifier` fine-tunes (or linear-probes) a timm backbone with a new head on a class-folder
or CSV data set and writes `model.safetensors` + `recipe.json` + curves + `metrics.json`;
`evaluate_classifier` runs any predictor (in-process, TorchScript, ONNX) over a labelled set and
writes metrics + a confusion-matrix PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fovea.classify.data import Augment, ImageClassDataset, balanced_sampler, load_samples, stratified_split
from fovea.classify.metrics import classification_metrics, plot_confusion
from fovea.classify.model import ClassifierRecipe, build_classifier, save_classifier
from fovea.classify.predictor import ClassifierPredictor, load_predictor
from fovea.engine.progress import Progress
from fovea.engine.results import TestReport, TrainResult
from fovea.engine.train import TrainConfig, fit
from fovea.errors import ConfigError, DataError
from fovea.io import read_or_skip


class ClassificationTask:
    """TaskSpec for `fit`: cross-entropy on uint8 batches; val_loss, val_acc, val_top{k} on the val set."""

    name = "classify"

    def __init__(self, model: torch.nn.Module, label_smoothing: float = 0.0, topk: Sequence[int] = (1, 5)):
        self.model = model
        self.label_smoothing = float(label_smoothing)
        self.topk = tuple(topk)

    def training_loss(self, model, batch) -> torch.Tensor:
        logits = model(batch["image"])
        return F.cross_entropy(logits.float(), batch["target"], label_smoothing=self.label_smoothing)

    def validation_metrics(self, model, loader) -> dict[str, float]:
        probs, targets = predict_loader(model, loader)
        p_true = probs[np.arange(len(targets)), targets]
        out = {"val_loss": float(-np.log(np.clip(p_true, 1e-12, None)).mean()),
               "val_acc": float((probs.argmax(1) == targets).mean())}
        order = np.argsort(-probs, axis=1, kind="stable")
        for k in self.topk:
            if 1 < k < probs.shape[1]:
                out[f"val_top{k}"] = float((order[:, :k] == targets[:, None]).any(1).mean())
        return out


def predict_loader(model: torch.nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) softmax probabilities and (N,) targets over a loader of {"image", "target"} batches."""
    probs, targets = [], []
    with torch.no_grad():
        for batch in loader:
            probs.append(torch.softmax(model(batch["image"]).float(), 1).numpy())
            targets.append(batch["target"].numpy())
    return np.concatenate(probs), np.concatenate(targets)


def train_classifier(train_source: str | Path, out_dir: str | Path, *, val_source: str | Path | None = None,
                     backbone: str = "efficientnet_lite0", weights: str = "default", input_size: int = 224,
                     linear_probe: bool = False, balanced: bool = False, val_fraction: float = 0.2,
                     augment: Augment | None = Augment(), label_smoothing: float = 0.0,
                     config: TrainConfig | None = None, topk: Sequence[int] = (1, 5), skip_bad: bool = False,
                     progress: Progress | None = None) -> TrainResult:
    """Fine-tune (or linear-probe) `backbone` on `train_source` (class folders or CSV).

    Without `val_source`, a stratified `val_fraction` of the training set (seeded) is held out.
    The best epoch by `config.monitor` (default val_acc) is kept. Unreadable images raise, or with
    skip_bad are left out and listed in `TrainResult.skipped`. Returns the task's `TrainResult`
    (checkpoint = out_dir; metrics = validation metrics of the kept epoch). Writes into `out_dir`:
    model.safetensors, recipe.json, curves.png, history.json, metrics.json, confusion_val.png.
    """
    config = replace(config or TrainConfig(), out_dir=str(out_dir))
    if config.monitor is None:
        config = replace(config, monitor="val_acc", mode="max")
    skipped: list[tuple[str, str]] = []
    samples, names = load_samples(train_source, skip_bad=skip_bad, skipped=skipped)
    if val_source is not None:
        val_samples, _ = load_samples(val_source, names, skip_bad=skip_bad, skipped=skipped)
    else:
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1) when no validation set is given.")
        samples, val_samples = stratified_split(samples, val_fraction, seed=config.seed)
    size = (int(input_size), int(input_size))
    train_ds = ImageClassDataset(samples, names, size, train=augment is not None, augment=augment)
    val_ds = ImageClassDataset(val_samples, names, size, train=False)
    recipe = ClassifierRecipe(backbone=backbone, class_names=list(names), input_size=size,
                              linear_probe=linear_probe, weights=str(weights))
    torch.manual_seed(config.seed)  # the new head's initialisation
    pipeline = build_classifier(recipe)
    task = ClassificationTask(pipeline, label_smoothing, topk)
    sampler = balanced_sampler(train_ds.targets, len(names)) if balanced else None
    t0 = time.perf_counter()
    result = fit(task, train_ds, val_ds, config, sampler=sampler, progress=progress)
    seconds = time.perf_counter() - t0
    out = save_classifier(task.model, recipe, out_dir)
    probs, targets = predict_loader(task.model.eval(), _loader(val_ds))
    metrics = classification_metrics(probs, targets, names, topk)
    plot_confusion(metrics["confusion_matrix"], names, out / "confusion_val.png", "validation (best epoch)")
    summary = {"split": "val", "train_seconds": seconds, "best_epoch": result.best_epoch,
               "best_metric": result.best_metric, "monitor": config.monitor, "recipe": recipe.to_dict(),
               "config": asdict(config), "n_train": len(train_ds), "n_val": len(val_ds),
               "skipped_files": len(skipped), **metrics}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return replace(result, task="classify", checkpoint=out, metrics=metrics,
                   timings_s={**result.timings_s, "train": seconds}, out_dir=out, skipped=skipped)


def _loader(ds, batch_size: int = 64):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def evaluate_classifier(model: str | Path | ClassifierPredictor, data_source: str | Path, out_dir: str | Path,
                        topk: Sequence[int] = (1, 5), *, skip_bad: bool = False, batch_size: int = 32,
                        progress: Progress | None = None) -> TestReport:
    """Run a predictor over a labelled set at full image resolution; write metrics.json + confusion.png.

    Returns the task's `TestReport`: metrics (accuracy, top-k, per-class precision/recall, confusion
    matrix), one row per image ({"image", "truth", "result"}), the files written, skipped files.
    """
    predictor = model if isinstance(model, ClassifierPredictor) else load_predictor(model)
    skipped: list[tuple[str, str]] = []
    samples, names = load_samples(data_source, predictor.class_names, skip_bad=skip_bad, skipped=skipped)
    kept, results = [], []
    t0 = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        part = samples[i:i + batch_size]
        images = [read_or_skip(s.path, skip_bad, skipped) for s in part]
        part = [(s, im) for s, im in zip(part, images) if im is not None]
        results += predictor.predict([im for _, im in part], [str(s.path) for s, _ in part]) if part else []
        kept += [s for s, _ in part]
        if progress:
            progress("test", min(i + batch_size, len(samples)), len(samples))
    if not kept:
        raise DataError(f"no image of {data_source} could be read. Fix: replace the files.")
    seconds = time.perf_counter() - t0
    probs = np.stack([r.probs for r in results])
    targets = np.array([s.label for s in kept])
    metrics = classification_metrics(probs, targets, names, topk)
    metrics["skipped_files"] = len(skipped)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(metrics["confusion_matrix"], names, out / "confusion.png", f"{Path(data_source).name}")
    (out / "metrics.json").write_text(json.dumps(
        {"model": predictor.source, "backend": predictor.runtime, "data": str(data_source), **metrics}, indent=1))
    rows = [{"image": str(s.path), "truth": names[s.label], "result": r.to_dict()} for s, r in zip(kept, results)]
    return TestReport(task="classify", model=str(predictor.source), backend=str(predictor.runtime),
                      data=str(data_source), metrics=metrics, rows=rows,
                      paths={"metrics": out / "metrics.json", "confusion": out / "confusion.png"},
                      skipped=skipped, timings_s={"predict": seconds})
