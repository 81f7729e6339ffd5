"""Fit, test and predict: the anomaly workflow behind `fovea anomaly ...` and `fovea demo`.

Images are read at full size and go through `AnomalyPipeline.preprocess` one by one, at fit time
as at predict time, so training and inference see identical pixels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fovea.anomaly.models import build_model
from fovea.anomaly.pipeline import AnomalyPipeline
from fovea.anomaly.predictor import AnomalyPredictor
from fovea.core import AnomalyResult
from fovea.anomaly.evaluate import evaluate_anomaly
from fovea.anomaly.postprocess import fit_thresholds
from fovea.errors import DataError, ImageReadError
from fovea.io import read_image, read_mask

Progress = Callable[[str, int, int], None]


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


def _read(path, skip_bad: bool, skipped: Skipped) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageReadError as exc:
        if not skip_bad:
            raise
        skipped.add(path, exc.reason)
        return None


def preprocessed_batches(pipe: AnomalyPipeline, paths: Sequence, batch_size: int, skip_bad: bool = False,
                         skipped: Skipped | None = None, progress: Progress | None = None, stage: str = ""):
    """Yield (kept indices, normalised (B, 3, h, w)) batches of images read from `paths`."""
    skipped = skipped if skipped is not None else Skipped()
    buf, idx = [], []
    for i, path in enumerate(paths):
        img = _read(path, skip_bad, skipped)
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

    val_samples: objects with .path, .label (0/1) and .mask_path (or None). Returns (pipeline, info).
    """
    if not train_paths:
        raise DataError("no training images. Fix: point --normal-dir (or the MVTec train/good folder) at images.")
    model = build_model(options.model, **options.model_options)
    pipe = AnomalyPipeline(model, options.input_size, options.blur_sigma).eval()
    skipped = Skipped()
    t0 = time.perf_counter()
    batches = (x for _, x in preprocessed_batches(pipe, train_paths, options.batch_size, skip_bad, skipped,
                                                   progress, "features"))
    coreset_progress = (lambda i, n: progress("coreset", i, n)) if progress else None
    model.fit(batches, progress=coreset_progress)
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


def _mask_at(sample, size) -> np.ndarray | None:
    """Ground-truth mask resized (nearest) to `size`; zeros for normal images, None if unknown."""
    if int(sample.label) == 0:
        return np.zeros(tuple(size), bool)
    if getattr(sample, "mask_path", None) is None:
        return None
    m = torch.from_numpy(read_mask(sample.mask_path).astype(np.float32))[None, None]
    return (F.interpolate(m, size=tuple(size), mode="nearest")[0, 0] > 0.5).numpy()


def run_test(predictor: AnomalyPredictor, samples: Sequence, skip_bad: bool = False,
             progress: Progress | None = None) -> dict:
    """Predict every test sample at full resolution and evaluate; returns results, metrics and timing."""
    skipped = Skipped()
    results: list[AnomalyResult] = []
    labels, gt_masks, images, latencies = [], [], [], []
    for i, sample in enumerate(samples):
        img = _read(sample.path, skip_bad, skipped)
        if progress:
            progress("test", i + 1, len(samples))
        if img is None:
            continue
        t0 = time.perf_counter()
        res = predictor.predict_one(img, str(sample.path))
        latencies.append(time.perf_counter() - t0)
        results.append(res)
        labels.append(int(sample.label))
        images.append(img)
        if int(sample.label) == 0:
            gt_masks.append(np.zeros(img.shape[:2], bool))
        elif getattr(sample, "mask_path", None) is not None:
            mk = read_mask(sample.mask_path)
            if mk.shape != img.shape[:2]:
                raise DataError(f"mask {sample.mask_path} is {mk.shape[1]}x{mk.shape[0]} but image {sample.path} is "
                                f"{img.shape[1]}x{img.shape[0]}. Fix: masks must have their image's size.")
            gt_masks.append(mk)
        else:
            gt_masks.append(None)
    if not results:
        raise DataError("no test images could be read. Fix: check the test folders.")
    masks_ok = all(m is not None for m in gt_masks)
    metrics = evaluate_anomaly(results, np.asarray(labels), gt_masks if masks_ok else None)
    lat = np.asarray(latencies) * 1000
    metrics["latency_ms_p50"] = float(np.percentile(lat, 50))
    metrics["latency_ms_p95"] = float(np.percentile(lat, 95))
    return {"results": results, "labels": labels, "gt_masks": gt_masks if masks_ok else None, "images": images,
            "metrics": metrics, "skipped": skipped.items}


def write_jsonl(path: str | Path, results: Sequence[AnomalyResult]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for r in results:
            fh.write(json.dumps(r.to_dict()) + "\n")
    return path
