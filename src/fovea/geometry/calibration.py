"""Camera calibration from chessboard / ChArUco views, with an honest quality report.

Pipeline: sector-based corner detection (`cv2.findChessboardCornersSB`) + `cornerSubPix`
refinement -> `cv2.calibrateCamera` -> per-view RMS -> drop views with RMS > 3x median and refit
-> report: RMS (defined below), coverage map, bootstrap projection uncertainty, two-half
cross-validation difference. Works with OpenCV 4.x and 5.x (corner arrays are reshaped to
(N, 2) everywhere; ChArUco uses the new or the legacy aruco API, whichever exists).

RMS definition used throughout: sqrt( sum_i ||x_i - x_hat_i||^2 / N ) over all N corners of the
kept views (Euclidean pixel residual per corner). This equals the value `calibrateCamera`
returns; OpenCV's tutorial "total error" (mean over views of norm/N) is NOT an RMS and reads
~sqrt(N) times too small (opencv/opencv#28651).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from fovea.errors import CalibrationError, ConfigError
from fovea.geometry.camera import CameraModel, projection_difference

Progress = Callable[[str, int, int], None]  # progress(stage, done, total), e.g. cli.progress.progress_bar
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-5)


def board_object_points(cols: int, rows: int, square_mm: float) -> np.ndarray:
    """(cols*rows, 3) float32 inner-corner positions, row-major, z = 0, in mm."""
    j, i = np.mgrid[0:rows, 0:cols]
    return (np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], 1) * square_mm).astype(np.float32)


def parse_board(text: str) -> tuple[int, int]:
    """'9x6' -> (9, 6) inner corners."""
    try:
        cols, rows = (int(v) for v in str(text).lower().split("x"))
        if cols < 2 or rows < 2:
            raise ValueError
    except ValueError:
        raise ConfigError(f"board {text!r} is not COLSxROWS inner corners; Fix: e.g. --board 9x6") from None
    return cols, rows


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image)


def refine_corners(gray: np.ndarray, corners: np.ndarray, cols: int) -> np.ndarray:
    """`cornerSubPix` with a window scaled to the local square size. corners: (N, 2) row-major."""
    c = corners.reshape(-1, 2).astype(np.float32)
    grid = c.reshape(-1, cols, 2)
    spacing = min(np.linalg.norm(np.diff(grid, axis=1), axis=2).min(),
                  np.linalg.norm(np.diff(grid, axis=0), axis=2).min() if len(grid) > 1 else 1e9)
    win = int(np.clip(0.4 * spacing, 2, 11))
    out = cv2.cornerSubPix(gray, c.reshape(-1, 1, 2).copy(), (win, win), (-1, -1), _SUBPIX_CRITERIA)
    return out.reshape(-1, 2)


def detect_chessboard(image: np.ndarray, pattern: tuple[int, int], method: str = "sb",
                      refine: bool = True) -> np.ndarray | None:
    """Find `pattern` = (cols, rows) inner corners -> (N, 2) float32 row-major, or None.

    method "sb": sector-based detector (robust to blur/noise), "classic": findChessboardCorners.
    """
    gray = _gray(image)
    if method == "sb":
        flags = cv2.CALIB_CB_ACCURACY | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_NORMALIZE_IMAGE
        ok, corners = cv2.findChessboardCornersSB(gray, pattern, flags=flags)
    elif method == "classic":
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        ok, corners = cv2.findChessboardCorners(gray, pattern, flags=flags)
    else:
        raise ConfigError(f"unknown corner detector {method!r}; Fix: use 'sb' or 'classic'.")
    if not ok or corners is None:
        return None
    corners = np.asarray(corners, np.float32).reshape(-1, 2)  # 4.x: (N,1,2); 5.x: (N,2)
    return refine_corners(gray, corners, pattern[0]) if refine else corners


# ---- ChArUco: new API (OpenCV >= 4.7 and 5.x) or legacy (< 4.7) ---------------------------------
def _aruco():
    mod = getattr(cv2, "aruco", None)
    if mod is None or not hasattr(mod, "getPredefinedDictionary"):
        raise ConfigError("this OpenCV build has no aruco module, so ChArUco boards cannot be detected. "
                          "Fix: pip install opencv-python-headless>=4.7 (or opencv-contrib-python for 4.6).")
    return mod


def make_charuco_board(squares_x: int, squares_y: int, square_mm: float, marker_mm: float,
                       dictionary: str = "DICT_5X5_100"):
    """A ChArUco board object for either aruco API."""
    aruco = _aruco()
    if not hasattr(aruco, dictionary):
        raise ConfigError(f"unknown aruco dictionary {dictionary!r}; Fix: e.g. DICT_4X4_50, DICT_5X5_100.")
    d = aruco.getPredefinedDictionary(getattr(aruco, dictionary))
    if hasattr(aruco, "CharucoDetector"):  # 4.7+ / 5.x
        return aruco.CharucoBoard((squares_x, squares_y), float(square_mm), float(marker_mm), d)
    return aruco.CharucoBoard_create(squares_x, squares_y, float(square_mm), float(marker_mm), d)  # legacy


def charuco_object_points(board) -> np.ndarray:
    """(M, 3) float32 chessboard-corner positions of a ChArUco board (index = charuco id)."""
    if hasattr(board, "getChessboardCorners"):
        return np.asarray(board.getChessboardCorners(), np.float32).reshape(-1, 3)
    return np.asarray(board.chessboardCorners, np.float32).reshape(-1, 3)  # legacy attribute


def detect_charuco(image: np.ndarray, board) -> tuple[np.ndarray, np.ndarray] | None:
    """Detect ChArUco corners -> ((K, 2) float32 pixels, (K,) int ids) or None (< 4 corners)."""
    aruco = _aruco()
    gray = _gray(image)
    if hasattr(aruco, "CharucoDetector"):
        corners, ids, _, _ = aruco.CharucoDetector(board).detectBoard(gray)
    else:  # legacy functional API
        mk, mk_ids, _ = aruco.detectMarkers(gray, board.dictionary)
        if mk_ids is None or len(mk_ids) == 0:
            return None
        _, corners, ids = aruco.interpolateCornersCharuco(mk, mk_ids, gray, board)
    if ids is None or corners is None or len(ids) < 4:
        return None
    return np.asarray(corners, np.float32).reshape(-1, 2), np.asarray(ids).reshape(-1).astype(int)


# ---- calibration ------------------------------------------------------------------------------
def reprojection_residuals(obj: np.ndarray, img: np.ndarray, rvec, tvec, K, dist) -> np.ndarray:
    """(N,) Euclidean pixel residual of each corner of one view."""
    proj, _ = cv2.projectPoints(np.asarray(obj, np.float64).reshape(-1, 3), rvec, tvec, K, dist)
    return np.linalg.norm(proj.reshape(-1, 2) - np.asarray(img, np.float64).reshape(-1, 2), axis=1)


def rms(residuals: Sequence[np.ndarray]) -> float:
    """sqrt(mean of squared per-corner residuals) over all corners pooled (see module doc)."""
    r = np.concatenate([np.asarray(x).ravel() for x in residuals])
    return float(np.sqrt(np.mean(r**2)))


@dataclass
class CalibrationResult:
    """A fitted camera plus what it was fitted from and how well.

    kept: indices (into the inputs) of views used in the final fit; rejected: {index: rms_px}.
    per_view_rms_px: final-fit RMS of each kept view (same order as `kept`).
    """

    model: CameraModel
    kept: list[int]
    rejected: dict[int, float]
    per_view_rms_px: np.ndarray
    rvecs: list[np.ndarray]
    tvecs: list[np.ndarray]
    object_points: list[np.ndarray]
    image_points: list[np.ndarray]
    opencv_rms_px: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rms_px(self) -> float:
        return self.model.rms_px


def _fit(obj, img, size, flags):
    o = [np.asarray(x, np.float32).reshape(-1, 3) for x in obj]
    i = [np.asarray(x, np.float32).reshape(-1, 2) for x in img]
    ret, K, dist, rvecs, tvecs = cv2.calibrateCamera(o, i, tuple(size), None, None, flags=flags)
    res = [reprojection_residuals(a, b, r, t, K, dist) for a, b, r, t in zip(o, i, rvecs, tvecs)]
    return float(ret), K, dist.reshape(-1)[:5], list(rvecs), list(tvecs), res


def calibrate_camera(
    object_points: Sequence[np.ndarray], image_points: Sequence[np.ndarray], image_size: tuple[int, int],
    reject_factor: float = 3.0, min_reject_px: float = 0.25, max_rounds: int = 3, min_views: int = 4,
    flags: int = 0,
) -> CalibrationResult:
    """Fit K and distortion; drop views whose RMS > reject_factor x median (and > min_reject_px), refit.

    object_points[i]: (N_i, 3) board coordinates (mm); image_points[i]: (N_i, 2) pixels.
    `min_reject_px` keeps a uniformly good set from being thinned by noise alone.
    """
    n = len(object_points)
    if n != len(image_points):
        raise CalibrationError(f"{n} object-point sets but {len(image_points)} image-point sets; they must pair up.")
    if n < min_views:
        raise CalibrationError(f"only {n} usable views; calibration needs at least {min_views} "
                               "(OpenCV's tutorial: at least 10). Fix: capture more board views across the image.")
    kept = list(range(n))
    rejected: dict[int, float] = {}
    history = []
    for round_ in range(max_rounds + 1):
        ret, K, dist, rvecs, tvecs, res = _fit([object_points[k] for k in kept],
                                               [image_points[k] for k in kept], image_size, flags)
        per_view = np.array([np.sqrt(np.mean(r**2)) for r in res])
        med = float(np.median(per_view))
        limit = max(reject_factor * med, min_reject_px)
        history.append({"views": len(kept), "rms_px": rms(res), "median_view_rms_px": med, "limit_px": limit})
        bad = [k for k, v in zip(kept, per_view) if v > limit]
        if not bad or len(kept) - len(bad) < min_views or round_ == max_rounds:
            break  # (rejecting after the last fit would leave `kept` out of step with the fit)
        for k, v in zip(kept, per_view):
            if v > limit:
                rejected[k] = float(v)
        kept = [k for k in kept if k not in rejected]
    model = CameraModel(K, dist, tuple(image_size), rms(res),
                        meta={"rms_definition": "sqrt(sum ||residual||^2 / N_corners)", "views_used": len(kept),
                              "views_rejected": sorted(rejected)})
    return CalibrationResult(model, kept, rejected, per_view, rvecs, tvecs,
                             [object_points[k] for k in kept], [image_points[k] for k in kept], ret, history)


# ---- quality report ---------------------------------------------------------------------------
def coverage_grid(image_points: Sequence[np.ndarray], image_size: tuple[int, int],
                  cells: tuple[int, int] = (16, 12)) -> np.ndarray:
    """(rows, cols) int counts of corners per image cell; zero cells are unconstrained areas."""
    w, h = image_size
    pts = np.concatenate([np.asarray(p).reshape(-1, 2) for p in image_points])
    cx = np.clip((pts[:, 0] / w * cells[0]).astype(int), 0, cells[0] - 1)
    cy = np.clip((pts[:, 1] / h * cells[1]).astype(int), 0, cells[1] - 1)
    grid = np.zeros((cells[1], cells[0]), np.int64)
    np.add.at(grid, (cy, cx), 1)
    return grid


def save_coverage_png(path, image_points, image_size, cells=(16, 12), uncertainty: dict | None = None):
    """Draw where corners fell (dots over per-cell counts), optionally beside the uncertainty map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = image_size
    grid = coverage_grid(image_points, image_size, cells)
    ncol = 2 if uncertainty is not None else 1
    fig, axes = plt.subplots(1, ncol, figsize=(6 * ncol, 4.5 * h / w + 0.8), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(grid, extent=(0, w, h, 0), cmap="Greens", interpolation="nearest")
    for p in image_points:
        p = np.asarray(p).reshape(-1, 2)
        ax.plot(p[:, 0], p[:, 1], ".", ms=1.5)
    ax.set_title(f"corner coverage: {(grid > 0).mean():.0%} of cells")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    if uncertainty is not None:
        ax = axes[0, 1]
        m = uncertainty["std_px"].reshape(uncertainty["grid_shape"])
        im = ax.imshow(m, extent=(0, w, h, 0), cmap="magma")
        fig.colorbar(im, ax=ax, label="projection std (px)")
        ax.set_title("bootstrap projection uncertainty")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bootstrap_uncertainty(result: CalibrationResult, n_boot: int = 20, seed: int = 0,
                          step_px: float = 32.0, flags: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """Refit on views resampled with replacement; per-pixel std of where a ray projects.

    A ray is unprojected with the main model and projected with each bootstrap model (same
    frame, no rotation compensation: conservative). Returns std_px (N,), uv, grid_shape,
    mean/max, and the bootstrap models (used to propagate uncertainty into measurements).
    """
    rng = np.random.default_rng(seed)
    n = len(result.object_points)
    models = []
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(set(idx.tolist())) >= 4:
            _, K, dist, *_ = _fit([result.object_points[i] for i in idx], [result.image_points[i] for i in idx],
                                  result.model.image_size, flags)
            models.append(CameraModel(K, dist, result.model.image_size))
        if progress:
            progress("bootstrap", b + 1, n_boot)
    if len(models) < 2:
        raise CalibrationError("bootstrap needs at least 2 refits; Fix: use more views or more n_boot.")
    base = projection_difference(result.model, result.model, step_px)
    xy = result.model.unproject(base["uv"])
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    proj = np.stack([m.project(rays) for m in models])  # (B, N, 2)
    std = np.sqrt(proj.var(axis=0).sum(-1))
    return {"uv": base["uv"], "grid_shape": base["grid_shape"], "std_px": std, "mean_px": float(std.mean()),
            "median_px": float(np.median(std)), "max_px": float(std.max()), "models": models}


def cross_validation_difference(result: CalibrationResult, seed: int = 0, step_px: float = 32.0,
                                flags: int = 0) -> dict[str, Any]:
    """mrcal-style check: fit two disjoint halves of the views and compare their projections."""
    n = len(result.object_points)
    if n < 8:
        raise CalibrationError(f"cross-validation needs >= 8 views, got {n}.")
    perm = np.random.default_rng(seed).permutation(n)
    halves = [perm[: n // 2], perm[n // 2:]]
    ms = []
    for h in halves:
        _, K, dist, *_ = _fit([result.object_points[i] for i in h], [result.image_points[i] for i in h],
                              result.model.image_size, flags)
        ms.append(CameraModel(K, dist, result.model.image_size))
    d = projection_difference(ms[0], ms[1], step_px)
    d["models"] = ms
    return d


def quality_report(result: CalibrationResult, uncertainty: dict | None = None, cv_diff: dict | None = None,
                   truth: CameraModel | None = None, cells=(16, 12)) -> dict[str, Any]:
    """Plain-data summary a person can read: RMS (defined), views, coverage, uncertainty, truth error."""
    grid = coverage_grid(result.image_points, result.model.image_size, cells)
    m = result.model
    rep: dict[str, Any] = {
        "rms_px": m.rms_px,
        "rms_definition": "sqrt(sum over all corners of squared Euclidean residual / number of corners)",
        "opencv_returned_rms_px": result.opencv_rms_px,
        "views_used": len(result.kept),
        "views_rejected": {str(k): round(v, 4) for k, v in result.rejected.items()},
        "per_view_rms_px": [round(float(v), 4) for v in result.per_view_rms_px],
        "fx": m.fx, "fy": m.fy, "cx": m.principal_point[0], "cy": m.principal_point[1],
        "dist": m.dist.tolist(), "image_size": list(m.image_size),
        "coverage_fraction": float((grid > 0).mean()),
        "note": "reprojection RMS measures fit to the corners, not projection accuracy; "
                "see projection_uncertainty / cross_validation for where the model can be trusted.",
    }
    if uncertainty is not None:
        rep["projection_uncertainty_px"] = {k: uncertainty[k] for k in ("mean_px", "median_px", "max_px")}
        rep["projection_uncertainty_px"]["method"] = f"bootstrap over views ({len(uncertainty['models'])} refits)"
    if cv_diff is not None:
        rep["cross_validation_diff_px"] = {k: cv_diff[k] for k in ("mean_px", "median_px", "p95_px", "max_px")}
    if truth is not None:
        d = projection_difference(truth, m, 8.0)
        rep["true_projection_error_px"] = {k: d[k] for k in ("mean_px", "median_px", "p95_px", "max_px")}
        rep["truth_rel_error"] = {"fx": m.fx / truth.fx - 1, "fy": m.fy / truth.fy - 1,
                                  "cx_px": m.principal_point[0] - truth.principal_point[0],
                                  "cy_px": m.principal_point[1] - truth.principal_point[1]}
    return rep


def calibrate_images(images: Sequence[np.ndarray], pattern: tuple[int, int], square_mm: float,
                     names: Sequence[str] | None = None, method: str = "sb", progress: Progress | None = None,
                     **kw) -> tuple[CalibrationResult, dict]:
    """Detect the board in each (H, W, 3) RGB image and calibrate. Returns (result, detection log).

    Images where the board is not found are listed (never silently dropped); all images must share
    one size.
    """
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(images))]
    obj = board_object_points(*pattern, square_mm)
    size = None
    found, obj_pts, img_pts, missed = [], [], [], []
    for k, (name, im) in enumerate(zip(names, images)):
        s = (im.shape[1], im.shape[0])
        if size is None:
            size = s
        elif s != size:
            raise CalibrationError(f"{name} is {s[0]}x{s[1]} px but earlier images are {size[0]}x{size[1]}; "
                                   "Fix: calibrate one camera resolution at a time.")
        c = detect_chessboard(im, pattern, method)
        if c is None:
            missed.append(name)
        else:
            found.append(name)
            obj_pts.append(obj)
            img_pts.append(c)
        if progress:
            progress("detect", k + 1, len(names))
    if len(found) < 4:
        raise CalibrationError(f"board {pattern[0]}x{pattern[1]} found in only {len(found)} of {len(names)} images "
                               f"(missed: {missed[:5]}...). Fix: check --board (INNER corners) and image quality.")
    res = calibrate_camera(obj_pts, img_pts, size, **kw)
    res.model.meta.update({"board": f"{pattern[0]}x{pattern[1]}", "square_mm": square_mm,
                           "views_used_names": [found[k] for k in res.kept],
                           "views_rejected_names": [found[k] for k in res.rejected]})
    return res, {"found": found, "missed": missed}
