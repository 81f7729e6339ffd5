"""Fit, test and predict: the anomaly workflow behind `fovea anomaly ...` and `fovea demo`.

Images are read at full size and go through `AnomalyPipeline.preprocess` one by one, at fit time
as at predict time, so training and inference see identical pixels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fovea.anomaly.models import build_model
from fovea.anomaly.pipeline import AnomalyPipeline
from fovea.anomaly.predictor import AnomalyPredictor
from fovea.anomaly.evaluate import evaluate_anomaly
from fovea.anomaly.postprocess import fit_thresholds
from fovea.core import AnomalyResult
from fovea.engine.progress import Progress
from fovea.engine.results import TestReport, TrainResult, prediction_record
from fovea.errors import DataError
from fovea.io import read_mask
from fovea.io import read_or_skip as io_read_or_skip

_FIT_STAGE = {"patchcore": "coreset", "reverse_distillation": "epochs"}  # what model.fit reports progress of


@dataclass
class FitOptions:
    model: str = "patchcore"
    input_size: tuple[int, int] = (256, 256)
    batch_size: int = 8
    blur_sigma: float = 4.0
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. backbone, layers, coreset_ratio


@dataclass
class Skipped:
    """Files left out under --skip-bad, with the reason; always reported."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path, reason: str) -> None:
        self.items.append((str(path), reason))


def read_or_skip(path, skip_bad: bool, skipped: Skipped) -> np.ndarray | None:
    """The image at `path`, or None (recorded in `skipped`) when unreadable and skip_bad; else raises."""
    return io_read_or_skip(path, skip_bad, skipped.items)


def preprocessed_batches(pipe: AnomalyPipeline, paths: Sequence, batch_size: int, skip_bad: bool = False,
                         skipped: Skipped | None = None, progress: Progress | None = None, stage: str = ""):
    """Yield (kept indices, normalised (B, 3, h, w)) batches of images read from `paths`."""
    skipped = skipped if skipped is not None else Skipped()
    buf, idx = [], []
    for i, path in enumerate(paths):
        img = read_or_skip(path, skip_bad, skipped)
        if img is not None:
            with torch.no_grad():
                buf.append(pipe.preprocess(torch.from_numpy(np.require(img, requirements="W"))[None]))
            idx.append(i)
        if progress:
            progress(stage, i + 1, len(paths))
        if len(buf) == batch_size or (i == len(paths) - 1 and buf):
            yield idx, torch.cat(buf)
            buf, idx = [], []


def fit_pipeline(train_paths: Sequence, val_samples: Sequence, options: FitOptions, skip_bad: bool = False,
                 progress: Progress | None = None) -> tuple[AnomalyPipeline, dict]:
    """Fit the model on normal images, then thresholds and normalisation on the validation samples.

    The in-memory step of `fit_anomaly` (no files written; benchmarks time it). val_samples: objects
    with .path, .label (0/1) and .mask_path (or None). Returns (pipeline, info dict).
    """
    if not train_paths:
        raise DataError("no training images. Fix: point --normal-dir (or the MVTec train/good folder) at images.")
    model = build_model(options.model, **options.model_options)
    pipe = AnomalyPipeline(model, options.input_size, options.blur_sigma).eval()
    skipped = Skipped()
    t0 = time.perf_counter()
    batches = (x for _, x in preprocessed_batches(pipe, train_paths, options.batch_size, skip_bad, skipped,
                                                   progress, "features"))
    stage = _FIT_STAGE.get(options.model, "fit")
    model.fit(batches, progress=(lambda i, n: progress(stage, i, n)) if progress else None)
    fit_s = time.perf_counter() - t0
    scores, labels, maps, masks = [], [], [], []
    val_paths = [s.path for s in val_samples]
    for idx, x in preprocessed_batches(pipe, val_paths, options.batch_size, skip_bad, skipped, progress,
                                       "validation"):
        with torch.no_grad():
            s, m = pipe.core(x)
        for j, i in enumerate(idx):
            sample = val_samples[i]
            scores.append(float(s[j]))
            labels.append(int(sample.label))
            maps.append(m[j, 0].numpy())
            masks.append(_mask_at(sample, m.shape[-2:]))
    have_masks = any(mk is not None for mk in masks) and all(
        mk is not None for mk, lb in zip(masks, labels) if lb == 1)
    thresholds = fit_thresholds(
        np.asarray(scores), np.asarray(labels),
        np.stack(maps) if maps else None,
        np.stack([mk if mk is not None else np.zeros(maps[0].shape, bool) for mk in masks]) if have_masks else None,
    )
    pipe.set_thresholds(thresholds)
    info = {"fit_seconds": fit_s, "n_train": len(train_paths), "n_val": len(val_samples),
            "val_has_anomalies": bool(sum(labels)), "skipped": skipped.items,
            "weights": str(getattr(model.extractor, "weights_source", "")) if hasattr(model, "extractor") else ""}
    return pipe, info


def fit_anomaly(train_paths: Sequence, val_samples: Sequence, options: FitOptions, out_dir: str | Path, *,
                skip_bad: bool = False, progress: Progress | None = None,
                skipped: Sequence[tuple[str, str]] = ()) -> TrainResult:
    """Fit (see `fit_pipeline`) and save the checkpoint folder `out_dir/model`; the task's TrainResult.

    metrics: the fitted thresholds (raw score units); history: the training loss per epoch for
    models that train (reverse distillation), else empty. skipped: files already left out while
    listing the data, reported with those this step skips.
    """
    t0 = time.perf_counter()
    pipe, info = fit_pipeline(train_paths, val_samples, options, skip_bad, progress)
    all_skipped = [tuple(x) for x in skipped] + [tuple(x) for x in info["skipped"]]
    info["skipped"] = all_skipped
    ckpt = pipe.save(Path(out_dir) / "model", extra=info)
    t = pipe.get_thresholds()
    metrics = {"image_threshold": float(t.image_threshold), "pixel_threshold": float(t.pixel_threshold),
               "n_train": int(info["n_train"]), "n_val": int(info["n_val"])}
    return TrainResult(task="anomaly", checkpoint=Path(ckpt), metrics=metrics,
                       history=list(getattr(pipe.model, "history", []) or []),
                       timings_s={"fit": float(info["fit_seconds"]), "total": time.perf_counter() - t0},
                       out_dir=Path(out_dir), skipped=all_skipped)


