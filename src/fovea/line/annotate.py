"""Annotated output video: boxes, record ids, state/lane, the decision line. Never mutates frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fovea.errors import ConfigError

LANE_COLORS = {"good": (60, 200, 60), "damaged": (230, 60, 40), "default": (240, 200, 40)}


class LineAnnotator:
    """Writes one annotated frame per processed frame to a video file (mp4v)."""

    def __init__(self, path: str | Path, fps: float, mm_per_px: float, decision_x_mm: float, x0_mm: float = 0.0):
        self.path = Path(path)
        self.fps, self.mm_per_px, self.decision_x_mm, self.x0_mm = fps, mm_per_px, decision_x_mm, x0_mm
        self.writer = None
        self.frames = 0

    def annotate(self, image: np.ndarray, dets, records) -> np.ndarray:
        """A copy of image (H, W, 3) RGB with each detection's box, record id and state drawn."""
        out = image.copy()
        H, W = out.shape[:2]
        xd = int(round((self.decision_x_mm - self.x0_mm) / self.mm_per_px))
        if 0 <= xd < W:
            cv2.line(out, (xd, 0), (xd, H - 1), (255, 255, 255), 1)
        for box, rec in zip(dets.xyxy, records):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            label = rec.lane or rec.state.lower()
            color = LANE_COLORS.get(rec.lane or "", (200, 200, 200))
            if rec.flags:
                color = (255, 0, 255)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, 1)
            text = f"{rec.rid[-4:]} {label}"
            cv2.putText(out, text, (x0, max(y0 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, color, 1, cv2.LINE_AA)
        return out

    def add(self, perception, records) -> None:
        img = self.annotate(perception.frame.image, perception.dets, records)
        if self.writer is None:
            H, W = img.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (W, H))
            if not self.writer.isOpened():
                raise ConfigError(f"cannot open a video writer for {self.path}; check OpenCV's codecs (mp4v)")
        self.writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
