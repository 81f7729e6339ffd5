"""Test doubles for line runs: a ground-truth oracle classifier and fault-injecting localizers.

These stand in for real models so 10,000-object runs finish in minutes; they read the
synthetic conveyor's ground truth that the runner forwards in crop metadata
(`meta["truth_class"]`). Never use them as a model on a real line.
"""

from __future__ import annotations

import numpy as np

from fovea.core import ClassResult, Detections, Frame
from fovea.errors import ConfigError
from fovea.line.clock import RealClock


class OraclePredictor:
    """TEST DOUBLE: labels crops from ground truth with a controllable error rate and latency.

    A wrong label (probability `error_rate` per crop) picks another class uniformly. The top
    probability is drawn from U(conf_low, 0.99). `latency_s` (+ `per_crop_s` each) passes on the
    line clock; `stalls` = [(t, seconds), ...] makes the first call at or after clock time t
    hang for that long (a model stall).
    """

    def __init__(self, class_names=("good", "damaged", "box"), error_rate: float = 0.0, conf_low: float = 0.85,
                 latency_s: float = 0.0, per_crop_s: float = 0.0, clock=None, stalls=(), seed: int = 0):
        if not 0 <= error_rate <= 1 or not 0 < conf_low <= 0.99:
            raise ConfigError(f"OraclePredictor: error_rate={error_rate} must be in [0, 1], conf_low={conf_low} in (0, 0.99]")
        self.class_names = tuple(class_names)
        self.error_rate, self.conf_low = error_rate, conf_low
        self.latency_s, self.per_crop_s = latency_s, per_crop_s
        self.clock = clock or RealClock()
        self.stalls = sorted(stalls)
        self.seed = seed
        self.calls = 0

    def predict(self, frames) -> list[ClassResult]:
        self.calls += 1
        now = self.clock.now()
        delay = self.latency_s + self.per_crop_s * len(frames)
        while self.stalls and now >= self.stalls[0][0]:
            delay += self.stalls.pop(0)[1]
        if delay > 0:
            self.clock.sleep(delay)
        return [self._one(f) for f in frames]

    def _one(self, f) -> ClassResult:
        meta = f.meta if isinstance(f, Frame) else {}
        C = len(self.class_names)
        truth = meta.get("truth_class")
        key = [self.seed, int(meta.get("frame_index", 0)), int(meta.get("truth_uid", -1)) + 1]
        rng = np.random.default_rng(key)
        if truth in self.class_names:
            k = self.class_names.index(truth)
            if rng.random() < self.error_rate:
                k = int(rng.choice([j for j in range(C) if j != k]))
            top = rng.uniform(self.conf_low, 0.99)
        else:
            k, top = int(rng.integers(C)), 1.0 / C + 0.01
        rest = rng.random(C - 1) + 1e-3
        rest = rest / rest.sum() * (1 - top)
        probs = np.empty(C, np.float32)
        probs[k] = top
        probs[np.arange(C) != k] = rest
        return ClassResult(probs=probs, class_names=self.class_names)


class FaultyLocalizer:
    """Wraps a localizer: blanks its output on `dropout_frames`, and optionally adds tracker ids.

    With `tracker_ids=True` each detection gets the ground-truth uid of its best-matching item as
    `tracker_id` (a perfect external tracker); `swap_ids_at=(frame, uid_a, uid_b)` swaps two of
    them from that frame on (an ID switch).
    """

    def __init__(self, inner, dropout_frames=(), tracker_ids: bool = False, swap_ids_at=None):
        self.inner = inner
        self.dropout = set(dropout_frames)
        self.tracker_ids = tracker_ids
        self.swap = swap_ids_at

    def localize(self, frame: Frame) -> Detections:
        dets = self.inner.localize(frame)
        if frame.index in self.dropout:
            return Detections.empty()
        if self.tracker_ids and len(dets):
            from fovea.line.runner import match_truth

            uids = match_truth(dets.xyxy, frame.meta.get("truth", []))
            ids = np.array([-1 if u is None else u for u in uids], np.int64)
            if self.swap is not None and frame.index >= self.swap[0]:
                a, b = self.swap[1], self.swap[2]
                ids = np.where(ids == a, -2, ids)
                ids = np.where(ids == b, a, ids)
                ids = np.where(ids == -2, b, ids)
            dets.tracker_id = ids
        return dets
