"""Online event recognition on a frame stream, and the line stage that acts on it.

`OnlineEventRecognizer` runs a causal TSM (`fovea.models.video.tsm.OnlineTSM`) on every
`frame_stride`-th frame: one 2D forward per processed frame, the shifted channels cached, class
probabilities from the mean of the last `window` frame features (TSN consensus). `EventDebouncer`
is the pure decision core: a class is raised after `min_frames` consecutive processed frames at or
above `threshold` and re-armed after `clear_frames` below it. `VideoEventStage` wires them to a
`fovea.line` source through the line's public API only: it reads `Frame`s, writes `video_event`
records to an `EventLog`, and calls `on_stop(kind, event)` (the line's fail-safe stop, supplied by
the caller) for the classes in `stop_on`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from fovea.errors import ConfigError
from fovea.models.video.tsm import TSM, OnlineTSM
from fovea.video.dataset import LITE0_MEAN_255, LITE0_STD_255
from fovea.video.transforms import resize_short_side


class OnlineEventRecognizer:
    """frames (H, W, 3) uint8 RGB in, class probabilities (K,) out, one per processed frame.

    `fast=True` streams an inference copy of the model with BatchNorm folded and channels-last
    memory (`OnlineTSM(fold_bn=True, channels_last=True)`: the same probabilities up to float
    rounding, about 1.5x less CPU per frame, benchmarks/video.py --part online); the given model is
    left untouched either way."""

    def __init__(self, model: TSM, class_names: list[str], window: int = 8, frame_stride: int = 1,
                 short_side: int | None = None, mean=LITE0_MEAN_255, std=LITE0_STD_255,
                 warmup: int | None = None, fast: bool = True):
        if window < 1 or frame_stride < 1:
            raise ConfigError(f"window={window} and frame_stride={frame_stride} must be >= 1")
        self.online = OnlineTSM(model.eval(), fold_bn=fast, channels_last=fast)
        self.class_names = list(class_names)
        self.window, self.frame_stride, self.short_side = window, frame_stride, short_side
        # the first processed frames see zero shift caches and a part-filled window: they only warm up
        self.warmup = window if warmup is None else warmup
        if self.warmup < 1:
            raise ConfigError(f"warmup={warmup} must be >= 1 processed frame")
        self._mean = torch.tensor(mean).view(1, 3, 1, 1)
        self._std = torch.tensor(std).view(1, 3, 1, 1)
        self.n_seen = 0
        self.last_probs: np.ndarray | None = None

    def reset(self) -> None:
        self.online.reset()
        self.n_seen = 0
        self.last_probs = None

    def push(self, image: np.ndarray) -> np.ndarray | None:
        """Feed one frame; returns probabilities when this frame was processed and the stream is past
        its first `warmup` - 1 processed frames (default: the window is full), else None."""
        k = self.n_seen
        self.n_seen += 1
        if k % self.frame_stride:
            return None
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(1).float()   # (3, 1, H, W)
        if self.short_side:
            x = resize_short_side(x, self.short_side)
        self.online.step((x.transpose(0, 1) - self._mean) / self._std)
        if k // self.frame_stride + 1 < self.warmup:
            return None
        self.last_probs = F.softmax(self.online.logits(self.window), dim=-1)[0].numpy()
        return self.last_probs


@dataclass
class EventDebouncer:
    """Pure decision core: raise class k after `min_frames` consecutive scores >= threshold."""

    class_names: list[str]
    watch: tuple[str, ...] = ("jam",)
    threshold: float = 0.6
    min_frames: int = 2
    clear_frames: int = 5
    _above: dict[str, int] = field(default_factory=dict)
    _below: dict[str, int] = field(default_factory=dict)
    _active: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        unknown = [w for w in self.watch if w not in self.class_names]
        if unknown:
            raise ConfigError(f"watched events {unknown} are not classes of the model {self.class_names}")

    def update(self, probs: np.ndarray) -> list[str]:
        """Classes raised by this processed frame's probabilities (each once per episode)."""
        raised = []
        for name in self.watch:
            p = float(probs[self.class_names.index(name)])
            if p >= self.threshold:
                self._above[name] = self._above.get(name, 0) + 1
                self._below[name] = 0
                if self._above[name] >= self.min_frames and name not in self._active:
                    self._active.add(name)
                    raised.append(name)
            else:
                self._above[name] = 0
                self._below[name] = self._below.get(name, 0) + 1
                if self._below[name] >= self.clear_frames:
                    self._active.discard(name)
        return raised


class VideoEventStage:
    """Line stage: source frames -> online recognizer -> `video_event` log records (+ fail-safe stop).

    log: a `fovea.line.events.EventLog` (or anything with `emit(t, type, **fields)`); on_stop: called
    as on_stop(kind, record) for kinds in `stop_on` (e.g. the actuator side's safe stop)."""

    def __init__(self, recognizer: OnlineEventRecognizer, debouncer: EventDebouncer, log=None,
                 on_stop: Callable[[str, dict[str, Any]], None] | None = None, stop_on: tuple[str, ...] = ()):
        self.recognizer, self.debouncer, self.log = recognizer, debouncer, log
        self.on_stop, self.stop_on = on_stop, tuple(stop_on)
        self.raised: list[dict[str, Any]] = []
        self.infer_s: list[float] = []

    def process(self, frame) -> list[dict[str, Any]]:
        """One `fovea.core.Frame`; returns the events it raised."""
        t0 = time.perf_counter()
        probs = self.recognizer.push(frame.image)
        if probs is None:
            return []
        self.infer_s.append(time.perf_counter() - t0)
        t_exp = float(frame.meta.get("t_exposure", frame.t_capture)) if frame.meta else float(frame.t_capture)
        out = []
        for kind in self.debouncer.update(probs):
            rec = {"kind": kind, "frame": int(frame.index), "t_exposure": t_exp,
                   "score": float(probs[self.recognizer.class_names.index(kind)]),
                   "stop": kind in self.stop_on}
            if self.log is not None:
                self.log.emit(frame.t_capture, "video_event", **rec)
            if rec["stop"] and self.on_stop is not None:
                self.on_stop(kind, rec)
            self.raised.append(rec)
            out.append(rec)
        return out

    def run(self, source, max_frames: int | None = None) -> list[dict[str, Any]]:
        """Read the source to its end (or max_frames) and process every frame."""
        n = 0
        while max_frames is None or n < max_frames:
            frame = source.read()
            if frame is None:
                break
            self.process(frame)
            n += 1
        return self.raised
