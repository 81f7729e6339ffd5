"""Stereo benchmark on scikit-image's Middlebury 'motorcycle' pair (ships offline).

Compares, in the same run: OpenCV SGBM with DEFAULT parameters (the required baseline), OpenCV
SGBM with defaults except numDisparities=64 (a fairer baseline: the default 16 cannot reach this
pair's 7-60 px disparities), and fovea's matcher (SGBM 3-way + left-right check + hole filling).
Scores over pixels with finite ground truth; a missing prediction counts as bad. Times are
medians of --repeats runs. Run: .venv/bin/python benchmarks/stereo.py [--markdown docs/benchmarks/stereo.md]
"""

from __future__ import annotations

import argparse
import platform
import time

import cv2
import numpy as np
from skimage import data

from fovea.geometry.stereo import SGMConfig, compute_disparity, evaluate_disparity, opencv_default_sgbm


def _sgbm64(left, right):
    d = cv2.StereoSGBM_create(numDisparities=64).compute(left, right).astype(np.float32) / 16
    d[d < 0] = np.nan
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", default=None, help="write the table to this file")
    args = ap.parse_args()
    left, right, gt = data.stereo_motorcycle()
    methods = {
        "OpenCV SGBM, default parameters": lambda: opencv_default_sgbm(left, right),
        "OpenCV SGBM, defaults + numDisparities=64": lambda: _sgbm64(left, right),
        "fovea (SGBM 3-way, LR check, hole fill)": lambda: compute_disparity(left, right, SGMConfig(num_disparities=64))[0],
    }
    rows = []
    for name, fn in methods.items():
        times, out = [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        s = evaluate_disparity(out, gt)
        rows.append((name, s, float(np.median(times))))
    base_t = rows[0][2]
    lines = [f"Middlebury motorcycle (scikit-image, {left.shape[1]}x{left.shape[0]}), OpenCV {cv2.__version__}, "
             f"{platform.processor() or platform.machine()}, median of {args.repeats} runs.", "",
             "| method | bad-1px | bad-2px | EPE (px, predicted pixels) | density | time (s) | time vs default |",
             "|---|---|---|---|---|---|---|"]
    for name, s, t in rows:
        lines.append(f"| {name} | {s['bad1']:.3f} | {s['bad2']:.3f} | {s['epe']:.2f} | {s['density']:.3f} | "
                     f"{t:.3f} | {t / base_t:.1f}x |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# Stereo benchmark\n\nCommand: `.venv/bin/python benchmarks/stereo.py --markdown "
                    "docs/benchmarks/stereo.md`\n\n" + text + "\n\nbad-Npx: fraction of ground-truth pixels "
                    "whose disparity is off by more than N px or missing. EPE: mean absolute error over pixels "
                    "with a prediction (so sparse methods look better on EPE than on bad-px).\n")


if __name__ == "__main__":
    main()
