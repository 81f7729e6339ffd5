"""Localization of items on the belt: background subtraction + contours by default.

Any `Detections` producer plugs in: an object with `localize(frame) -> Detections`, or a
`fovea.core.Predictor` whose `predict([frame])[0]` is a `Detections`. Detections carry pixel
boxes; `data["solidity"]` (contour area / hull area) lets the policy tell one apple from two
touching ones, and `tracker_id` (when a producer has one) is kept as a hint.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from fovea.core import Detections, Frame
from fovea.errors import ConfigError, DataError


@runtime_checkable
class Localizer(Protocol):
    def localize(self, frame: Frame) -> Detections: ...


class BackgroundSubtractor:
    """Foreground = pixels far from a belt model learned as the median of the first frames.

    The model keeps adapting slowly (running mean) on pixels that are background, so slow light
    changes do not turn the belt into objects. During warm-up it returns no detections.
    """

    def __init__(self, threshold: int = 30, min_area_px: int = 20, warmup_frames: int = 5,
                 learn_rate: float = 0.02, open_px: int = 3, background: np.ndarray | None = None):
        if threshold <= 0 or min_area_px < 1 or warmup_frames < 1:
            raise ConfigError(f"BackgroundSubtractor: threshold={threshold}, min_area_px={min_area_px}, "
                              f"warmup_frames={warmup_frames} must all be positive")
        self.threshold, self.min_area_px, self.warmup_frames = threshold, min_area_px, warmup_frames
        self.learn_rate = learn_rate
        self.kernel = np.ones((open_px, open_px), np.uint8) if open_px > 1 else None
        self.bg = None if background is None else background.astype(np.float32)
        self._bg_u8 = None if background is None else np.clip(self.bg + 0.5, 0, 255).astype(np.uint8)
        self._warm: list[np.ndarray] = []
        self.learn_every = 5
        self._n = 0

    @property
    def ready(self) -> bool:
        return self.bg is not None

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 0/255 foreground mask of an (H, W, 3) uint8 image against the belt model."""
        if self.bg.shape != image.shape:
            raise DataError(f"frame shape {image.shape} differs from the learned belt {self.bg.shape}; "
                            "a source must not change resolution mid-run")
        b, g, r = cv2.split(cv2.absdiff(cv2.GaussianBlur(image, (3, 3), 0), self._bg_u8))
        diff = cv2.max(cv2.max(b, g), r)
        _, fg = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        if self.kernel is not None:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self.kernel)
        return fg

    def localize(self, frame: Frame) -> Detections:
        img = frame.image
        if self.bg is None:
            self._warm.append(cv2.GaussianBlur(img, (3, 3), 0))
            if len(self._warm) >= self.warmup_frames:
                self.bg = np.median(np.stack(self._warm), axis=0).astype(np.float32)
                self._bg_u8 = np.clip(self.bg + 0.5, 0, 255).astype(np.uint8)
                self._warm = []
            return Detections.empty()
        fg = self.foreground(img)
        found = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours = found[0] if len(found) == 2 else found[1]      # OpenCV 4/5 vs 3 return shapes
        boxes, solidity, areas = [], [], []
        for c in contours:
            area = float(cv2.contourArea(c))
            if area < self.min_area_px:
                continue
            hull = float(cv2.contourArea(cv2.convexHull(c)))
            x, y, w, h = cv2.boundingRect(c)
            boxes.append((x, y, x + w, y + h))
            solidity.append(area / hull if hull > 0 else 0.0)
            areas.append(area)
        self._n += 1
        if self.learn_rate > 0 and self._n % self.learn_every == 0:
            # slow adaptation on belt pixels only (objects and their surroundings excluded)
            bgmask = cv2.bitwise_not(cv2.dilate(fg, np.ones((5, 5), np.uint8)))
            cv2.accumulateWeighted(img.astype(np.float32), self.bg, self.learn_rate * self.learn_every, mask=bgmask)
            self._bg_u8 = np.clip(self.bg + 0.5, 0, 255).astype(np.uint8)
        if not boxes:
            return Detections.empty()
        return Detections(xyxy=np.asarray(boxes, np.float32), confidence=np.ones(len(boxes), np.float32),
                          data={"solidity": np.asarray(solidity, np.float32),
                                "area_px": np.asarray(areas, np.float32)})


class PredictorLocalizer:
    """Adapts a `Predictor` that returns `Detections` for one frame into a `Localizer`."""

    def __init__(self, predictor):
        self.predictor = predictor

    def localize(self, frame: Frame) -> Detections:
        out = self.predictor.predict([frame])
        if not out or not isinstance(out[0], Detections):
            raise DataError(f"{type(self.predictor).__name__}.predict did not return Detections for a frame; "
                            "a line localizer must produce fovea.core.Detections")
        return out[0]


def as_localizer(obj) -> Localizer:
    """Accept a Localizer or a Detections-producing Predictor."""
    if hasattr(obj, "localize"):
        return obj
    if hasattr(obj, "predict"):
        return PredictorLocalizer(obj)
    raise ConfigError(f"{type(obj).__name__} is neither a Localizer (localize(frame)) nor a Predictor")


def crop(image: np.ndarray, xyxy: np.ndarray, pad: int) -> np.ndarray:
    """(h, w, 3) crop of `image` around box xyxy with `pad` pixels margin, clipped to the image."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in xyxy)
    x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, W), min(y1 + pad, H)
    return np.ascontiguousarray(image[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
