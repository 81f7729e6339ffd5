"""Stereo rig calibration from chessboard pairs, with the honest quality figures beside the RMS.

Pipeline: detect the board in both images of each pair (`calibration.detect_chessboard`; the
right corners are put in the left's order) -> calibrate each camera on the pairs
(`calibrate_camera`, which drops views with RMS > 3x median) -> `cv2.stereoCalibrateExtended`
on the pairs both cameras kept, refining both intrinsics jointly from the single-camera fits
(or with the intrinsics fixed) -> drop pairs whose stereo RMS > 3x median and refit ->
rectification -> quality:

- RMS: sqrt(sum of squared Euclidean corner residuals / number of corners) over both images of
  all kept pairs (what OpenCV returns; recomputed here from fovea's own lens model);
- epipolar error: |y_left - y_right| of each detected corner after rectification (zero for a
  perfect rig); per pair and pooled. It tests R, T and both lenses together, which RMS does not;
- baseline uncertainty: std of |T| over a bootstrap of the pairs (each refit recalibrates both
  cameras from scratch), plus the std of the rotation angle. A baseline quoted without it
  cannot be trusted to better than the spread of the pair set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from fovea.errors import CalibrationError, ConfigError, DataError
from fovea.geometry.calibration import board_object_points, calibrate_camera, detect_chessboard, rms
from fovea.geometry.lens import project_points
from fovea.geometry.stereo import Rectification, StereoRig, rectify, rectify_points

Progress = Callable[[str, int, int], None]
_STEREO_CRITERIA = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-9)


# ---- pairing ------------------------------------------------------------------------------------
@dataclass
class PairListing:
    """Left/right files matched by file stem. pairs: (stem, left path, right path), sorted by stem."""

    pairs: list[tuple[str, Path, Path]]
    left_only: list[Path]
    right_only: list[Path]


def _by_stem(paths: Sequence[Path], side: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.stem in out:
            raise DataError(f"{side} images {out[p.stem]} and {p} share the stem {p.stem!r}, so the pair is "
                            "ambiguous. Fix: keep one file per stem in each folder.")
        out[p.stem] = p
    return out


def pair_by_stem(left_paths: Sequence[Path], right_paths: Sequence[Path]) -> PairListing:
    """Match left and right image files by stem ("pair_007.png" <-> "pair_007.jpg")."""
    left, right = _by_stem(left_paths, "left"), _by_stem(right_paths, "right")
    common = sorted(set(left) & set(right))
    return PairListing([(s, left[s], right[s]) for s in common],
                       [left[s] for s in sorted(set(left) - set(right))],
                       [right[s] for s in sorted(set(right) - set(left))])


def align_corner_order(left_px: np.ndarray, right_px: np.ndarray) -> np.ndarray:
    """The right corners (N, 2) in the left corners' order.

    A board whose inner-corner grid is not square has one ambiguity: detectors may start at either
    end (a 180 deg turn of the numbering). The two cameras of a rig see the board turned alike, so
    the first-to-last corner vectors point the same way in both images; reverse the right list
    when they do not.
    """
    a = left_px[-1] - left_px[0]
    b = right_px[-1] - right_px[0]
    return right_px[::-1].copy() if float(a @ b) < 0 else right_px


# ---- result -------------------------------------------------------------------------------------
@dataclass
class StereoCalibrationResult:
    """A calibrated rig and how well it fits. Per-pair arrays follow `pair_names` (the kept pairs).

    rejected: {name: rms_px} of pairs dropped (by either single-camera fit or the stereo fit).
    per_pair_epipolar_px: mean |y_l - y_r| of each pair's corners after rectification.
    """

    rig: StereoRig
    rectification: Rectification
    rms_px: float
    opencv_rms_px: float
    pair_names: list[str]
    rejected: dict[str, float]
    per_pair_rms_px: np.ndarray
    per_pair_epipolar_px: np.ndarray
    epipolar_errors_px: np.ndarray
    left_rms_px: float
    right_rms_px: float
    refine_intrinsics: bool
    bootstrap: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_mm(self) -> float:
        """|T| in the board's units (mm when square sizes are given in mm)."""
        return self.rig.baseline

    def quality(self) -> dict[str, Any]:
        """Plain-data quality figures (stored in the rig file under "quality")."""
        e = self.epipolar_errors_px
        q: dict[str, Any] = {
            "rms_px": self.rms_px,
            "rms_definition": "sqrt(sum over both images of all kept pairs of squared corner residual / corners)",
            "single_camera_rms_px": {"left": self.left_rms_px, "right": self.right_rms_px},
            "intrinsics": "refined jointly in the stereo fit" if self.refine_intrinsics else "fixed from the "
                          "single-camera fits",
            "pairs_used": len(self.pair_names),
            "pairs_rejected": {k: round(v, 4) for k, v in self.rejected.items()},
            "epipolar_error_px": {"mean": float(e.mean()), "median": float(np.median(e)),
                                  "p95": float(np.percentile(e, 95)), "max": float(e.max()),
                                  "definition": ("|x_left - x_right| (vertical rig)" if self.rectification.vertical
                                                 else "|y_left - y_right|")
                                  + " of each detected corner after rectification"},
            "per_pair": [{"name": n, "rms_px": round(float(r), 4), "epipolar_mean_px": round(float(p), 4)}
                         for n, r, p in zip(self.pair_names, self.per_pair_rms_px, self.per_pair_epipolar_px)],
            "note": "RMS and epipolar error are measured on the calibration pairs themselves; the baseline "
                    "uncertainty comes from refitting on resampled pairs.",
        }
        if self.bootstrap:
            q["baseline_uncertainty_mm"] = {k: self.bootstrap[k] for k in ("std_mm", "p05_mm", "p95_mm")}
            q["baseline_uncertainty_mm"]["method"] = f"bootstrap over pairs ({self.bootstrap['refits']} refits)"
            q["rotation_uncertainty_deg"] = self.bootstrap["rotation_std_deg"]
        return q


