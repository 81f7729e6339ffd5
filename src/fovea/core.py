"""Shared types: frames in, typed predictions out.

One result type per kind of output (`AnomalyResult`, `Detections`, `ClassResult`,
`SegResult`), each with `to_dict`/`from_dict` adapters for JSON lines; never a loose dict.
A `Predictor` is anything with `predict(frames) -> list[Prediction]`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from fovea.errors import DataError


@dataclass
class Frame:
    """One image from a source.

    image: (H, W, 3) uint8 RGB. t_capture: `time.monotonic()` seconds taken right after the grab.
    """

    image: np.ndarray
    t_capture: float = field(default_factory=time.monotonic)
    source_id: str = ""
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = self.image
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
            shape = getattr(img, "shape", None)
            dtype = getattr(img, "dtype", type(img).__name__)
            raise DataError(
                f"Frame.image must be an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype} "
                f"(source {self.source_id!r}, index {self.index}). Fix: convert with fovea.io.to_rgb_uint8."
            )


def _as_array(x, dtype=None) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


@dataclass
class AnomalyResult:
    """Anomaly prediction for one image.

    score: normalised image score in [0, 1]; 0.5 is the decision threshold.
    anomaly_map: (H, W) float32 normalised map at input resolution (0.5 = pixel threshold).
    mask: (H, W) bool, anomaly_map > 0.5. boxes: (N, 4) float32 xyxy pixels; box_scores: (N,)
    max of the normalised map inside each box. raw_score: the model's unnormalised score.
    """

    score: float
    label: bool
    anomaly_map: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    raw_score: float = float("nan")
    image_path: str | None = None

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": "anomaly",
            "image_path": self.image_path,
            "score": float(self.score),
            "raw_score": float(self.raw_score),
            "label": bool(self.label),
            "anomalous_pixels": int(self.mask.sum()),
            "boxes": [[float(v) for v in b] for b in self.boxes],
            "box_scores": [float(s) for s in self.box_scores],
        }
        if include_maps:
            d["anomaly_map"] = self.anomaly_map.tolist()
        return d


@dataclass
class Detections:
    """Struct of arrays for N detected objects, shaped like supervision's `Detections`.

    xyxy: (N, 4) float32; mask: (N, H, W) bool or None; confidence: (N,) float32 or None;
    class_id: (N,) int64 or None; tracker_id: (N,) int64 or None; data: extra (N, ...) arrays.
    """

    xyxy: np.ndarray
    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None
    class_id: np.ndarray | None = None
    tracker_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = _as_array(self.xyxy, np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        for name, dtype in (("confidence", np.float32), ("class_id", np.int64), ("tracker_id", np.int64)):
            v = getattr(self, name)
            if v is not None:
                v = _as_array(v, dtype).reshape(-1)
                if len(v) != n:
                    raise DataError(f"Detections.{name} has {len(v)} entries for {n} boxes")
                setattr(self, name, v)
        if self.mask is not None:
            self.mask = _as_array(self.mask, bool)
            if self.mask.ndim != 3 or len(self.mask) != n:
                raise DataError(f"Detections.mask must be (N={n}, H, W), got {self.mask.shape}")
        for k, v in self.data.items():
            if len(v) != n:
                raise DataError(f"Detections.data[{k!r}] has {len(v)} entries for {n} boxes")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(xyxy=np.zeros((0, 4), np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        if isinstance(index, (int, np.integer)):
            index = [int(index)]

        def pick(v):
            return None if v is None else v[index]

        return Detections(
            xyxy=self.xyxy[index],
            mask=pick(self.mask),
            confidence=pick(self.confidence),
            class_id=pick(self.class_id),
            tracker_id=pick(self.tracker_id),
            data={k: v[index] for k, v in self.data.items()},
        )

    @property
    def area(self) -> np.ndarray:
        """(N,) box areas in pixels, or mask areas when masks are present."""
        if self.mask is not None:
            return self.mask.reshape(len(self), -1).sum(1).astype(np.float32)
        w = self.xyxy[:, 2] - self.xyxy[:, 0]
        h = self.xyxy[:, 3] - self.xyxy[:, 1]
        return (w * h).astype(np.float32)

    @property
    def center(self) -> np.ndarray:
        """(N, 2) box centres (x, y)."""
        return np.stack([(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2], 1)

    @classmethod
    def merge(cls, items: Sequence["Detections"]) -> "Detections":
        items = [d for d in items if len(d)]
        if not items:
            return cls.empty()

        def cat(name):
            vals = [getattr(d, name) for d in items]
            if any(v is None for v in vals):
                return None
            return np.concatenate(vals)

        keys = set(items[0].data)
        return cls(
            xyxy=np.concatenate([d.xyxy for d in items]),
            mask=cat("mask"),
            confidence=cat("confidence"),
            class_id=cat("class_id"),
            tracker_id=cat("tracker_id"),
            data={k: np.concatenate([d.data[k] for d in items]) for k in keys if all(k in d.data for d in items)},
        )

    def to_dict(self) -> dict[str, Any]:
        def lst(v):
            return None if v is None else v.tolist()

        return {
            "kind": "detections",
            "xyxy": self.xyxy.tolist(),
            "confidence": lst(self.confidence),
            "class_id": lst(self.class_id),
            "tracker_id": lst(self.tracker_id),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Detections":
        def arr(k):
            return None if d.get(k) is None else np.asarray(d[k])

        return cls(xyxy=np.asarray(d["xyxy"], np.float32).reshape(-1, 4), confidence=arr("confidence"),
                   class_id=arr("class_id"), tracker_id=arr("tracker_id"))


@dataclass
class ClassResult:
    """Image classification: probs (C,) float32 summing to 1; class_id = argmax."""

    probs: np.ndarray
    class_names: tuple[str, ...] = ()
    image_path: str | None = None

    @property
    def class_id(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def confidence(self) -> float:
        return float(self.probs[self.class_id])

    @property
    def class_name(self) -> str:
        return self.class_names[self.class_id] if self.class_names else str(self.class_id)

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 probability (1.0 for a single class)."""
        p = np.sort(self.probs)[::-1]
        return float(p[0] - (p[1] if len(p) > 1 else 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "class", "image_path": self.image_path, "class_id": self.class_id,
                "class_name": self.class_name, "confidence": self.confidence,
                "probs": [float(p) for p in self.probs]}


@dataclass
class SegResult:
    """Semantic segmentation: class_map (H, W) int64; probs (C, H, W) float32 or None."""

    class_map: np.ndarray
    probs: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    image_path: str | None = None

    def pixel_counts(self, num_classes: int | None = None) -> np.ndarray:
        n = num_classes or (len(self.class_names) or int(self.class_map.max()) + 1)
        return np.bincount(self.class_map.ravel(), minlength=n)

    def to_dict(self) -> dict[str, Any]:
        counts = self.pixel_counts()
        names = self.class_names or tuple(str(i) for i in range(len(counts)))
        return {"kind": "segmentation", "image_path": self.image_path,
                "pixel_counts": {names[i]: int(c) for i, c in enumerate(counts)}}


Prediction = Union[AnomalyResult, Detections, ClassResult, SegResult]
ImageLike = Union[np.ndarray, Frame]


@runtime_checkable
class Predictor(Protocol):
    """Anything that turns frames into typed predictions, in-process or exported."""

    def predict(self, frames: Sequence[ImageLike]) -> list[Prediction]: ...


def frame_image(x: ImageLike) -> np.ndarray:
    """The (H, W, 3) uint8 RGB array of a Frame or array."""
    return x.image if isinstance(x, Frame) else x
