"""Stereo depth: rectification, semi-global matching with checks, depth, point clouds (PLY).

Matching: OpenCV SGBM (3-way, Hirschmueller 2008) run both ways; the right-view disparity comes
from the same matcher on mirrored images. Pixels failing the left-right consistency check
(|d_L(x) - d_R(x - d_L(x))| > lr_max_diff) are invalidated; holes are filled from the
nearer-background side along each scan line, then median-filtered. Sub-pixel: SGBM's parabola
on the aggregated SGM cost (1/16 px); an extra SAD-parabola refinement (`subpixel=True`) exists
but measured slightly worse on Middlebury motorcycle (bad-1px 0.250 vs 0.246), so it is off by
default. Disparity convention: left image, x_right = x_left - d.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fovea.errors import CalibrationError, ConfigError, DataError
from fovea.geometry.camera import to_jsonable
from fovea.geometry.lens import pixels_to_normalized


# ---- rig and rectification ---------------------------------------------------------------------
RIG_FORMAT = "fovea.stereo_rig"
_RIG_SHAPES = {"K1": (3, 3), "dist1": None, "K2": (3, 3), "dist2": None, "R": (3, 3), "T": (3,)}


@dataclass
class StereoRig:
    """Two calibrated cameras; R, T take left-camera coordinates to the right camera (OpenCV):
    X_r = R @ X_l + T. K1, K2 (3, 3); dist1, dist2 (5,); R (3, 3); T (3, 1) in the board's units
    (mm for `fovea geometry stereo-calibrate`); image_size (width, height) px.

    meta: everything else the rig file carries (baseline_mm, rectification, quality figures).
    """

    K1: np.ndarray
    dist1: np.ndarray
    K2: np.ndarray
    dist2: np.ndarray
    R: np.ndarray
    T: np.ndarray
    image_size: tuple[int, int]
    meta: dict = field(default_factory=dict)

    @property
    def baseline(self) -> float:
        """|T|, the distance between the optical centres, in the units of T."""
        return float(np.linalg.norm(self.T))

    def to_dict(self) -> dict:
        core = {k: np.asarray(getattr(self, k), np.float64).tolist() for k in _RIG_SHAPES}
        core["T"] = np.asarray(self.T, np.float64).ravel().tolist()
        return {"format": RIG_FORMAT, "version": 1, **core, "image_size": [int(v) for v in self.image_size],
                **to_jsonable(self.meta)}

    def save(self, path) -> Path:
        """Write the rig as JSON (the file `fovea geometry stereo --rig` reads)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path) -> "StereoRig":
        """Read a rig JSON written by `save` (older files without `format`/meta load too)."""
        path = Path(path)
        fix = "Fix: write it with `fovea geometry stereo-calibrate LEFT_DIR RIGHT_DIR --out rig.json`."
        if not path.is_file():
            raise CalibrationError(f"stereo rig file {path} does not exist. {fix}")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"stereo rig file {path} is not valid JSON ({exc}). {fix}") from None
        if not isinstance(d, dict):
            raise CalibrationError(f"stereo rig file {path} holds a {type(d).__name__}, not an object. {fix}")
        missing = [k for k in (*_RIG_SHAPES, "image_size") if k not in d]
        if missing:
            raise CalibrationError(f"stereo rig file {path} lacks {', '.join(missing)} (needs K1 dist1 K2 dist2 "
                                   f"R T image_size). {fix}")
        arrays = {k: _rig_array(path, k, d[k], shape) for k, shape in _RIG_SHAPES.items()}
        size = d["image_size"]
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, (int, float)) and v > 0 for v in size)):
            raise CalibrationError(f"stereo rig file {path}: image_size {size!r} is not [width, height] in "
                                   f"pixels. {fix}")
        meta = {k: v for k, v in d.items() if k not in arrays and k not in ("image_size", "format", "version")}
        meta["path"] = str(path)
        return cls(**arrays, image_size=(int(size[0]), int(size[1])), meta=meta)

    def check_image_size(self, size_wh: tuple[int, int], source: str) -> None:
        """Raise CalibrationError when an image does not have the size the rig was calibrated at."""
        if tuple(size_wh) != tuple(self.image_size):
            raise CalibrationError(
                f"{source} is {size_wh[0]}x{size_wh[1]} px but the stereo rig ({self.meta.get('path', 'rig')}) "
                f"was calibrated at {self.image_size[0]}x{self.image_size[1]} px. Fix: use images from the "
                "calibrated cameras at the calibrated resolution, or recalibrate the rig.")


