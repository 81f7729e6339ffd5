"""`CameraModel`: pinhole intrinsics + OpenCV distortion, with JSON / OpenCV-YAML save and load.

Frame: OpenCV camera frame (x right, y down, z forward); pixel centres at integer coordinates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fovea.errors import CalibrationError, ConfigError
from fovea.geometry.lens import pixels_to_normalized, project_points


@dataclass
class CameraModel:
    """K (3, 3) float64, dist (5,) = (k1, k2, p1, p2, k3), image_size (width, height) in pixels.

    rms_px: reprojection RMS of the fit; meta: anything else worth keeping (board, views, report).
    """

    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms_px: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, np.float64).reshape(3, 3)
        d = np.zeros(5)
        v = np.asarray(self.dist, np.float64).ravel()[:5]
        d[: len(v)] = v
        self.dist = d
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def principal_point(self) -> tuple[float, float]:
        return float(self.K[0, 2]), float(self.K[1, 2])

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points -> (N, 2) distorted pixels."""
        return project_points(points_cam, self.K, self.dist)

    def unproject(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) distorted pixels -> (N, 2) ideal normalised coordinates (ray (x, y, 1))."""
        return pixels_to_normalized(uv, self.K, self.dist)

    def check_image_size(self, size_wh: tuple[int, int], source: str = "image") -> None:
        """Raise CalibrationError when an image does not have the calibrated size."""
        if tuple(size_wh) != tuple(self.image_size):
            raise CalibrationError(
                f"{source} is {size_wh[0]}x{size_wh[1]} px but the calibration "
                f"({self.meta.get('path', 'camera model')}) is for {self.image_size[0]}x{self.image_size[1]} px. "
                "Fix: use images from the calibrated camera at the calibrated resolution, or recalibrate."
            )

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "opencv5", "image_size": list(self.image_size), "K": self.K.tolist(),
            "dist": self.dist.tolist(), "rms_px": float(self.rms_px), "meta": to_jsonable(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "dict") -> "CameraModel":
        try:
            return cls(np.asarray(d["K"]), np.asarray(d["dist"]), tuple(d["image_size"]),
                       float(d.get("rms_px", float("nan"))), dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"{source} is not a fovea camera model ({exc!r}); it needs keys K (3x3), dist, "
                "image_size [w, h]. Fix: write it with `fovea geometry calibrate` or CameraModel.save."
            ) from None

    def save(self, path: str | Path) -> Path:
        """Write JSON (.json) or OpenCV FileStorage YAML/XML (.yaml, .yml, .xml)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2))
        elif path.suffix.lower() in (".yaml", ".yml", ".xml"):
            fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
            fs.write("image_width", self.image_size[0])
            fs.write("image_height", self.image_size[1])
            fs.write("camera_matrix", self.K)
            fs.write("distortion_coefficients", self.dist.reshape(1, 5))
            fs.write("rms_px", float(self.rms_px))
            fs.release()
        else:
            raise ConfigError(f"cannot save a camera model as {path}: unknown suffix {path.suffix!r}. "
                              "Fix: use .json, .yaml, .yml or .xml.")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CameraModel":
        """Read a model written by `save` (or OpenCV's calibration sample YAML)."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration file {path} does not exist. "
                                   "Fix: run `fovea geometry calibrate IMAGES --out cam.json` first.")
        if path.suffix.lower() == ".json":
            try:
                d = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise CalibrationError(f"{path} is not valid JSON ({exc}). Fix: re-export it.") from None
            m = cls.from_dict(d, str(path))
        else:
            fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
            if not fs.isOpened():
                raise CalibrationError(f"OpenCV cannot open {path}. Fix: pass a .json/.yaml/.xml camera file.")
            K = fs.getNode("camera_matrix").mat()
            dist = fs.getNode("distortion_coefficients").mat()
            w, h = fs.getNode("image_width").real(), fs.getNode("image_height").real()
            rms = fs.getNode("rms_px").real() if not fs.getNode("rms_px").empty() else float("nan")
            fs.release()
            if K is None or dist is None or not w or not h:
                raise CalibrationError(f"{path} lacks camera_matrix, distortion_coefficients, image_width or "
                                       "image_height. Fix: save it with CameraModel.save.")
            m = cls(K, dist, (int(w), int(h)), rms)
        m.meta["path"] = str(path)
        return m


def to_jsonable(x: Any) -> Any:
    """Nested dicts/lists of numpy arrays and scalars -> plain JSON types (dict keys as str)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def projection_difference(a: CameraModel, b: CameraModel, step_px: float = 16.0) -> dict[str, Any]:
    """Pixel displacement when a ray is unprojected with `a` and reprojected with `b`.

    Same camera frame for both (no rotation compensation), evaluated on a grid over the whole
    image. With `a` = ground truth this is the TRUE projection error of `b`. Returns grid
    positions (N, 2), per-point diff_px (N,), grid shape and mean/median/p95/max.
    """
    w, h = a.image_size
    us = np.arange(0, w, step_px, dtype=np.float64)
    vs = np.arange(0, h, step_px, dtype=np.float64)
    us = np.unique(np.append(us, w - 1))
    vs = np.unique(np.append(vs, h - 1))
    uu, vv = np.meshgrid(us, vs)
    uv = np.stack([uu.ravel(), vv.ravel()], 1)
    xy = a.unproject(uv)
    uv_b = b.project(np.concatenate([xy, np.ones((len(xy), 1))], 1))
    d = np.linalg.norm(uv_b - uv, axis=1)
    return {"uv": uv, "diff_px": d, "grid_shape": uu.shape, "mean_px": float(d.mean()),
            "median_px": float(np.median(d)), "p95_px": float(np.percentile(d, 95)), "max_px": float(d.max())}
