"""Pixel-metric cost: fovea's sort-based pixel AUROC vs scikit-learn's roc_auc_score, and exact vs
binned AUPRO, on a synthetic stack of anomaly maps. Prints medians and ratios measured in this run.

    .venv/bin/python benchmarks/engine_metrics.py --images 40 --size 256 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from sklearn.metrics import roc_auc_score

    from fovea.engine.metrics import aupro, pixel_auroc

    rng = np.random.default_rng(a.seed)
    masks = np.zeros((a.images, a.size, a.size), bool)
    for k in range(a.images // 2):
        y, x = rng.integers(0, a.size - 40, 2)
        masks[k, y:y + rng.integers(5, 40), x:x + rng.integers(5, 40)] = True
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    n_px = masks.size
    print(f"{a.images} maps of {a.size}x{a.size} = {n_px / 1e6:.2f} M pixels, median of {a.repeats}")
    t_sk, v_sk = _median_time(lambda: roc_auc_score(masks.ravel(), maps.ravel()), a.repeats)
    t_fv, v_fv = _median_time(lambda: pixel_auroc(maps, masks), a.repeats)
    t_pe, v_pe = _median_time(lambda: aupro(maps, masks), a.repeats)
    t_pb, v_pb = _median_time(lambda: aupro(maps, masks, num_thresholds=1000), a.repeats)
    print("| metric | implementation | value | seconds | ratio |")
    print("|---|---|---|---|---|")
    print(f"| pixel AUROC | sklearn roc_auc_score (baseline) | {v_sk:.6f} | {t_sk:.3f} | 1.00 |")
    print(f"| pixel AUROC | fovea pixel_auroc | {v_fv:.6f} | {t_fv:.3f} | {t_sk / t_fv:.2f}x faster |")
    print(f"| AUPRO 0.3 | fovea exact (baseline) | {v_pe:.6f} | {t_pe:.3f} | 1.00 |")
    print(f"| AUPRO 0.3 | fovea 1000 thresholds | {v_pb:.6f} | {t_pb:.3f} | {t_pe / t_pb:.2f}x faster |")


if __name__ == "__main__":
    main()
