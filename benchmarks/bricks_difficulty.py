"""How hard is the bricks set? PatchCore (EfficientNet-Lite0, ImageNet weights) image AUROC per category.

Generates each category with `generate_bricks`, fits PatchCore through the anomaly workflow
(`fit_pipeline`, validation = test as in Anomalib's MVTec protocol; AUROC does not depend on the
threshold), and prints image AUROC overall and per defect type (each defect vs all normals) and the
mean per-image pixel AUROC of anomalous images, all from scikit-learn on the raw scores and maps.

    .venv/bin/python benchmarks/bricks_difficulty.py --categories one_up four_up --size 256 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fovea.anomaly.workflow import FitOptions, fit_pipeline, preprocessed_batches
from fovea.data import load_mvtec
from fovea.io import read_mask
from fovea.synth.bricks import CATEGORIES, generate_bricks


def evaluate(category: str, size: int, seed: int, counts: tuple[int, int, int], out: str) -> dict:
    root = generate_bricks(out, category, *counts, size=size, seed=seed)
    splits = load_mvtec(root, val_split_ratio="same_as_test")
    opts = FitOptions(model="patchcore", input_size=(size, size),
                      model_options={"backbone": "efficientnet_lite0", "weights": "default", "seed": 0})
    t0 = time.perf_counter()
    pipe, _ = fit_pipeline([s.path for s in splits.train], splits.test, opts)
    fit_s = time.perf_counter() - t0
    scores, labels, defects, pixel = [], [], [], []
    for idx, x in preprocessed_batches(pipe, [s.path for s in splits.test], 8):
        with torch.no_grad():
            s, m = pipe.core(x)
        for j, i in enumerate(idx):
            sample = splits.test[i]
            scores.append(float(s[j]))
            labels.append(sample.label)
            defects.append(sample.defect_type)
            if sample.label:
                gt, amap = read_mask(sample.mask_path), m[j, 0].numpy()
                if gt.shape == amap.shape:
                    pixel.append(roc_auc_score(gt.ravel(), amap.ravel()))
    scores, labels, defects = np.array(scores), np.array(labels), np.array(defects)
    per_defect = {}
    for d in sorted(set(defects) - {"good"}):
        keep = (defects == d) | (labels == 0)
        per_defect[d] = roc_auc_score(labels[keep], scores[keep])
    return {"image": roc_auc_score(labels, scores), "per_defect": per_defect,
            "pixel": float(np.mean(pixel)) if pixel else float("nan"), "fit_s": fit_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--categories", nargs="+", default=["one_up"], choices=CATEGORIES)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counts", type=int, nargs=3, default=(60, 20, 30), metavar=("TRAIN", "GOOD", "BAD"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| category, data seed | image AUROC | per defect | mean per-image pixel AUROC | fit s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for cat in a.categories:
            r = evaluate(cat, a.size, a.seed, tuple(a.counts), out)
            per = " / ".join(f"{d} {v:.3f}" for d, v in r["per_defect"].items())
            print(f"| {cat}, {a.seed} | {r['image']:.3f} | {per} | {r['pixel']:.3f} | {r['fit_s']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