# ---- fitting ------------------------------------------------------------------------------------
def _stereo_fit(obj, pl, pr, K1, d1, K2, d2, size, refine: bool) -> dict[str, Any]:
    """One `stereoCalibrateExtended` run; per-pair RMS recomputed with fovea's lens model."""
    o = [np.asarray(x, np.float32).reshape(-1, 3) for x in obj]
    a = [np.asarray(x, np.float32).reshape(-1, 2) for x in pl]
    b = [np.asarray(x, np.float32).reshape(-1, 2) for x in pr]
    flags = cv2.CALIB_USE_INTRINSIC_GUESS if refine else cv2.CALIB_FIX_INTRINSIC
    out = cv2.stereoCalibrateExtended(o, a, b, np.array(K1, np.float64), np.array(d1, np.float64).reshape(1, -1),
                                      np.array(K2, np.float64), np.array(d2, np.float64).reshape(1, -1),
                                      tuple(size), None, None, flags=flags, criteria=_STEREO_CRITERIA)
    ret, K1, d1, K2, d2, R, T, _, _, rvecs, tvecs = out[:11]
    d1, d2 = d1.ravel()[:5], d2.ravel()[:5]
    T = np.asarray(T, np.float64).reshape(3, 1)
    residuals = []
    for X, u, v, rv, tv in zip(o, a, b, rvecs, tvecs):
        Rl, _ = cv2.Rodrigues(rv)
        Xl = X.astype(np.float64) @ Rl.T + np.asarray(tv, np.float64).ravel()
        Xr = Xl @ R.T + T.ravel()
        residuals.append(np.r_[np.linalg.norm(project_points(Xl, K1, d1) - u, axis=1),
                               np.linalg.norm(project_points(Xr, K2, d2) - v, axis=1)])
    return {"opencv_rms": float(ret), "K1": K1, "d1": d1, "K2": K2, "d2": d2, "R": R, "T": T,
            "residuals": residuals}


