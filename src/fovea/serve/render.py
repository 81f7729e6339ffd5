"""Overlay images for any task's result and PNG/JPEG encoding (in memory).

anomaly: jet heatmap + predicted contour and boxes + score (fovea.anomaly.report.overlay_png);
segment: classes blended over the image (fovea.segment.overlay); classify: a label bar with the
top class and its probability; detections: boxes with class and confidence. Never mutates the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from fovea.core import AnomalyResult, ClassResult, Detections, SegResult


def overlay(image: np.ndarray, result) -> np.ndarray:
    """(H, W, 3) uint8 RGB drawing of `result` over a copy of `image`."""
    if isinstance(result, AnomalyResult):
        from fovea.anomaly.report import overlay_png

        return overlay_png(image, result)
    if isinstance(result, SegResult):
        from fovea.segment.overlay import overlay as seg_overlay

        return seg_overlay(image, result.class_map)
    if isinstance(result, ClassResult):
        return _label_bar(image, f"{result.class_name} {result.confidence:.2f}")
    if isinstance(result, Detections):
        out = image.copy()
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(result.xyxy).reshape(-1, 4)):
            p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1)
            cv2.rectangle(out, p0, p1, (255, 0, 255), max(1, min(out.shape[:2]) // 200))
            conf = "" if result.confidence is None else f" {float(result.confidence[i]):.2f}"
            cls = "" if result.class_id is None else str(int(result.class_id[i]))
            cv2.putText(out, cls + conf, (p0[0], max(p0[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 0, 255), 1, cv2.LINE_AA)
        return out
    raise TypeError(f"no overlay for a {type(result).__name__}")


def _label_bar(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    scale = max(0.35, min(out.shape[:2]) / 500.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (min(out.shape[1] - 1, tw + 8), th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def encode(image: np.ndarray, ext: str = ".png", quality: int = 80) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG or JPEG bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {ext}")
    return buf.tobytes()
