"""PatchCore's greedy k-center coreset: exact pruned greedy (C loop, torch loop) vs the plain loop, by size.

Features are PatchCore's (offline ImageNet EfficientNet-Lite0, 256 px, 3x3 pooled, 128-d random
projection) of N generated bricks `one_up` training images, 1,024 patches each, coreset ratio 0.1:
the workload of `fovea anomaly fit` at N images. All selectors run on the same features in the same
process, one thread. Speed baseline: the plain loop as a float32 matrix-vector product per step
(`plain_f32`, the fastest plain form; Anomalib's is similar), run up to --plain-max-images and
estimated from 50 of its steps above. Exactness: the indices are compared with the exact plain loop
(`greedy_k_center_reference`, float64 sequential distances, slower) up to --ref-max-images. The torch
pruned loop (the no-compiler fallback) runs up to --torch-max-images.
Quick version: `--quick` (10 and 24 images; a few minutes).
"""

from __future__ import annotations

import argparse
import os
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


def plain_f32(x: torch.Tensor, n_select: int, start: int) -> torch.Tensor:
    """The plain greedy loop with float32 expanded distances |x|^2 - 2 x.c + |c|^2 (one matvec per step).
    Speed baseline only: its near-tie choices depend on BLAS rounding (see fovea.anomaly.coreset)."""
    sq = x.pow(2).sum(1)
    selected = torch.empty(n_select, dtype=torch.long)
    min_d = torch.full((x.shape[0],), float("inf"))
    current = int(start)
    for step in range(n_select):
        selected[step] = current
        torch.minimum(min_d, sq - 2.0 * (x @ x[current]) + sq[current], out=min_d)
        current = int(torch.argmax(min_d))
    return selected


def cached_features(n_images: int, cache: Path) -> torch.Tensor:
    """Features of the first n_images scenes; a cached larger set is sliced (scene i is rendered from seed i,
    1,024 patches each, so its first rows are the smaller set's)."""
    path = cache / f"coreset_features_{n_images}.pt"
    if path.is_file():
        return torch.load(path)
    larger = sorted((int(f.stem.rsplit("_", 1)[1]), f) for f in cache.glob("coreset_features_*.pt")
                    if int(f.stem.rsplit("_", 1)[1]) > n_images)
    if larger:
        return torch.load(larger[0][1])[: n_images * 1024].contiguous()
    x = patch_features(n_images)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(x, path)
    return x


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
    ap.add_argument("--images", default="24,50,100,200,400", help="training-set sizes (comma separated)")
    ap.add_argument("--plain-max-images", type=int, default=50, help="largest size at which the plain loop runs")
    ap.add_argument("--ref-max-images", type=int, default=24, help="largest size checked against the exact loop")
    ap.add_argument("--torch-max-images", type=int, default=100, help="largest size for the torch pruned loop")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / "runs" / "bench_coreset"),
                    help="folder for the extracted features (reused by later runs)")
    add_doc_args(ap, "coreset", "10 and 24 images")
    args = ap.parse_args()
    if args.quick:
        args.images = "10,24"
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/coreset.py")
    rows = []
    for n_img in [int(v) for v in args.images.split(",")]:
        x = cached_features(n_img, Path(args.cache))
        k = int(round(x.shape[0] * args.ratio))
        load = os.getloadavg()[0]
        cw, cc, fast = timed(lambda: greedy_k_center(x, k, start=0, native=True), args.repeats)
        if n_img <= args.torch_max_images:
            tw, tc, fast_t = timed(lambda: greedy_k_center(x, k, start=0, native=False), args.repeats)
            torch_s = f"{tw:.1f} / {tc:.1f}"
        else:
            fast_t, torch_s = None, "not run"
        if n_img <= args.plain_max_images:
            pw, pc, _ = timed(lambda: plain_f32(x, k, 0), args.repeats)
            plain_s, ratio = f"{pw:.1f} / {pc:.1f}", f"{pw / cw:.1f}x / {pc / cc:.1f}x"
        else:  # estimate the plain loop from 50 of its steps (cost per step is constant)
            t0, c0 = time.perf_counter(), time.process_time()
            plain_f32(x, 50, 0)
            pw, pc = (time.perf_counter() - t0) / 50 * k, (time.process_time() - c0) / 50 * k
            plain_s, ratio = f"~{pw:.0f} / ~{pc:.0f} (from 50 steps)", f"~{pw / cw:.0f}x / ~{pc / cc:.0f}x"
        if n_img <= args.ref_max_images:
            ref = greedy_k_center_reference(x, k, start=0)
            same = ("yes" if torch.equal(ref, fast) else "**NO**") + " / " + (
                "-" if fast_t is None else ("yes" if torch.equal(ref, fast_t) else "**NO**"))
        else:
            same = "not run / " + ("-" if fast_t is None else ("yes" if torch.equal(fast, fast_t) else "**NO**")
                                   + " (C = torch)")
        rows.append([n_img, f"{x.shape[0]:,}", f"{k:,}", plain_s, torch_s, f"{cw:.1f} / {cc:.1f}", ratio, same,
                     f"{load:.1f}"])
        print(rows[-1], flush=True)
    body = table(["train images", "patches", "coreset", "plain loop f32 s (wall / CPU)",
                  "pruned torch s (wall / CPU)", "pruned C s (wall / CPU)", "C speed-up vs plain (wall / CPU)",
                  "same indices as exact plain loop: C / torch", "load at start"], rows)
    body += ["", "Same features, same start index, one thread; medians of "
             f"{args.repeats} run(s). 'same indices' compares the selections element by element with "
             "`greedy_k_center_reference` (float64 sequential distances); above the sizes where that loop ran, "
             "the C selection is compared with the torch pruned loop's. CPU = process time (the machine is "
             "shared; wall includes waiting for a core)."]
    run.write("PatchCore coreset: exact pruned greedy vs plain greedy loop", body)


if __name__ == "__main__":
    main()