def epipolar_errors(rig: StereoRig, rect: Rectification, points_left: Sequence[np.ndarray],
                    points_right: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per pair: (N,) |y_left - y_right| in px of corresponding points after rectification
    (|x_left - x_right| for a vertical rig, whose rectified matches share columns)."""
    axis = 0 if rect.vertical else 1
    out = []
    for u, v in zip(points_left, points_right):
        a = rectify_points(u, rig.K1, rig.dist1, rect.R1, rect.P1)[:, axis]
        b = rectify_points(v, rig.K2, rig.dist2, rect.R2, rect.P2)[:, axis]
        out.append(np.abs(a - b))
    return out


def _rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.rad2deg(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def bootstrap_baseline(obj, pl, pr, size, refine: bool, R_ref: np.ndarray, n_boot: int = 20, seed: int = 0,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Refit the whole rig (both cameras from scratch, then stereo) on pairs resampled with
    replacement; spread of |T| (same units as the board) and of the rotation (deg, vs R_ref)."""
    rng = np.random.default_rng(seed)
    n = len(obj)
    baselines, angles = [], []
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(set(idx.tolist())) >= 4:
            o = [obj[k] for k in idx]
            a = [pl[k] for k in idx]
            b = [pr[k] for k in idx]
            _, K1, d1, _, _ = cv2.calibrateCamera([x.astype(np.float32) for x in o], [x.astype(np.float32) for x in a],
                                                  tuple(size), None, None)
            _, K2, d2, _, _ = cv2.calibrateCamera([x.astype(np.float32) for x in o], [x.astype(np.float32) for x in b],
                                                  tuple(size), None, None)
            fit = _stereo_fit(o, a, b, K1, d1.ravel()[:5], K2, d2.ravel()[:5], size, refine)
            baselines.append(float(np.linalg.norm(fit["T"])))
            angles.append(_rotation_angle_deg(fit["R"] @ R_ref.T))
        if progress:
            progress("bootstrap", i + 1, n_boot)
    if len(baselines) < 2:
        raise CalibrationError(f"baseline bootstrap got {len(baselines)} refits from {n} pairs; Fix: use more "
                               "pairs (>= 8 recommended) or more refits.")
    bl = np.array(baselines)
    return {"std_mm": float(bl.std(ddof=1)), "p05_mm": float(np.percentile(bl, 5)),
            "p95_mm": float(np.percentile(bl, 95)), "rotation_std_deg": float(np.sqrt(np.mean(np.square(angles)))),
            "refits": len(bl), "baselines_mm": bl.tolist()}


def _fit_rejecting_pairs(obj, pl, pr, kept, size, left, right, refine, reject_factor, min_reject_px, max_rounds,
                         min_pairs, names, rejected) -> tuple[dict, list[int], np.ndarray]:
    """Stereo fit on the `kept` pairs; drop pairs whose RMS > max(reject_factor x median, min_reject_px)
    and refit, up to max_rounds times. Adds dropped pairs to `rejected` ({name: rms_px}).
    Returns (fit of the final kept pairs, final kept indices, their per-pair RMS)."""
    round_ = 0
    while True:
        if len(kept) < min_pairs:
            raise CalibrationError(f"only {len(kept)} pairs left after rejecting {sorted(rejected)}; Fix: "
                                   "capture more (and sharper) pairs.")
        fit = _stereo_fit([obj[k] for k in kept], [pl[k] for k in kept], [pr[k] for k in kept], left.K, left.dist,
                          right.K, right.dist, size, refine)
        per_pair = np.array([np.sqrt(np.mean(r**2)) for r in fit["residuals"]])
        limit = max(reject_factor * float(np.median(per_pair)), min_reject_px)
        bad = [k for k, v in zip(kept, per_pair) if v > limit]
        if not bad or len(kept) - len(bad) < min_pairs or round_ == max_rounds:
            return fit, kept, per_pair
        rejected.update({names[k]: float(v) for k, v in zip(kept, per_pair) if v > limit})
        kept = [k for k in kept if k not in bad]
        round_ += 1


def calibrate_stereo(
    object_points: Sequence[np.ndarray], points_left: Sequence[np.ndarray], points_right: Sequence[np.ndarray],
    image_size: tuple[int, int], names: Sequence[str] | None = None, refine_intrinsics: bool = True,
    reject_factor: float = 3.0, min_reject_px: float = 0.25, max_rounds: int = 3, min_pairs: int = 4,
    n_boot: int = 20, seed: int = 0, alpha: float = 0.0, progress: Progress | None = None,
) -> StereoCalibrationResult:
    """Calibrate both cameras and the rig from corresponding board corners.

    object_points[i]: (N_i, 3) board coordinates (mm); points_left[i], points_right[i]: (N_i, 2)
    pixels of the same corners in the same order. n_boot = 0 skips the baseline bootstrap.
    """
    n = len(object_points)
    names = list(names) if names is not None else [f"pair_{i}" for i in range(n)]
    if not (n == len(points_left) == len(points_right) == len(names)):
        raise CalibrationError(f"{n} object-point sets, {len(points_left)} left and {len(points_right)} right "
                               f"point sets and {len(names)} names: they must pair up one to one.")
    if n < min_pairs:
        raise CalibrationError(f"only {n} usable pairs; stereo calibration needs at least {min_pairs} "
                               "(10-20 recommended). Fix: capture more pairs with the board seen whole by both "
                               "cameras, across the image.")
    size = tuple(int(v) for v in image_size)
    left = calibrate_camera(object_points, points_left, size, reject_factor, min_reject_px, max_rounds, min_pairs)
    right = calibrate_camera(object_points, points_right, size, reject_factor, min_reject_px, max_rounds, min_pairs)
    rejected = {names[k]: v for k, v in {**left.rejected, **right.rejected}.items()}
    kept = [k for k in range(n) if k not in left.rejected and k not in right.rejected]
    fit, kept, per_pair = _fit_rejecting_pairs(object_points, points_left, points_right, kept, size, left.model,
                                               right.model, refine_intrinsics, reject_factor, min_reject_px,
                                               max_rounds, min_pairs, names, rejected)
    rig = StereoRig(fit["K1"], fit["d1"], fit["K2"], fit["d2"], fit["R"], fit["T"], size)
    rect = rectify(rig, alpha)
    pl, pr = [points_left[k] for k in kept], [points_right[k] for k in kept]
    epi = epipolar_errors(rig, rect, pl, pr)
    boot = {}
    if n_boot:
        boot = bootstrap_baseline([object_points[k] for k in kept], pl, pr, size, refine_intrinsics, fit["R"],
                                  n_boot, seed, progress)
    res = StereoCalibrationResult(rig, rect, rms(fit["residuals"]), fit["opencv_rms"], [names[k] for k in kept],
                                  rejected, per_pair, np.array([e.mean() for e in epi]), np.concatenate(epi),
                                  left.rms_px, right.rms_px, refine_intrinsics, boot)
    rig.meta.update({"units": "mm", "baseline_mm": rig.baseline, "rectification": rect.to_dict(),
                     "quality": res.quality()})
    return res


def detect_pairs(left_images: Sequence[np.ndarray], right_images: Sequence[np.ndarray], names: Sequence[str],
                 pattern: tuple[int, int], method: str = "sb",
                 progress: Progress | None = None) -> tuple[list[int], list[np.ndarray], list[np.ndarray], dict]:
    """Detect the board in both images of each pair.

    Returns (indices of pairs found in both, left corners, right corners (left's order), log) where
    log["missed"] lists {"name", "missing_in": "left" | "right" | "both"} for every other pair.
    All images must share one size (checked; the error names the file).
    """
    size = None
    found, cl, cr, missed = [], [], [], []
    for i, (name, a, b) in enumerate(zip(names, left_images, right_images)):
        for side, im in (("left", a), ("right", b)):
            s = (im.shape[1], im.shape[0])
            size = size or s
            if s != size:
                raise CalibrationError(f"{side} image of pair {name} is {s[0]}x{s[1]} px but earlier images are "
                                       f"{size[0]}x{size[1]}; Fix: calibrate one resolution, the same for both "
                                       "cameras.")
        u, v = detect_chessboard(a, pattern, method), detect_chessboard(b, pattern, method)
        if u is None or v is None:
            where = "both" if u is None and v is None else ("left" if u is None else "right")
            missed.append({"name": name, "missing_in": where})
        else:
            found.append(i)
            cl.append(u)
            cr.append(align_corner_order(u, v))
        if progress:
            progress("detect", i + 1, len(names))
    return found, cl, cr, {"missed": missed, "image_size": size}


def calibrate_stereo_images(left_images: Sequence[np.ndarray], right_images: Sequence[np.ndarray],
                            pattern: tuple[int, int], square_mm: float, names: Sequence[str] | None = None,
                            method: str = "sb", progress: Progress | None = None,
                            **kw) -> tuple[StereoCalibrationResult, dict]:
    """Detect the board in (H, W, 3) RGB image pairs and calibrate the rig. Returns (result, log).

    Pairs where either image lacks the board are listed in log["missed"], never silently dropped.
    """
    names = list(names) if names is not None else [f"pair_{i}" for i in range(len(left_images))]
    if pattern[0] == pattern[1]:
        raise ConfigError(f"board {pattern[0]}x{pattern[1]} is square: its corners can be numbered from any of "
                          "four sides, so the left and right images could disagree on which corner is which. Fix: "
                          "use a board with different numbers of inner corners across and down (e.g. 9x6).")
    if len(left_images) != len(right_images):
        raise DataError(f"{len(left_images)} left images but {len(right_images)} right images; Fix: pass pairs.")
    found, cl, cr, log = detect_pairs(left_images, right_images, names, pattern, method, progress)
    if len(found) < 4:
        raise CalibrationError(f"board {pattern[0]}x{pattern[1]} found in both images of only {len(found)} of "
                               f"{len(names)} pairs (missed: {[m['name'] for m in log['missed'][:5]]}). Fix: check "
                               "--board (INNER corners) and that both cameras see the whole board.")
    obj = board_object_points(*pattern, square_mm)
    res = calibrate_stereo([obj] * len(found), cl, cr, log["image_size"], [names[i] for i in found],
                           progress=progress, **kw)
    res.rig.meta["board"] = {"pattern": f"{pattern[0]}x{pattern[1]}", "square_mm": float(square_mm)}
    log["found"] = [names[i] for i in found]
    return res, log