def _mask_at(sample, size) -> np.ndarray | None:
    """Ground-truth mask resized (nearest) to `size`; zeros for normal images, None if unknown."""
    if int(sample.label) == 0:
        return np.zeros(tuple(size), bool)
    if getattr(sample, "mask_path", None) is None:
        return None
    m = torch.from_numpy(read_mask(sample.mask_path).astype(np.float32))[None, None]
    return (F.interpolate(m, size=tuple(size), mode="nearest")[0, 0] > 0.5).numpy()


@dataclass
class _Predicted:
    """Per-image outputs of a test pass, aligned lists (internal to `run_test` and `evaluate_and_report`)."""

    samples: list = field(default_factory=list)
    results: list[AnomalyResult] = field(default_factory=list)
    gt_masks: list = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)


def _predict_samples(predictor: AnomalyPredictor, samples: Sequence, skip_bad: bool,
                     progress: Progress | None) -> _Predicted:
    out = _Predicted()
    for i, sample in enumerate(samples):
        img = read_or_skip(sample.path, skip_bad, out.skipped)
        if progress:
            progress("test", i + 1, len(samples))
        if img is None:
            continue
        t0 = time.perf_counter()
        res = predictor.predict_one(img, str(sample.path))
        out.latencies_s.append(time.perf_counter() - t0)
        out.results.append(res)
        out.samples.append(sample)
        out.gt_masks.append(_gt_mask(sample, img.shape[:2]))
    if not out.results:
        raise DataError("no test images could be read. Fix: check the test folders.")
    return out


def _gt_mask(sample, shape) -> np.ndarray | None:
    """(H, W) bool ground truth: zeros for normal images, the mask file for anomalous ones, None if unknown."""
    if int(sample.label) == 0:
        return np.zeros(shape, bool)
    if getattr(sample, "mask_path", None) is None:
        return None
    mk = read_mask(sample.mask_path)
    if mk.shape != tuple(shape):
        raise DataError(f"mask {sample.mask_path} is {mk.shape[1]}x{mk.shape[0]} but image {sample.path} is "
                        f"{shape[1]}x{shape[0]}. Fix: masks must have their image's size.")
    return mk


def _report_of(predictor: AnomalyPredictor, model: str | Path, data: str, pred: _Predicted) -> TestReport:
    labels = np.asarray([int(s.label) for s in pred.samples])
    masks_ok = all(m is not None for m in pred.gt_masks)
    metrics = evaluate_anomaly(pred.results, labels, pred.gt_masks if masks_ok else None)
    lat_ms = np.asarray(pred.latencies_s) * 1000
    metrics["latency_ms_p50"] = float(np.percentile(lat_ms, 50))
    metrics["latency_ms_p95"] = float(np.percentile(lat_ms, 95))
    metrics["skipped_files"] = len(pred.skipped.items)
    rows = [{"image": str(s.path), "truth": int(s.label), "defect_type": getattr(s, "defect_type", ""),
             "result": r.to_dict()} for s, r in zip(pred.samples, pred.results)]
    return TestReport(task="anomaly", model=str(model), backend=str(getattr(predictor, "runtime", "")),
                      data=data, metrics=metrics, rows=rows, skipped=list(pred.skipped.items),
                      timings_s={"predict": float(sum(pred.latencies_s))})


def run_test(predictor: AnomalyPredictor, samples: Sequence, skip_bad: bool = False,
             progress: Progress | None = None, *, model: str | Path = "", data: str = "") -> TestReport:
    """Predict every test sample at full resolution and evaluate: metrics, one row per image, timings."""
    return _report_of(predictor, model, data, _predict_samples(predictor, samples, skip_bad, progress))


def evaluate_and_report(model: str | Path, samples: Sequence, out_dir: str | Path, *, skip_bad: bool = False,
                    progress: Progress | None = None, data: str = "") -> TestReport:
    """Test MODEL (checkpoint folder, .pt or .onnx) on `samples`; write report.html, metrics.json and
    test_predictions.jsonl (the predictions.jsonl schema) into out_dir; the report lists their paths."""
    from fovea.anomaly.report import write_anomaly_report

    predictor = AnomalyPredictor.load(model)
    pred = _predict_samples(predictor, samples, skip_bad, progress)
    report = _report_of(predictor, model, data, pred)
    out = Path(out_dir)
    jsonl = write_jsonl(out / "test_predictions.jsonl", pred.results)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(report.metrics, indent=2))
    masks_ok = all(m is not None for m in pred.gt_masks)
    html = write_anomaly_report(out, pred.results, [int(s.label) for s in pred.samples],
                                pred.gt_masks if masks_ok else None, [s.path for s in pred.samples],
                                report.metrics, predictor.thresholds, title=f"fovea anomaly report: {model}")
    report.paths = {"metrics": metrics_path, "predictions": jsonl, "report": Path(html)}
    return report


def write_jsonl(path: str | Path, results: Sequence[AnomalyResult]) -> Path:
    """One `prediction_record` line per result (the predictions.jsonl schema of every task)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for r in results:
            fh.write(json.dumps(prediction_record("anomaly", r.image_path, r)) + "\n")
    return path
