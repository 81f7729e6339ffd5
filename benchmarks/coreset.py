"""PatchCore's greedy k-center coreset: exact pruned greedy vs the plain loop, by training-set size.

Features are PatchCore's (offline ImageNet EfficientNet-Lite0, 256 px, 3x3 pooled, 128-d random
projection) of N generated bricks `one_up` training images, 1,024 patches each, coreset ratio 0.1:
the workload of `fovea anomaly fit` at N images. Both selectors run on the same features in the same
process, one torch thread, round-robin; the plain loop (`greedy_k_center_reference`, baseline) is
skipped above --ref-max-images (its time is then estimated from its per-step cost and marked so).
The indices are compared wherever both ran.
Quick version: `--quick` (10 and 24 images, plain loop at both; a few minutes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402


def patch_features(n_images: int, size: int = 256, projection_dim: int = 128) -> torch.Tensor:
    from fovea.anomaly.patchcore import PatchCore
    from fovea.synth.bricks import render_bricks_scene

    model = PatchCore()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    chunks = []
    with torch.no_grad():
        for i in range(n_images):
            img, _ = render_bricks_scene("one_up", None, rng=i, size=size)
            x = (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255 - mean) / std
            e = model.embed(x)
            chunks.append(e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
    feats = torch.cat(chunks)
    proj = torch.randn(feats.shape[1], projection_dim, generator=torch.Generator().manual_seed(0))
    return (feats @ (proj / projection_dim**0.5)).contiguous()


def timed(fn, repeats: int) -> tuple[float, float, object]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def main() -> None:
    from fovea.anomaly.coreset import greedy_k_center, greedy_k_center_reference

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", default="24,50,100,200", help="training-set sizes (comma separated)")
    ap.add_argument("--ref-max-images", type=int, default=100, help="largest size at which the plain loop runs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.1)
    add_doc_args(ap, "coreset", "10 and 24 images, plain loop at both")
    args = ap.parse_args()
    if args.quick:
        args.images, args.ref_max_images = "10,24", 24
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/coreset.py")
    rows = []
    for n_img in [int(v) for v in args.images.split(",")]:
        x = patch_features(n_img)
        k = int(round(x.shape[0] * args.ratio))
        fw, fc, fast = timed(lambda: greedy_k_center(x, k, start=0), args.repeats)
        if n_img <= args.ref_max_images:
            rw, rc, ref = timed(lambda: greedy_k_center_reference(x, k, start=0), args.repeats)
            same = "yes" if torch.equal(ref, fast) else "**NO**"
            ref_s = f"{rw:.1f} / {rc:.1f}"
            ratio = f"{rw / fw:.1f}x / {rc / fc:.1f}x"
        else:  # estimate the plain loop from 50 of its steps (cost per step is constant)
            t0 = time.perf_counter()
            greedy_k_center_reference(x, 50, start=0)
            est = (time.perf_counter() - t0) / 50 * k
            same, ref_s, ratio = "not run", f"~{est:.0f} (estimated from 50 steps)", f"~{est / fw:.0f}x (wall)"
        rows.append([n_img, f"{x.shape[0]:,}", f"{k:,}", ref_s, f"{fw:.1f} / {fc:.1f}", ratio, same])
        print(rows[-1], flush=True)
    body = table(["train images", "patches", "coreset", "plain loop s (wall / CPU)",
                  "pruned exact s (wall / CPU)", "speed-up (wall / CPU)", "same indices"], rows)
    body += ["", "Same features, same start index, one torch thread; medians of "
             f"{args.repeats} run(s). 'same indices' compares the two selections element by element."]
    run.write("PatchCore coreset: exact pruned greedy vs plain greedy loop", body)


if __name__ == "__main__":
    main()
