"""Undistortion and metric measurement on a working plane (conveyor, table).

A reference chessboard lying on the plane gives a homography from ideal (undistorted,
normalised) image coordinates to plane millimetres. Lengths, mask areas and min-area-rectangle
object sizes are computed from sub-pixel mask contours (marching squares at 0.5, i.e. on pixel
edges) mapped through lens undistortion + homography. Error bars: the same measurement repeated
with every bootstrap camera model (see `calibration.bootstrap_uncertainty`), as a std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from fovea.errors import CalibrationError, DataError
from fovea.geometry.calibration import board_object_points, detect_chessboard
from fovea.geometry.camera import CameraModel


def undistort_image(image: np.ndarray, model: CameraModel, alpha: float = 0.0,
                    keep_K: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Remove lens distortion. alpha 0 crops to valid pixels, 1 keeps all; keep_K reuses K.

    Returns (undistorted (H, W, C) image, its camera matrix (3, 3)).
    """
    h, w = image.shape[:2]
    model.check_image_size((w, h))
    if keep_K:
        new_K = model.K.copy()
    else:
        new_K, _ = cv2.getOptimalNewCameraMatrix(model.K, model.dist, (w, h), alpha, (w, h))
    mx, my = cv2.initUndistortRectifyMap(model.K, model.dist, None, new_K, (w, h), cv2.CV_32FC1)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR), new_K