def _rig_array(path: Path, key: str, value, shape) -> np.ndarray:
    """One rig entry as float64 with the expected shape (dist: 4, 5, 8, ... coefficients -> first 5)."""
    try:
        a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        a = None
    if key == "T" and a is not None and a.size == 3:
        a = a.reshape(3, 1)
    elif key.startswith("dist") and a is not None and a.ndim <= 2 and a.size >= 4:
        d = np.zeros(5)
        d[: min(5, a.size)] = a.ravel()[:5]
        a = d
    elif a is not None and shape is not None and a.shape != shape:
        a = None
    if a is None or not np.all(np.isfinite(a)):
        want = "4 or 5 distortion coefficients" if shape is None else "x".join(map(str, shape)) + " numbers"
        raise CalibrationError(f"stereo rig file {path}: {key} = {value!r} is not {want}. Fix: write the file with "
                               "`fovea geometry stereo-calibrate` (or StereoRig.save).")
    return a


@dataclass
class Rectification:
    """Rectifying rotations R1, R2 (3, 3), projections P1, P2 (3, 4), Q (4, 4) disparity -> 3D, and
    the undistort-rectify maps of both images."""

    map_left: tuple[np.ndarray, np.ndarray]
    map_right: tuple[np.ndarray, np.ndarray]
    P1: np.ndarray
    P2: np.ndarray
    Q: np.ndarray
    R1: np.ndarray
    R2: np.ndarray
    alpha: float = 0.0

    @property
    def focal_px(self) -> float:
        return float(self.P1[0, 0])

    @property
    def baseline(self) -> float:
        """In the units of T (e.g. mm or m); P2's translation is along x (or y for a vertical rig)."""
        return float(np.hypot(self.P2[0, 3], self.P2[1, 3]) / self.P2[0, 0])

    @property
    def vertical(self) -> bool:
        """True when OpenCV rectified the pair one above the other (matches share columns, not rows)."""
        return bool(abs(self.P2[1, 3]) > abs(self.P2[0, 3]))

    def apply(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (cv2.remap(left, *self.map_left, cv2.INTER_LINEAR),
                cv2.remap(right, *self.map_right, cv2.INTER_LINEAR))

    def to_dict(self) -> dict:
        """The rectification as plain lists (what the rig file stores beside the rig)."""
        return {"alpha": float(self.alpha), "focal_px": self.focal_px, "R1": self.R1.tolist(),
                "R2": self.R2.tolist(), "P1": self.P1.tolist(), "P2": self.P2.tolist(), "Q": self.Q.tolist()}


def rectify(rig: StereoRig, alpha: float | None = None) -> Rectification:
    """`cv2.stereoRectify` (T passed as (3, 1): OpenCV 5 asserts otherwise) + undistort-rectify maps.

    alpha: 0 keeps only valid pixels, 1 keeps all source pixels; default: the rig file's value, else 0.
    """
    if alpha is None:
        alpha = float(rig.meta.get("rectification", {}).get("alpha", 0.0))
    T = np.asarray(rig.T, np.float64).reshape(3, 1)
    size = tuple(int(v) for v in rig.image_size)
    R1, R2, P1, P2, Q, _, _ = cv2.stereoRectify(rig.K1, rig.dist1, rig.K2, rig.dist2, size,
                                                np.asarray(rig.R, np.float64), T, alpha=alpha,
                                                flags=cv2.CALIB_ZERO_DISPARITY)
    ml = cv2.initUndistortRectifyMap(rig.K1, rig.dist1, R1, P1, size, cv2.CV_32FC1)
    mr = cv2.initUndistortRectifyMap(rig.K2, rig.dist2, R2, P2, size, cv2.CV_32FC1)
    return Rectification(ml, mr, P1, P2, Q, R1, R2, float(alpha))


def rectify_points(points_px: np.ndarray, K: np.ndarray, dist: np.ndarray, R_rect: np.ndarray,
                   P_rect: np.ndarray) -> np.ndarray:
    """(N, 2) distorted pixels of one camera -> (N, 2) pixels in its rectified image.

    Uses fovea's own Newton lens inversion (`geometry.lens`), not OpenCV's iterative
    `undistortPoints`, so the result is exact to ~1e-12 for any realistic lens.
    """
    xy = pixels_to_normalized(np.asarray(points_px, np.float64).reshape(-1, 2), K, dist)
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ np.asarray(R_rect, np.float64).T
    P = np.asarray(P_rect, np.float64)
    uvw = rays @ P[:, :3].T
    return uvw[:, :2] / uvw[:, 2:3]


# ---- matching ------------------------------------------------------------------------------------
@dataclass
class SGMConfig:
    """Matcher settings. num_disparities is rounded up to a multiple of 16."""

    min_disparity: int = 0
    num_disparities: int = 64
    block_size: int = 3
    p1_per_px: int = 8       # P1 = p1_per_px * channels * block_size^2
    p2_per_px: int = 32
    uniqueness: int = 5
    lr_max_diff: float = 1.0
    subpixel: bool = False   # extra SAD-parabola refinement (see module doc)
    fill_holes: bool = True
    median_ksize: int = 3


def _sgbm(cfg: SGMConfig, channels: int):
    nd = int(np.ceil(cfg.num_disparities / 16) * 16)
    bs = cfg.block_size
    return cv2.StereoSGBM_create(
        minDisparity=cfg.min_disparity, numDisparities=nd, blockSize=bs,
        P1=cfg.p1_per_px * channels * bs * bs, P2=cfg.p2_per_px * channels * bs * bs,
        disp12MaxDiff=-1, uniquenessRatio=cfg.uniqueness, speckleWindowSize=100, speckleRange=2,
        preFilterCap=63, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)


def _raw(matcher, a, b) -> np.ndarray:
    d = matcher.compute(a, b).astype(np.float32) / 16.0
    d[d < matcher.getMinDisparity()] = np.nan
    return d


def lr_consistency(disp_left: np.ndarray, disp_right: np.ndarray, max_diff: float = 1.0) -> np.ndarray:
    """(H, W) bool: left disparity agrees with the right-view disparity at x - d (nan = invalid)."""
    h, w = disp_left.shape
    xs = np.arange(w)[None, :] - np.nan_to_num(disp_left, nan=0.0)
    xr = np.clip(np.round(xs).astype(int), 0, w - 1)
    dr = disp_right[np.arange(h)[:, None], xr]
    return np.isfinite(disp_left) & np.isfinite(dr) & (xs >= 0) & (np.abs(disp_left - dr) <= max_diff)


def subpixel_refine(disp: np.ndarray, left: np.ndarray, right: np.ndarray, window: int = 5) -> np.ndarray:
    """Parabola through the windowed SAD cost at round(d) - 1, round(d), round(d) + 1.

    The cost is computed independently of SGBM (box-filtered absolute differences of gray
    images); the offset is kept only where the parabola is convex and |offset| < 1, otherwise
    SGBM's value stays.
    """
    gl = left.astype(np.float32) if left.ndim == 2 else cv2.cvtColor(left, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gr = right.astype(np.float32) if right.ndim == 2 else cv2.cvtColor(right, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = gl.shape
    d0 = np.round(np.nan_to_num(disp, nan=0.0)).astype(int)
    ys = np.arange(h)[:, None]
    costs = []
    for k in (-1, 0, 1):
        xr = np.clip(np.arange(w)[None, :] - (d0 + k), 0, w - 1)
        diff = np.abs(gl - gr[ys, xr])
        costs.append(cv2.blur(diff, (window, window)))
    cm, c0, cp = costs
    denom = cm - 2 * c0 + cp
    off = np.where(denom > 1e-3, 0.5 * (cm - cp) / np.maximum(denom, 1e-3), np.nan)
    ok = np.isfinite(disp) & np.isfinite(off) & (np.abs(off) < 1) & (c0 <= np.minimum(cm, cp))
    out = disp.copy()
    out[ok] = d0[ok] + off[ok]
    return out


def fill_holes(disp: np.ndarray) -> np.ndarray:
    """Fill nan pixels along each row with the smaller (background) of the nearest valid
    disparities to the left and right; rows with no valid pixel stay nan."""
    h, w = disp.shape
    valid = np.isfinite(disp)
    idx = np.where(valid, np.arange(w)[None, :], -1)
    left_idx = np.maximum.accumulate(idx, axis=1)
    idx_r = np.where(valid, np.arange(w)[None, :], w)
    right_idx = np.minimum.accumulate(idx_r[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    lv = np.where(left_idx >= 0, disp[rows, np.clip(left_idx, 0, w - 1)], np.inf)
    rv = np.where(right_idx < w, disp[rows, np.clip(right_idx, 0, w - 1)], np.inf)
    fill = np.minimum(lv, rv)
    out = np.where(valid, disp, fill)
    out[~np.isfinite(out)] = np.nan
    return out


def compute_disparity(left: np.ndarray, right: np.ndarray, config: SGMConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rectified (H, W, 3) uint8 pair -> (disparity (H, W) float32 px, nan where unknown;
    valid (H, W) bool = passed the left-right check before hole filling)."""
    cfg = config or SGMConfig()
    if left.shape != right.shape:
        raise DataError(f"left image {left.shape} and right image {right.shape} differ; "
                        "Fix: pass a rectified pair of one size.")
    if cfg.num_disparities < 16:
        raise ConfigError(f"num_disparities={cfg.num_disparities} < 16; Fix: use >= the largest expected disparity.")
    ch = 1 if left.ndim == 2 else left.shape[2]
    m = _sgbm(cfg, ch)
    dl = _raw(m, left, right)
    # right-view disparity: the same matcher on mirrored images (right becomes the reference)
    cfg_r = SGMConfig(**{**asdict(cfg)})
    dr = _raw(_sgbm(cfg_r, ch), np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1]))[:, ::-1]
    valid = lr_consistency(dl, dr, cfg.lr_max_diff)
    d = np.where(valid, dl, np.nan).astype(np.float32)
    if cfg.subpixel:
        d = subpixel_refine(d, left, right)
    if cfg.fill_holes:
        d = fill_holes(d)
        if cfg.median_ksize > 1:
            med = cv2.medianBlur(np.nan_to_num(d, nan=0.0).astype(np.float32), cfg.median_ksize)
            d = np.where(valid, d, med)  # smooth only the filled pixels
    return d.astype(np.float32), valid


def opencv_default_sgbm(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Baseline: `cv2.StereoSGBM_create()` with all defaults; invalid pixels nan."""
    return _raw(cv2.StereoSGBM_create(), left, right)


# ---- evaluation, depth, point clouds ---------------------------------------------------------------
def evaluate_disparity(pred: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray | None = None) -> dict[str, float]:
    """Middlebury-style scores over pixels with finite ground truth; a missing (nan) prediction
    counts as a bad pixel. EPE = mean |pred - gt| over pixels that have a prediction."""
    gv = np.isfinite(gt) if gt_valid is None else gt_valid & np.isfinite(gt)
    p = pred[gv]
    g = gt[gv]
    has = np.isfinite(p)
    err = np.abs(np.where(has, p, np.inf) - g)
    return {"bad1": float(np.mean(err > 1)), "bad2": float(np.mean(err > 2)),
            "epe": float(np.mean(err[has])) if has.any() else float("nan"), "density": float(has.mean())}


def disparity_to_depth(disp: np.ndarray, focal_px: float, baseline: float) -> np.ndarray:
    """Z = f * B / d in the units of B; nan where d <= 0 or unknown."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = focal_px * baseline / disp
    return np.where(np.isfinite(disp) & (disp > 0), z, np.nan).astype(np.float32)


def disparity_to_points(disp: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """(H, W, 3) points in the rectified left-camera frame (x right, y down, z forward); nan invalid."""
    pts = cv2.reprojectImageTo3D(np.nan_to_num(disp, nan=-1.0).astype(np.float32), np.asarray(Q, np.float64))
    pts[~(np.isfinite(disp) & (disp > 0))] = np.nan
    return pts


def save_ply(path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write an ASCII PLY of (N, 3) points (non-finite rows dropped), optional (N, 3) uint8 colours."""
    path = Path(path)
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    keep = np.isfinite(pts).all(1)
    pts = pts[keep]
    cols = None if colors is None else np.asarray(colors, np.uint8).reshape(-1, 3)[keep]
    header = ["ply", "format ascii 1.0", f"element vertex {len(pts)}",
              "property float x", "property float y", "property float z"]
    if cols is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    with open(path, "w") as f:
        f.write("\n".join(header) + "\n")
        if cols is None:
            np.savetxt(f, pts, fmt="%.6g")
        else:
            for p, c in zip(pts, cols):
                f.write(f"{p[0]:.6g} {p[1]:.6g} {p[2]:.6g} {c[0]} {c[1]} {c[2]}\n")
    return path
