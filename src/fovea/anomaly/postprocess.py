"""Anomaly post-processing: map smoothing, thresholds, normalisation (threshold -> 0.5), boxes.

Torch pieces (`gaussian_blur_map`, `normalize_torch`) are plain tensor arithmetic so they run
inside TorchScript and ONNX exports; numpy pieces (`normalize`, `boxes_from_mask`,
`make_anomaly_result`, `anomaly_result_from_normalized`) are the one host-side path shared by
in-process and exported models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from fovea.core import AnomalyResult
from fovea.engine.metrics import best_f1_threshold
from fovea.engine.runtime import plain_eager
from fovea.errors import ConfigError, DataError

__all__ = [
    "gaussian_kernel_size",
    "gaussian_blur_map",
    "Thresholds",
    "fit_thresholds",
    "normalize",
    "normalize_torch",
    "MaskBoxes",
    "boxes_from_mask",
    "make_anomaly_result",
    "anomaly_result_from_normalized",
]


# ------------------------------------------------------------------------- smoothing (torch)


def gaussian_kernel_size(sigma: float) -> int:
    """Kernel size 2 * ceil(4 * sigma) + 1, as Anomalib's GaussianBlur2d (33 for sigma = 4)."""
    return 2 * int(math.ceil(4.0 * sigma)) + 1