def undistort_points(uv: np.ndarray, model: CameraModel, new_K: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) distorted pixels -> (N, 2) pixels of the undistorted image with camera matrix new_K (default K)."""
    P = model.K if new_K is None else np.asarray(new_K, np.float64)
    xy = model.unproject(np.asarray(uv, np.float64).reshape(-1, 2))
    return np.stack([P[0, 0] * xy[:, 0] + P[0, 1] * xy[:, 1] + P[0, 2], P[1, 1] * xy[:, 1] + P[1, 2]], 1)


@dataclass
class Measurement:
    """A value with a 1-sigma error bar propagated from the calibration uncertainty (nan if unknown).

    The std covers the camera model (bootstrap) and reference-corner noise only, not the mask
    boundary itself (on rendered scenes that adds ~0.3-0.5 px per edge).
    """

    value: float
    std: float
    unit: str

    def __str__(self) -> str:
        s = f"{self.value:.2f}"
        if np.isfinite(self.std):
            s += f" ± {self.std:.2f}"
        return f"{s} {self.unit}"


@dataclass
class ObjectSize:
    """One connected region: min-area rectangle length >= width (mm), area (mm^2), angle (deg),
    centre on the plane (mm)."""

    length_mm: Measurement
    width_mm: Measurement
    area_mm2: Measurement
    angle_deg: float
    centre_mm: tuple[float, float]
    touches_border: bool


def mask_contours(mask: np.ndarray, smooth_px: float = 1.0) -> list[np.ndarray]:
    """Closed sub-pixel boundary polygons ((K, 2) as x, y pixels) of a binary (H, W) mask.

    The mask is Gaussian-smoothed (sigma `smooth_px`) before the 0.5 iso-contour: a straight
    edge keeps its position but the pixel staircase (which inflates min-area rectangles by up to
    a pixel on rotated edges) averages out. smooth_px=0: contour on raw pixel edges.
    """
    from skimage.measure import find_contours

    pad = 1 + int(np.ceil(3 * smooth_px))
    m = np.pad(np.asarray(mask, bool).astype(np.float64), pad)
    if smooth_px > 0:
        m = cv2.GaussianBlur(m, (0, 0), smooth_px)
    return [c[:, ::-1] - float(pad) for c in find_contours(m, 0.5)]  # (row, col) -> (x, y), undo pad


def _shoelace(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


class PlaneMeasurer:
    """Pixel -> plane-millimetre mapping for one camera and one working plane.

    H maps ideal normalised coordinates (x, y, 1) to plane (u, v, 1) mm. `alternates` are
    (model, H) pairs (bootstrap camera models, jittered reference corners); their spread is the
    reported std.
    """

    def __init__(self, model: CameraModel, H: np.ndarray, alternates: Sequence[tuple[CameraModel, np.ndarray]] = ()):
        self.model = model
        self.H = np.asarray(H, np.float64)
        self.alternates = list(alternates)

    @classmethod
    def from_reference_board(cls, image: np.ndarray, model: CameraModel, pattern: tuple[int, int],
                             square_mm: float, bootstrap_models: Sequence[CameraModel] = (),
                             method: str = "sb", source: str = "reference image", n_jitter: int = 16,
                             seed: int = 0) -> "PlaneMeasurer":
        """Detect the board lying on the plane in `image` ((H, W, 3) RGB) and fit the homography.

        Error bars combine the bootstrap camera models with corner noise (jittered refits).
        """
        model.check_image_size((image.shape[1], image.shape[0]), source)
        corners = detect_chessboard(image, pattern, method)
        if corners is None:
            raise CalibrationError(f"no {pattern[0]}x{pattern[1]} board found in {source}. Fix: the reference "
                                   "board must lie flat on the working plane, fully visible; check --board.")
        obj = board_object_points(*pattern, square_mm)[:, :2]
        H = cls._fit_h(model, corners, obj)
        # corner noise: refit H on corners jittered by the fit's own residual RMS (>= 0.05 px)
        xy = np.concatenate([obj, np.ones((len(obj), 1))], 1) @ np.linalg.inv(H).T
        back = model.project(np.concatenate([xy[:, :2] / xy[:, 2:3], np.ones((len(obj), 1))], 1))
        sigma_px = max(float(np.sqrt(np.mean(np.sum((back - corners) ** 2, 1)) / 2)), 0.05)
        rng = np.random.default_rng(seed)
        models = list(bootstrap_models) or [model]
        alts = []
        for k in range(max(len(models), n_jitter)):
            m = models[k % len(models)]
            alts.append((m, cls._fit_h(m, corners + rng.normal(0, sigma_px, corners.shape), obj)))
        out = cls(model, H, alts)
        out.reference_corners_px = corners
        out.corner_sigma_px = sigma_px
        return out

    @staticmethod
    def _fit_h(model: CameraModel, corners: np.ndarray, obj_mm: np.ndarray) -> np.ndarray:
        xy = model.unproject(corners)
        H, _ = cv2.findHomography(xy.astype(np.float64), obj_mm.astype(np.float64), 0)
        if H is None:
            raise CalibrationError("homography fit failed (degenerate board corners).")
        return H

    @staticmethod
    def _map(model: CameraModel, H: np.ndarray, uv: np.ndarray) -> np.ndarray:
        xy = model.unproject(np.asarray(uv, np.float64).reshape(-1, 2))
        p = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ H.T
        return p[:, :2] / p[:, 2:3]

    def to_mm(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) distorted image pixels -> (N, 2) plane millimetres."""
        return self._map(self.model, self.H, uv)

    def _with_error(self, fn, unit: str) -> Measurement:
        v = fn(self.model, self.H)
        alts = [fn(m, h) for m, h in self.alternates]
        std = float(np.std(alts, ddof=1)) if len(alts) >= 2 else float("nan")
        return Measurement(float(v), std, unit)

    def length_mm(self, p_px, q_px) -> Measurement:
        """Distance on the plane between two image points."""
        uv = np.array([p_px, q_px], np.float64)
        return self._with_error(lambda m, H: np.linalg.norm(np.diff(self._map(m, H, uv), axis=0)), "mm")

    def mask_area_mm2(self, mask: np.ndarray) -> Measurement:
        """Area on the plane of all True pixels of an (H, W) mask (holes subtracted)."""
        self._check_mask(mask)
        polys = mask_contours(mask)
        return self._with_error(lambda m, H: abs(sum(_shoelace(self._map(m, H, c)) for c in polys)), "mm^2")

    def object_sizes(self, mask: np.ndarray, min_area_px: int = 20) -> list[ObjectSize]:
        """Min-area rectangle size and area of every connected region of a binary (H, W) mask."""
        self._check_mask(mask)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
        out = []
        h, w = mask.shape
        for k in range(1, n):
            x, y, bw, bh, area = stats[k]
            if area < min_area_px:
                continue
            polys = mask_contours(labels == k)
            outer = max(polys, key=lambda c: abs(_shoelace(c)))

            def rect(m, H, outer=outer):
                return cv2.minAreaRect(self._map(m, H, outer).astype(np.float32))

            def length(m, H):
                return max(rect(m, H)[1])

            def width(m, H):
                return min(rect(m, H)[1])

            (cx, cy), _, ang = rect(self.model, self.H)
            out.append(ObjectSize(
                self._with_error(length, "mm"), self._with_error(width, "mm"),
                self._with_error(lambda m, H, polys=polys: abs(sum(_shoelace(self._map(m, H, c)) for c in polys)),
                                 "mm^2"),
                float(ang), (float(cx), float(cy)),
                bool(x == 0 or y == 0 or x + bw >= w or y + bh >= h),
            ))
        return out

    def _check_mask(self, mask: np.ndarray) -> None:
        if mask.ndim != 2:
            raise DataError(f"mask must be (H, W), got shape {mask.shape}. Fix: pass one channel.")
        self.model.check_image_size((mask.shape[1], mask.shape[0]), "mask")
