"""Shared types: frames in, typed predictions out.

One result type per kind of output (`AnomalyResult`, `Detections`, `ClassResult`,
`SegResult`), each with `to_dict`/`from_dict` adapters for JSON lines; never a loose dict.
A `Predictor` is anything with `predict(frames) -> list[Prediction]`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from fovea.errors import ConfigError, DataError


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
        check_image(self.image, f"Frame.image (source {self.source_id!r}, index {self.index})")


def check_config_keys(cls, d, source: str = "") -> None:
    """Refuse keys of d (e.g. parsed YAML) that are not fields of dataclass cls, naming the valid ones."""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(d) - names)
    if bad:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}unknown {cls.__name__} keys {bad}. Fix: use only {sorted(names)}.")


def check_image(image: Any, where: str = "image") -> np.ndarray:
    """Return `image` if it is an (H, W, 3) uint8 RGB array, else a DataError naming `where` and the fix.

    The one input check of every predictor and of `Frame`.
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise DataError(f"{where}: expected an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}. "
                        "Fix: read images with fovea.io.read_image or convert with fovea.io.to_rgb_uint8.")
    return image


def _as_array(x, dtype=None) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def _opt_array(d: dict[str, Any], key: str, dtype=None) -> np.ndarray | None:
    return None if d.get(key) is None else np.asarray(d[key], dtype=dtype)


