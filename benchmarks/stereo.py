"""Stereo benchmark: dense matching on Middlebury, and rig calibration on renders of a known rig.

    .venv/bin/python benchmarks/stereo.py           # full: writes docs/benchmarks/stereo.md
    .venv/bin/python benchmarks/stereo.py --quick   # fewer repeats, seeds and pairs (~1-2 min)

1. Matching, scikit-image's Middlebury 'motorcycle' pair (ships offline). Same run: OpenCV SGBM
   with DEFAULT parameters (the named baseline), OpenCV SGBM with defaults except
   numDisparities=64 (a fairer baseline: the default 16 cannot reach this pair's 7-60 px
   disparities), and fovea's matcher (SGBM 3-way + left-right check + hole filling). Scores over
   pixels with finite ground truth; a missing prediction counts as bad. Times: medians.
2. Rig calibration, `synth.stereo_rig` renders of `TrueRig.default()` (two 640x480 cameras with
   different lenses, 79.8 mm baseline, toed in 2 deg), 9x6 board of 25 mm, per seed a fresh set
   of pairs plus 4 held-out pairs. Same corners for every method. Baseline method: OpenCV's
   recipe, `calibrateCamera` per camera then `stereoCalibrate(CALIB_FIX_INTRINSIC)`, written here
   with plain cv2 calls. Errors are against the rendered truth; the held-out epipolar error is
   |y_l - y_r| after rectification of pairs no method saw.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from _doc import Run, add_doc_args, median_wall_cpu, table
from skimage import data

from fovea.geometry.calibration import board_object_points
from fovea.geometry.stereo import (
    SGMConfig, StereoRig, compute_disparity, evaluate_disparity, opencv_default_sgbm, rectify,
)
from fovea.geometry.stereo_calibration import calibrate_stereo, detect_pairs, epipolar_errors
from fovea.synth.stereo_rig import render_stereo_calibration_pairs


# ---- 1. matching ----------------------------------------------------------------------------------
def _sgbm64(left, right):
    d = cv2.StereoSGBM_create(numDisparities=64).compute(left, right).astype(np.float32) / 16
    d[d < 0] = np.nan
    return d


def matching_section(repeats: int) -> list[str]:
    left, right, gt = data.stereo_motorcycle()
    methods = {
        "OpenCV SGBM, default parameters (baseline)": lambda: opencv_default_sgbm(left, right),
        "OpenCV SGBM, defaults + numDisparities=64": lambda: _sgbm64(left, right),
        "fovea (SGBM 3-way, LR check, hole fill)":
            lambda: compute_disparity(left, right, SGMConfig(num_disparities=64))[0],
    }
    rows, base_t = [], None
    for name, fn in methods.items():
        wall, _ = median_wall_cpu(fn, repeats)
        s = evaluate_disparity(fn(), gt)
        base_t = base_t or wall
        rows.append([name, f"{s['bad1']:.3f}", f"{s['bad2']:.3f}", f"{s['epe']:.2f}", f"{s['density']:.3f}",
                     f"{wall:.3f}", f"{wall / base_t:.1f}x"])
    return [f"### Matching: Middlebury motorcycle ({left.shape[1]}x{left.shape[0]}), OpenCV {cv2.__version__}, "
            f"median of {repeats} run(s)", "",
            *table(["method", "bad-1px", "bad-2px", "EPE (px, predicted pixels)", "density", "time (s)",
                    "time vs baseline"], rows), "",
            "bad-Npx: fraction of ground-truth pixels whose disparity is off by more than N px or missing. "
            "EPE: mean absolute error over pixels with a prediction (so sparse methods look better on EPE "
            "than on bad-px)."]


# ---- 2. rig calibration ---------------------------------------------------------------------------
def opencv_recipe(obj, lefts, rights, size) -> StereoRig:
    """The baseline: calibrateCamera per camera, then stereoCalibrate with the intrinsics fixed."""
    o = [x.astype(np.float32) for x in obj]
    _, K1, d1, _, _ = cv2.calibrateCamera(o, [x.astype(np.float32) for x in lefts], size, None, None)
    _, K2, d2, _, _ = cv2.calibrateCamera(o, [x.astype(np.float32) for x in rights], size, None, None)
    out = cv2.stereoCalibrate(o, [x.astype(np.float32) for x in lefts], [x.astype(np.float32) for x in rights],
                              K1, d1, K2, d2, size, flags=cv2.CALIB_FIX_INTRINSIC)
    return StereoRig(K1, d1.ravel()[:5], K2, d2.ravel()[:5], out[5], np.asarray(out[6]).reshape(3, 1), size)


def _rotation_error_deg(R, R_true) -> float:
    return float(np.rad2deg(np.linalg.norm(cv2.Rodrigues(np.asarray(R) @ np.asarray(R_true).T)[0])))


def rig_section(seeds: int, n_pairs: int, n_boot: int) -> list[str]:
    methods = ["OpenCV recipe: calibrateCamera x2 + stereoCalibrate(FIX_INTRINSIC) (baseline)",
               "fovea, intrinsics fixed (--fix-intrinsics)", "fovea, joint refinement (default)"]
    per = {m: {"err_pct": [], "rot_deg": [], "epi_det": [], "epi_exact": [], "time": []} for m in methods}
    honesty = []
    for seed in range(seeds):
        renders = render_stereo_calibration_pairs(n_pairs, seed=seed)
        held = render_stereo_calibration_pairs(4, seed=1000 + seed)
        truth = renders.rig
        names = [f"p{i}" for i in range(n_pairs)]
        found, lefts, rights, log = detect_pairs(renders.left_images, renders.right_images, names, (9, 6))
        _, hl, hr, _ = detect_pairs(held.left_images, held.right_images, names[:4], (9, 6))
        obj = [board_object_points(9, 6, 25.0)] * len(found)
        size = log["image_size"]
        for m in methods:
            t0 = time.perf_counter()
            if m.startswith("OpenCV"):
                rig, std = opencv_recipe(obj, lefts, rights, size), None
            else:
                res = calibrate_stereo(obj, lefts, rights, size, refine_intrinsics="joint" in m, n_boot=n_boot,
                                       seed=seed)
                rig, std = res.rig, res.bootstrap["std_mm"]
            per[m]["time"].append(time.perf_counter() - t0)
            rect = rectify(rig)
            err = rig.baseline / truth.baseline_mm - 1
            per[m]["err_pct"].append(100 * err)
            per[m]["rot_deg"].append(_rotation_error_deg(rig.R, truth.R))
            per[m]["epi_det"].append(float(np.concatenate(epipolar_errors(rig, rect, hl, hr)).mean()))
            per[m]["epi_exact"].append(float(np.concatenate(epipolar_errors(
                rig, rect, held.true_corners_left_px, held.true_corners_right_px)).mean()))
            if std is not None and "joint" in m:
                honesty.append([seed, len(found), f"{truth.baseline_mm:.3f}", f"{rig.baseline:.3f}",
                                f"{100 * err:+.3f}", f"{std:.3f}", f"{abs(rig.baseline - truth.baseline_mm) / std:.1f}"])
    base_time = statistics.median(per[methods[0]]["time"])
    rows = []
    for m in methods:
        p = per[m]
        abs_err = [abs(v) for v in p["err_pct"]]
        rows.append([m, f"{statistics.median(abs_err):.3f}", f"{max(abs_err):.3f}",
                     f"{statistics.median(p['rot_deg']):.3f}", f"{statistics.median(p['epi_det']):.3f}",
                     f"{statistics.median(p['epi_exact']):.4f}", f"{statistics.median(p['time']):.2f}",
                     f"{statistics.median(p['time']) / base_time:.1f}x"])
    return [f"### Rig calibration: {seeds} seed(s) x {n_pairs} rendered pairs, 4 held-out pairs per seed, "
            f"fovea bootstrap {n_boot} refits", "",
            *table(["method", "median abs baseline error (%)", "max abs baseline error (%)",
                    "median rotation error (deg)", "held-out epipolar, detected corners (px)",
                    "held-out epipolar, exact corners (px)", "fit time (s)", "time vs baseline"], rows), "",
            "fovea's fit time includes its bootstrap (the baseline uncertainty) and the pair rejection.", "",
            "Is the stated baseline uncertainty honest? (fovea default; abs(error) / std near or below 2 is consistent)",
            "", *table(["seed", "pairs", "true baseline (mm)", "estimate (mm)", "error (%)", "bootstrap std (mm)",
                        "abs(error) / std"], honesty)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_doc_args(ap, "stereo", "3 seeds x 10 pairs, 1 matching repeat, 10 bootstrap refits")
    args = ap.parse_args()
    run = Run(args, full_command=".venv/bin/python benchmarks/stereo.py")
    if args.quick:
        body = matching_section(1) + [""] + rig_section(3, 10, 10)
    else:
        body = matching_section(3) + [""] + rig_section(6, 16, 20)
    run.write("Stereo benchmark", body)


if __name__ == "__main__":
    main()
