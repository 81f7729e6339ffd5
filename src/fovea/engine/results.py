"""Typed results of training and testing, the same two types for every task.

`TrainResult` is what every task's fit/train returns (checkpoint to load, metrics of the kept
model, per-epoch curves, timings); `TestReport` is what every test run returns (metrics, one row
per image, the files written). Both serialise with `to_dict` (JSON-safe: paths become strings)
and come back with `from_dict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fovea.core import check_config_keys


def _jsonable(value: Any) -> Any:
    """Paths -> str, tuples -> lists, numpy scalars/arrays -> Python numbers/lists, recursively."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return _jsonable(value.tolist())
    if hasattr(value, "to_dict"):  # a typed result (core.py)
        return value.to_dict()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


@dataclass
class TrainResult:
    """What one training run produced.

    task: "classify" | "segment" | "anomaly" | the engine task's name.
    checkpoint: what to load afterwards: the task's checkpoint folder (for `fovea.load_predictor`),
        or for a bare `engine.fit` the best.safetensors (with a monitor) / last.ckpt (without).
    metrics: validation metrics of the kept model (empty when there is no validation set).
    history: one row per epoch: {"epoch", "train_loss", "lr", "val_...": ...} (the curves).
    curves_png: the drawn history; timings_s: wall (and CPU) seconds per phase, e.g. {"fit": 12.3}.
    best_epoch / best_metric / monitor: the epoch kept by `monitor` (None without one).
    last_checkpoint: resumable trainer state (last.ckpt) when the task trains epochs.
    skipped: (path, reason) of unreadable files left out under skip_bad.
    """

    task: str
    checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    curves_png: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    best_metric: float | None = None
    monitor: str | None = None
    last_checkpoint: Path | None = None
    out_dir: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (paths as strings, skipped as [path, reason] pairs)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainResult":
        """Inverse of `to_dict`; unknown keys are an error naming the valid ones."""
        check_config_keys(cls, d)
        kw = dict(d)
        for name in ("checkpoint", "curves_png", "last_checkpoint", "out_dir"):
            kw[name] = _path(kw.get(name))
        kw["skipped"] = [(str(p), str(r)) for p, r in kw.get("skipped", [])]
        return cls(**kw)


@dataclass
class TestReport:
    """What one test run measured.

    task: "classify" | "segment" | "anomaly"; model: the checkpoint folder or exported file tested;
    backend: how it ran ("torch", "torchscript", "onnx"); data: the labelled data it ran on.
    metrics: the task's metrics (accuracy / mean IoU / AUROC ...); rows: one dict per image,
    {"image": path, "truth": ..., "result": result.to_dict(), ...}; paths: files written, by role
    (e.g. {"metrics": ..., "report": ...}); skipped: (path, reason) left out under skip_bad.
    """

    __test__ = False  # not a pytest test class despite its name

    task: str
    model: str
    backend: str
    data: str
    metrics: dict[str, Any] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (paths as strings)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TestReport":
        """Inverse of `to_dict`; unknown keys are an error naming the valid ones."""
        check_config_keys(cls, d)
        kw = dict(d)
        kw["paths"] = {k: Path(v) for k, v in kw.get("paths", {}).items()}
        kw["skipped"] = [(str(p), str(r)) for p, r in kw.get("skipped", [])]
        return cls(**kw)


PREDICTIONS_FILE = "predictions.jsonl"


def prediction_record(task: str, image: str | Path | None, result: Any) -> dict[str, Any]:
    """The one line every task writes to predictions.jsonl: {"task", "image", "result": result.to_dict()}."""
    return {"task": str(task), "image": None if image is None else str(image), "result": result.to_dict()}
