"""Frame sources: synthetic conveyor camera, video file, camera index, RTSP URL, image folder.

Every frame's `t_capture` is taken from the line clock right after the grab. A failed read
raises `LineError` (the runner logs a fault); it is never replaced by a black or repeated frame.
`read()` returns None at the end of a finite source.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from fovea.core import Frame
from fovea.errors import ConfigError, LineError
from fovea.line.clock import RealClock

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ConveyorSource:
    """A camera looking at `fovea.synth.conveyor.Conveyor`, with a small driver buffer.

    Frames are exposed at t0 + k / fps. A read returns the oldest frame still in the driver's
    ring of `driver_buffer` frames (older ones were overwritten, as in V4L2), waiting for the
    next exposure when none is new. Fault injection by exposure index: `black_frames`,
    `frozen_frames` (repeat the previous image), `fail_reads` (the grab fails).
    `encoder_mm_per_count`: a belt encoder latched with each exposure; the frame's
    `meta["belt_mm"]` is the belt travel in whole counts (what a line-scan trigger or an encoder
    input of the camera provides), which the line uses for its speed instead of tracked motion.
    """

    def __init__(self, conveyor, clock=None, driver_buffer: int = 4, black_frames=(), frozen_frames=(),
                 fail_reads=(), n_frames: int | None = None, source_id: str = "synth:conveyor",
                 x_end_mm: float | None = None, encoder_mm_per_count: float | None = None):
        if encoder_mm_per_count is not None and encoder_mm_per_count <= 0:
            raise ConfigError(f"ConveyorSource: encoder_mm_per_count={encoder_mm_per_count} must be > 0 (or None)")
        self.encoder_mm_per_count = encoder_mm_per_count
        self.conveyor = conveyor
        self.clock = clock or RealClock()
        self.fps = conveyor.config.fps
        self.driver_buffer = driver_buffer
        self.black, self.frozen, self.fail = set(black_frames), set(frozen_frames), set(fail_reads)
        self.n_frames = n_frames or int(math.ceil(conveyor.duration_s(x_end_mm) * self.fps)) + 1
        self.source_id = source_id
        self.t0: float | None = None
        self.next_k = 0
        self.camera_dropped = 0
        self._prev: np.ndarray | None = None

    @property
    def width_px(self) -> int:
        return self.conveyor.config.width_px

    def start(self) -> None:
        if self.t0 is None:
            self.t0 = self.clock.now()

    def read(self) -> Frame | None:
        self.start()
        if self.next_k >= self.n_frames:
            return None
        now = self.clock.now()
        latest = math.floor((now - self.t0) * self.fps + 1e-6)
        if latest < self.next_k:
            self.clock.sleep(self.t0 + self.next_k / self.fps - now)
            latest = self.next_k
        k = max(self.next_k, latest - self.driver_buffer + 1)
        self.camera_dropped += k - self.next_k
        self.next_k = k + 1
        if k >= self.n_frames:
            return None
        if k in self.fail:
            raise LineError(f"{self.source_id}: grab of frame {k} failed (injected)")
        t_exp = k / self.fps
        img, truth = self.conveyor.render(t_exp)
        if k in self.black:
            img = np.zeros_like(img)
        elif k in self.frozen and self._prev is not None:
            img = self._prev.copy()
        self._prev = img
        t_capture = self.clock.now()
        meta = {"t_exposure": self.t0 + t_exp, "truth": truth}
        if self.encoder_mm_per_count is not None:
            res = self.encoder_mm_per_count
            meta["belt_mm"] = math.floor(self.conveyor.belt_travel(t_exp) / res) * res
        return Frame(img, t_capture=t_capture, source_id=self.source_id, index=k, meta=meta)

    def close(self) -> None:
        pass


class VideoSource:
    """OpenCV capture of a file, a camera index or an RTSP/HTTP URL."""

    def __init__(self, spec: str | int, clock=None):
        self.spec = spec
        self.clock = clock or RealClock()
        self.cap = cv2.VideoCapture(spec)
        if not self.cap.isOpened():
            raise ConfigError(f"cannot open video source {spec!r}: check the path, camera index or URL "
                              "(and that OpenCV was built with the needed backend)")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
        self.width_px = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.is_file = isinstance(spec, str) and Path(spec).is_file()
        self.n_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.is_file else None
        self.index = 0
        self.source_id = str(spec)

    def read(self) -> Frame | None:
        if self.is_file and self.n_frames is not None and self.index >= self.n_frames:
            return None
        ok = self.cap.grab()
        t_capture = self.clock.now()
        if ok:
            ok, bgr = self.cap.retrieve()
        idx = self.index
        self.index += 1
        if not ok or bgr is None:
            if self.is_file and self.n_frames is None:
                return None
            raise LineError(f"{self.source_id}: read of frame {idx} failed")
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t_capture=t_capture, source_id=self.source_id, index=idx)

    def close(self) -> None:
        self.cap.release()


class FolderSource:
    """Images of a folder in name order, one per read."""

    def __init__(self, folder: str | Path, clock=None):
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise ConfigError(f"image folder {self.folder} holds no images ({', '.join(IMAGE_EXTS)})")
        self.clock = clock or RealClock()
        self.index = 0
        self.source_id = str(self.folder)
        first = cv2.imread(str(self.files[0]))
        self.width_px = first.shape[1] if first is not None else 0
        self.fps = 10.0

    def read(self) -> Frame | None:
        if self.index >= len(self.files):
            return None
        p = self.files[self.index]
        idx = self.index
        self.index += 1
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        t_capture = self.clock.now()
        if bgr is None:
            raise LineError(f"cannot decode image {p} (frame {idx}); replace or remove the file")
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t_capture=t_capture, source_id=self.source_id,
                     index=idx, meta={"path": str(p)})

    def close(self) -> None:
        pass


def open_source(spec: str, clock=None, conveyor_config=None):
    """Parse a --source string: synth:apples | synth:conveyor, a video file, a folder, a camera index, a URL."""
    if spec.startswith("synth:"):
        from fovea.synth.conveyor import Conveyor, ConveyorConfig

        kind = spec.split(":", 1)[1]
        if kind not in ("apples", "conveyor"):
            raise ConfigError(f"unknown synthetic source {spec!r}; use synth:apples")
        return ConveyorSource(Conveyor(conveyor_config or ConveyorConfig()), clock=clock, source_id=spec)
    if spec.isdigit():
        return VideoSource(int(spec), clock=clock)
    p = Path(spec)
    if p.is_dir():
        return FolderSource(p, clock=clock)
    if p.is_file() or "://" in spec:
        return VideoSource(spec, clock=clock)
    raise ConfigError(f"source {spec!r} is not synth:apples, a camera index, a video file, an image folder "
                      "or a URL (rtsp://...)")