def gaussian_blur_map(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Gaussian smoothing of anomaly maps (B, C, H, W) -> same shape; separable, reflect padding.

    Kernel size 2 * ceil(4 * sigma) + 1 (radius capped at min(H, W) - 1 so reflect padding stays
    valid on tiny maps), weights normalised to sum 1. Eagerly on CPU it multiplies by two cached
    dense (H, H) and (W, W) blur matrices (built by running the convolution on an identity);
    while scripting, tracing or exporting it is two 1-D convolutions. Scriptable and ONNX-exportable.
    """
    if sigma <= 0.0:
        return maps
    b, c, h, w = maps.shape
    radius = int(math.ceil(4.0 * sigma))
    if not torch.jit.is_tracing():  # traces fix the size anyway; comparing traced sizes only warns
        radius = min(radius, min(h, w) - 1)
    if radius < 1:
        return maps
    if not torch.jit.is_scripting():  # TorchScript skips this block; it compiles only the conv path
        if plain_eager(maps):  # the same operator as two dense matrices: ~4x faster than 1-D convolutions
            gh = _blur_matrix(h, float(sigma), radius, maps.dtype)
            gw = gh if w == h else _blur_matrix(w, float(sigma), radius, maps.dtype)
            return torch.matmul(torch.matmul(gh, maps), gw.T)
    return _blur_conv(maps, sigma, radius)


_BLUR_MATRICES: dict[tuple, torch.Tensor] = {}


def _blur_matrix(n: int, sigma: float, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, n) matrix of the 1-D blur below (reflect padding included): the conv applied to the identity."""
    key = (n, sigma, radius, dtype)
    m = _BLUR_MATRICES.get(key)
    if m is None:
        eye = torch.eye(n, dtype=torch.float64).reshape(1, 1, n, n)  # column j = unit impulse at j
        m = _blur_conv(eye, sigma, radius, rows_only=True)[0, 0].to(dtype)
        if len(_BLUR_MATRICES) > 32:
            _BLUR_MATRICES.clear()
        _BLUR_MATRICES[key] = m
    return m


def _blur_conv(maps: torch.Tensor, sigma: float, radius: int, rows_only: bool = False) -> torch.Tensor:
    """Separable Gaussian as two 1-D convolutions with reflect padding (the export path)."""
    b, c, h, w = maps.shape
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    k = k / k.sum()
    y = maps.reshape(b * c, 1, h, w)
    if not rows_only:
        y = F.conv2d(F.pad(y, [radius, radius, 0, 0], mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, [0, 0, radius, radius], mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


# ------------------------------------------------------------------------- thresholds


@dataclass
class Thresholds:
    """Decision thresholds and normalisation ranges in raw model units.

    image_threshold/pixel_threshold map to 0.5 after normalisation; score_min/max and
    map_min/max are the validation ranges used as the normalisation scale. *_rule say how each
    threshold was chosen (shown in reports).
    """

    image_threshold: float
    pixel_threshold: float
    score_min: float
    score_max: float
    map_min: float
    map_max: float
    image_rule: str = ""
    pixel_rule: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Thresholds":
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("image_threshold", "pixel_threshold", "score_min", "score_max", "map_min", "map_max")
                   if n not in d]
        if missing:
            raise ConfigError(f"thresholds dict lacks {missing} (got keys {sorted(d)}). "
                              "Fix: refit thresholds with `fovea anomaly fit`.")
        return cls(**{k: (str(v) if k.endswith("_rule") else float(v)) for k, v in d.items() if k in names})


def _range(lo: float, hi: float, threshold: float) -> tuple[float, float]:
    """Keep the normalisation span positive: a degenerate range gets width max(|threshold|, 1)."""
    if hi > lo:
        return lo, hi
    half = max(abs(threshold), 1.0) / 2.0
    return lo - half, hi + half


def _normal_only_threshold(scores: np.ndarray, quantile: float, margin: float) -> tuple[float, str]:
    q = float(np.quantile(scores, quantile))
    spread = q - float(np.median(scores))
    if spread <= 0.0:
        spread = 0.01 * max(abs(q), 1e-6)
    rule = (f"normal-only validation ({scores.size} images): {quantile:g}-quantile of normal scores "
            f"+ {margin:g} x (that quantile - median)")
    return q + margin * spread, rule


def fit_thresholds(val_scores, val_labels, val_maps=None, val_masks=None, *,
                   normal_only_quantile: float = 1.0, normal_only_margin: float = 0.1) -> Thresholds:
    """Choose image/pixel thresholds and normalisation ranges on validation data (raw units).

    val_scores: (N,), val_labels: (N,) 0/1; val_maps: (N, h, w) raw maps or None; val_masks:
    (N, h, w) bool or None. Image threshold: best F1 when both classes are present; with normal
    images only: the `normal_only_quantile` of normal scores (default 1.0 = the maximum) plus
    `normal_only_margin` times its distance to the median, so a new normal image scoring like the
    validation normals stays below it (Anomalib #2433 used the minimum and flagged everything).
    Pixel threshold: best F1 over pixels when masks hold both classes, else equal to the image
    threshold (threshold matching). Ranges: validation min/max of scores and of maps (scores when
    no maps are given).
    """
    s = np.asarray(val_scores, np.float64).ravel()
    y = np.asarray(val_labels).ravel()
    if s.size == 0 or s.size != y.size:
        raise DataError(f"fit_thresholds needs one label per validation score, got {s.size} scores and "
                        f"{y.size} labels. Fix: give the validation split at least one normal image.")
    if not np.isfinite(s).all():
        raise DataError("validation scores hold NaN/inf. Fix: check the model output on the validation images.")
    y = y.astype(bool)
    if not 0.0 < normal_only_quantile <= 1.0 or normal_only_margin < 0.0:
        raise ConfigError(f"normal_only_quantile must be in (0, 1] and normal_only_margin >= 0, got "
                          f"{normal_only_quantile}, {normal_only_margin}")
    n_pos = int(y.sum())
    if n_pos == s.size:
        raise DataError(f"all {s.size} validation images are anomalous; thresholds need normal images. "
                        "Fix: add normal images to the validation split.")
    if n_pos:
        image_thr, f1 = best_f1_threshold(s, y)
        image_rule = f"best F1 on validation ({s.size - n_pos} normal, {n_pos} anomalous; F1 {f1:.3f})"
    else:
        image_thr, image_rule = _normal_only_threshold(s, normal_only_quantile, normal_only_margin)

    pixel_thr, pixel_rule = image_thr, "matched to the image threshold (no validation masks with anomalies)"
    map_min, map_max = float(s.min()), float(s.max())
    if val_maps is not None:
        maps = np.asarray(val_maps, np.float32)
        if maps.shape[0] != s.size:
            raise DataError(f"{maps.shape[0]} validation maps for {s.size} scores")
        if not np.isfinite(maps).all():
            raise DataError("validation maps hold NaN/inf. Fix: check the model output.")
        map_min, map_max = float(maps.min()), float(maps.max())
        if val_masks is not None:
            masks = np.asarray(val_masks).astype(bool)
            if masks.shape != maps.shape:
                raise DataError(f"validation masks {masks.shape} and maps {maps.shape} differ in size. "
                                "Fix: resize masks (nearest) to the map resolution.")
            n_anom = int(masks.sum())
            if 0 < n_anom < masks.size:
                pixel_thr, pf1 = best_f1_threshold(maps.ravel(), masks.ravel())
                pixel_rule = f"best F1 on validation pixels ({n_anom} anomalous of {masks.size}; F1 {pf1:.3f})"
    elif val_masks is not None:
        raise DataError("val_masks given without val_maps. Fix: pass the raw validation maps too.")
    else:
        pixel_rule += "; map range from image scores (no validation maps)"
    score_min, score_max = _range(float(s.min()), float(s.max()), image_thr)
    map_min, map_max = _range(map_min, map_max, pixel_thr)
    return Thresholds(image_threshold=float(image_thr), pixel_threshold=float(pixel_thr), score_min=score_min,
                      score_max=score_max, map_min=map_min, map_max=map_max, image_rule=image_rule,
                      pixel_rule=pixel_rule)


# ------------------------------------------------------------------------- normalisation


def normalize(x, threshold: float, vmin: float, vmax: float):
    """clip((x - threshold) / (vmax - vmin) + 0.5, 0, 1): the threshold maps to 0.5.

    numpy; float32 input is computed in float32 (same ops as `normalize_torch`), else float64.
    Returns a float for scalar input.
    """
    if not vmax > vmin:
        raise DataError(f"normalisation range must have vmax > vmin, got [{vmin}, {vmax}]. "
                        "Fix: refit thresholds on more than one validation image.")
    a = np.asarray(x)
    dt = np.float32 if a.dtype == np.float32 else np.float64
    a = a.astype(dt, copy=False)
    out = np.clip((a - dt(threshold)) / (dt(vmax) - dt(vmin)) + dt(0.5), dt(0.0), dt(1.0))
    return float(out) if out.ndim == 0 else out


def normalize_torch(x: torch.Tensor, threshold: torch.Tensor, vmin: torch.Tensor,
                    vmax: torch.Tensor) -> torch.Tensor:
    """Torch twin of `normalize` for exported graphs: arithmetic and clamp only (TorchScript/ONNX)."""
    return torch.clamp((x - threshold) / (vmax - vmin) + 0.5, 0.0, 1.0)


# ------------------------------------------------------------------------- boxes


class MaskBoxes(tuple):
    """(boxes (N, 4) float32 xyxy, scores (N,) float32); `.removed` counts components under min_area."""

    removed: int

    def __new__(cls, boxes: np.ndarray, scores: np.ndarray, removed: int = 0):
        self = super().__new__(cls, (boxes, scores))
        self.removed = int(removed)
        return self

    @property
    def boxes(self) -> np.ndarray:
        return self[0]

    @property
    def scores(self) -> np.ndarray:
        return self[1]


def boxes_from_mask(mask, anomaly_map, *, min_area: int = 0, connectivity: int = 8) -> MaskBoxes:
    """One box per connected component of `mask` (H, W) bool, scored by the max of `anomaly_map` in it.

    Boxes are xyxy in pixel-edge coordinates with x2/y2 EXCLUSIVE: a component covering columns
    3..5 and row 7 gives [3, 7, 6, 8], so x2 - x1 is the width in pixels. Sorted by score,
    highest first. Components with fewer than `min_area` pixels are dropped and counted in
    `.removed`. Unpacks as `boxes, scores = boxes_from_mask(...)`.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    a = np.asarray(anomaly_map)
    if m.ndim != 2 or a.shape != m.shape:
        raise DataError(f"boxes_from_mask needs a (H, W) mask and a map of the same size, got {m.shape} and "
                        f"{a.shape}")
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity}")
    empty = MaskBoxes(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0)
    if not m.any():
        return empty
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, n = ndimage.label(m, structure=structure)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    slices = ndimage.find_objects(labels)
    scores = _component_max(a, labels, slices)
    boxes = np.array([[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in slices], np.float32)
    keep = areas >= min_area
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return MaskBoxes(boxes[order].reshape(-1, 4), scores[order], int((~keep).sum()))


def _component_max(a: np.ndarray, labels: np.ndarray, slices: list) -> np.ndarray:
    """Max of `a` over each labelled component (labels 1..n), searched inside its bounding box.

    Same values as `ndimage.maximum(a, labels, 1..n)`, which sorts every pixel of the image
    (~8 ms for a 256 px map, most of a defective image's post-processing); a box scan costs the
    component's box area.
    """
    out = np.empty(len(slices), np.float32)
    for i, sl in enumerate(slices):
        out[i] = a[sl][labels[sl] == i + 1].max()
    return out


# ------------------------------------------------------------------------- results


def _as_map(raw_map) -> np.ndarray:
    a = np.asarray(raw_map)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise DataError(f"anomaly map must be (H, W) (leading singleton dims allowed), got {np.shape(raw_map)}")
    return a


def anomaly_result_from_normalized(score: float, anomaly_map, raw_score: float = float("nan"),
                                   image_path: str | None = None, *, min_box_area: int = 0) -> AnomalyResult:
    """AnomalyResult from already-normalised outputs (e.g. an exported graph): label, mask at 0.5, boxes."""
    amap = _as_map(anomaly_map).astype(np.float32, copy=False)
    score = float(np.asarray(score).reshape(-1)[0])
    mask = amap > 0.5
    boxes, box_scores = boxes_from_mask(mask, amap, min_area=min_box_area)
    return AnomalyResult(score=score, label=bool(score > 0.5), anomaly_map=amap, mask=mask, boxes=boxes,
                         box_scores=box_scores, raw_score=float(np.asarray(raw_score).reshape(-1)[0]),
                         image_path=image_path)


def make_anomaly_result(raw_score: float, raw_map, thresholds: Thresholds, image_path: str | None = None, *,
                        min_box_area: int = 0) -> AnomalyResult:
    """Raw model outputs -> AnomalyResult: normalise (threshold -> 0.5), label = score > 0.5,
    mask = map > 0.5, boxes from the mask. raw_map: (H, W) at the image's resolution."""
    t = thresholds
    raw = float(np.asarray(raw_score).reshape(-1)[0])
    score = normalize(raw, t.image_threshold, t.score_min, t.score_max)
    amap = normalize(_as_map(raw_map).astype(np.float32), t.pixel_threshold, t.map_min, t.map_max)
    return anomaly_result_from_normalized(score, amap, raw, image_path, min_box_area=min_box_area)
