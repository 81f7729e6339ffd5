"""How hard is the bricks set? PatchCore (EfficientNet-Lite0, ImageNet weights) image AUROC per category.

Generates each category with `generate_bricks`, fits PatchCore through the anomaly workflow
(`fit_pipeline`, validation = test as in Anomalib's MVTec protocol; AUROC does not depend on the
threshold), and reports image AUROC overall and per defect type (each defect vs all normals) and the
mean per-image pixel AUROC of anomalous images, all from scikit-learn on the raw scores and maps.
Baseline in the same run: a PatchCore-free score, the mean absolute difference of the test image to
the mean training image (a pixel-difference detector). Writes its block of docs/benchmarks/data.md.

    .venv/bin/python benchmarks/bricks_difficulty.py --categories one_up three_up --seed 2   # full
    .venv/bin/python benchmarks/bricks_difficulty.py --quick    # one_up, 128 px, 20 train / 10+10 test
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from _doc import Run, add_doc_args, table
from sklearn.metrics import roc_auc_score

from fovea.anomaly.workflow import FitOptions, fit_pipeline, preprocessed_batches
from fovea.data import load_mvtec
from fovea.io import read_image, read_mask
from fovea.synth.bricks import CATEGORIES, generate_bricks


def mean_image_score(train_paths, test_paths) -> np.ndarray:
    """Baseline: mean |test - mean train image| per test image (no learning, no features)."""
    mean = np.mean([read_image(p).astype(np.float32) for p in train_paths], axis=0)
    return np.array([np.abs(read_image(p).astype(np.float32) - mean).mean() for p in test_paths])


def evaluate(category: str, size: int, seed: int, counts: tuple[int, int, int], out: str) -> dict:
    root = generate_bricks(out, category, *counts, size=size, seed=seed)
    splits = load_mvtec(root, val_split_ratio="same_as_test")
    opts = FitOptions(model="patchcore", input_size=(size, size),
                      model_options={"backbone": "efficientnet_lite0", "weights": "default", "seed": 0})
    t0, c0 = time.perf_counter(), time.process_time()
    pipe, _ = fit_pipeline([s.path for s in splits.train], splits.test, opts)
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    scores, labels, defects, pixel = [], [], [], []
    order = []
    for idx, x in preprocessed_batches(pipe, [s.path for s in splits.test], 8):
        with torch.no_grad():
            s, m = pipe.core(x)
        for j, i in enumerate(idx):
            sample = splits.test[i]
            order.append(i)
            scores.append(float(s[j]))
            labels.append(sample.label)
            defects.append(sample.defect_type)
            if sample.label:
                gt, amap = read_mask(sample.mask_path), m[j, 0].numpy()
                if gt.shape == amap.shape:
                    pixel.append(roc_auc_score(gt.ravel(), amap.ravel()))
    scores, labels, defects = np.array(scores), np.array(labels), np.array(defects)
    baseline = mean_image_score([s.path for s in splits.train], [splits.test[i].path for i in order])
    per_defect = {}
    for d in sorted(set(defects) - {"good"}):
        keep = (defects == d) | (labels == 0)
        per_defect[d] = roc_auc_score(labels[keep], scores[keep])
    return {"image": roc_auc_score(labels, scores), "baseline": roc_auc_score(labels, baseline),
            "per_defect": per_defect, "pixel": float(np.mean(pixel)) if pixel else float("nan"),
            "fit_s": fit_s, "fit_cpu_s": fit_cpu_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--categories", nargs="+", default=["one_up"], choices=CATEGORIES)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counts", type=int, nargs=3, default=(60, 20, 30), metavar=("TRAIN", "GOOD", "BAD"))
    add_doc_args(ap, "data", "one_up only, 128 px, counts 20 / 10 / 10")
    a = ap.parse_args()
    run = Run(a, full_command=".venv/bin/python benchmarks/bricks_difficulty.py --categories one_up three_up --seed 2")
    cats, size, counts = (["one_up"], 128, (20, 10, 10)) if a.quick else (a.categories, a.size, tuple(a.counts))
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for cat in cats:
            r = evaluate(cat, size, a.seed, counts, out)
            per = " / ".join(f"{d} {v:.3f}" for d, v in r["per_defect"].items())
            rows.append([f"{cat}, {a.seed}", f"{r['image']:.3f}", per, f"{r['pixel']:.3f}", f"{r['baseline']:.3f}",
                         f"{r['fit_s']:.0f} / {r['fit_cpu_s']:.0f}"])
            print(rows[-1], flush=True)
    body = [
        f"PatchCore, EfficientNet-Lite0 (offline ImageNet weights), {size} px; {counts[0]} train, {counts[1]} good + "
        f"{counts[2]} anomalous test images per category; validation = test; AUROC from scikit-learn on raw scores "
        "and maps. Baseline: mean absolute difference to the mean training image (same images, same run).", "",
        *table(["category, data seed", "image AUROC", "per defect", "mean per-image pixel AUROC",
                "baseline image AUROC", "fit wall / CPU s"], rows),
    ]
    run.write("Data generators", body)


if __name__ == "__main__":
    main()