def _check_kind(d: dict[str, Any], kind: str, cls: str) -> None:
    if d.get("kind", kind) != kind:
        raise DataError(f"{cls}.from_dict got a {d.get('kind')!r} record, expected kind {kind!r}. "
                        f"Fix: read it with the result type of that kind.")


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
            d["mask"] = self.mask.astype(np.uint8).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnomalyResult":
        """Inverse of `to_dict`. A record written without maps gives (0, 0) `anomaly_map` and `mask`."""
        _check_kind(d, "anomaly", "AnomalyResult")
        amap = _opt_array(d, "anomaly_map", np.float32)
        amap = np.zeros((0, 0), np.float32) if amap is None else amap
        mask = _opt_array(d, "mask", bool)
        mask = (amap > 0.5) if mask is None and amap.size else (np.zeros((0, 0), bool) if mask is None else mask)
        raw = d.get("raw_score")
        return cls(score=float(d["score"]), label=bool(d["label"]), anomaly_map=amap, mask=mask,
                   boxes=np.asarray(d.get("boxes", []), np.float32).reshape(-1, 4),
                   box_scores=np.asarray(d.get("box_scores", []), np.float32).reshape(-1),
                   raw_score=float("nan") if raw is None else float(raw), image_path=d.get("image_path"))


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

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-safe record; `mask` (as 0/1 lists) only with include_maps; `data` arrays as lists."""
        def lst(v):
            return None if v is None else v.tolist()

        d = {
            "kind": "detections",
            "xyxy": self.xyxy.tolist(),
            "confidence": lst(self.confidence),
            "class_id": lst(self.class_id),
            "tracker_id": lst(self.tracker_id),
            "data": {k: np.asarray(v).tolist() for k, v in self.data.items()},
        }
        if include_maps and self.mask is not None:
            d["mask"] = self.mask.astype(np.uint8).tolist()
            d["mask_shape"] = list(self.mask.shape)  # keeps (0, H, W) for an empty set
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Detections":
        """Inverse of `to_dict`."""
        _check_kind(d, "detections", "Detections")
        mask = _opt_array(d, "mask", bool)
        if mask is not None and "mask_shape" in d:
            mask = mask.reshape(d["mask_shape"])
        return cls(xyxy=np.asarray(d["xyxy"], np.float32).reshape(-1, 4), mask=mask,
                   confidence=_opt_array(d, "confidence"), class_id=_opt_array(d, "class_id"),
                   tracker_id=_opt_array(d, "tracker_id"),
                   data={k: np.asarray(v) for k, v in (d.get("data") or {}).items()})

    # --- adapters (supervision-shaped): one constructor per result family ---------------------------
    @classmethod
    def from_anomaly(cls, result: "AnomalyResult") -> "Detections":
        """One detection per anomaly box: xyxy = `result.boxes`, confidence = `result.box_scores`,
        class_id 0, data["class_name"] = "anomaly"; mask = the connected component of `result.mask`
        (8-connected, as `boxes_from_mask` finds them) whose bounding box is that box, when the
        result carries its mask."""
        n = len(result.boxes)
        mask = None
        if result.mask.ndim == 2 and result.mask.size:
            by_box: dict[tuple, list[np.ndarray]] = {}
            for box, m in _components(result.mask):
                by_box.setdefault(box, []).append(m)
            mask = np.zeros((n, *result.mask.shape), bool)
            for i, box in enumerate(np.asarray(result.boxes, np.float32)):
                found = by_box.get(tuple(float(v) for v in box))
                m = found.pop(0) if found else None
                if m is None:
                    raise DataError(f"anomaly box {box.tolist()} is no connected component of the result's mask "
                                    f"({result.image_path}). Fix: build results with fovea's anomaly predictor.")
                mask[i] = m
        return cls(xyxy=result.boxes, mask=mask, confidence=result.box_scores, class_id=np.zeros(n, np.int64),
                   data={"class_name": np.array(["anomaly"] * n, dtype=object)})

    @classmethod
    def from_segmentation(cls, result: "SegResult", background: int | None = 0, min_area_px: int = 1,
                          connectivity: int = 8) -> "Detections":
        """One detection per connected component of each class in `result.class_map` (background skipped).

        xyxy: component bounding boxes in pixel edges (x2, y2 exclusive); mask (N, H, W);
        class_id: the class; confidence: mean probability of that class over the component (1.0 when
        the result has no probabilities); data["class_name"]. Components smaller than `min_area_px`
        are dropped. Ordered by class, then by the component's first pixel in raster order.
        """
        if connectivity not in (4, 8):
            raise DataError(f"connectivity must be 4 or 8, got {connectivity}")
        cmap = np.asarray(result.class_map)
        names = result.class_names
        boxes, masks, ids, conf = [], [], [], []
        for c in np.unique(cmap):
            if background is not None and c == background:
                continue
            for box, m in _components(cmap == c, connectivity):
                if m.sum() < min_area_px:
                    continue
                boxes.append(box)
                masks.append(m)
                ids.append(int(c))
                conf.append(float(result.probs[c][m].mean()) if result.probs is not None else 1.0)
        n = len(boxes)
        label = [names[i] if i < len(names) else str(i) for i in ids]
        return cls(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
                   mask=np.asarray(masks, bool).reshape(n, *cmap.shape), confidence=np.asarray(conf, np.float32),
                   class_id=np.asarray(ids, np.int64), data={"class_name": np.array(label, dtype=object)})


def _components(mask: np.ndarray, connectivity: int = 8) -> list[tuple[tuple[float, ...], np.ndarray]]:
    """Connected components of a (H, W) bool mask: [(xyxy box, x2/y2 exclusive, (H, W) bool mask)], raster order."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, n = ndimage.label(np.asarray(mask, bool), structure=structure)
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        box = (float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop))
        out.append((box, labels == i))
    return out


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

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-safe record (include_maps: accepted for a uniform signature; a class result has no maps)."""
        return {"kind": "classify", "image_path": self.image_path, "class_id": self.class_id,
                "class_name": self.class_name, "confidence": self.confidence,
                "probs": [float(p) for p in self.probs], "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassResult":
        """Inverse of `to_dict`."""
        _check_kind(d, "classify", "ClassResult")
        return cls(probs=np.asarray(d["probs"], np.float32), class_names=tuple(d.get("class_names") or ()),
                   image_path=d.get("image_path"))


@dataclass
class CaptionResult:
    """Image captioning: text; tokens (L,) int64 ids up to and without the end token; mean_logprob: the
    decoder's mean log-probability of its chosen tokens (a confidence)."""

    text: str
    tokens: np.ndarray
    mean_logprob: float = 0.0
    image_path: str | None = None

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-safe record (include_maps: accepted for a uniform signature; a caption has no maps)."""
        return {"kind": "caption", "image_path": self.image_path, "text": self.text,
                "tokens": [int(t) for t in self.tokens], "mean_logprob": float(self.mean_logprob)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaptionResult":
        """Inverse of `to_dict`."""
        _check_kind(d, "caption", "CaptionResult")
        return cls(text=str(d["text"]), tokens=np.asarray(d.get("tokens", []), np.int64),
                   mean_logprob=float(d.get("mean_logprob", 0.0)), image_path=d.get("image_path"))


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

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-safe record: pixel counts per class; with include_maps also the class map and the probabilities."""
        counts = self.pixel_counts()
        names = self.class_names or tuple(str(i) for i in range(len(counts)))
        d: dict[str, Any] = {"kind": "segment", "image_path": self.image_path, "class_names": list(self.class_names),
                             "pixel_counts": {names[i]: int(c) for i, c in enumerate(counts)}}
        if include_maps:
            d["class_map"] = self.class_map.tolist()
            d["probs"] = None if self.probs is None else self.probs.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegResult":
        """Inverse of `to_dict(include_maps=True)`; a record without its class map is an error."""
        _check_kind(d, "segment", "SegResult")
        if d.get("class_map") is None:
            raise DataError(f"segmentation record {d.get('image_path')!r} holds no class map (written with "
                            "include_maps=False). Fix: write it with result.to_dict(include_maps=True).")
        return cls(class_map=np.asarray(d["class_map"], np.int64), probs=_opt_array(d, "probs", np.float32),
                   class_names=tuple(d.get("class_names") or ()), image_path=d.get("image_path"))


Prediction = Union[AnomalyResult, Detections, ClassResult, SegResult, CaptionResult]
ImageLike = Union[np.ndarray, Frame]


@runtime_checkable
class Predictor(Protocol):
    """Anything that turns frames into typed predictions, in-process or exported.

    `predict(frames)` is batched (one result per frame, in order); `predict_one(frame)` gives the
    same result for one. fovea's own predictors (`fovea.engine.predictor.Predictor`) also carry
    `kind`, the task name ("anomaly", "classify", "segment"); the line needs only `predict`.
    """

    def predict(self, frames: Sequence[ImageLike]) -> list[Prediction]: ...

    def predict_one(self, frame: ImageLike) -> Prediction: ...
