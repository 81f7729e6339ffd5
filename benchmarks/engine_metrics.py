"""Pixel-metric cost: fovea's sort-based pixel AUROC vs scikit-learn's roc_auc_score, and exact vs
binned AUPRO, on a synthetic stack of anomaly maps. Medians and ratios measured in this run; the
table goes to docs/benchmarks/engine.md.

    .venv/bin/python benchmarks/engine_metrics.py            # 40 maps of 256 px, 3 repeats
    .venv/bin/python benchmarks/engine_metrics.py --quick    # 10 maps
"""

from __future__ import annotations

import argparse

import numpy as np
from _doc import Run, add_doc_args, median_wall_cpu, table


def synthetic_maps(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half the maps get one rectangular defect; scores = N(0, 1) + 1.5 inside the defect."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for k in range(n // 2):
        y, x = rng.integers(0, size - 40, 2)
        masks[k, y:y + rng.integers(5, 40), x:x + rng.integers(5, 40)] = True
    return (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32), masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    add_doc_args(ap, "engine", "10 maps instead of --images")
    a = ap.parse_args()
    run = Run(a, full_command=".venv/bin/python benchmarks/engine_metrics.py")
    n = 10 if a.quick else a.images

    from sklearn.metrics import roc_auc_score

    from fovea.engine.metrics import aupro, pixel_auroc

    maps, masks = synthetic_maps(n, a.size, a.seed)
    results = {}
    for key, fn in (
        ("sk", lambda: roc_auc_score(masks.ravel(), maps.ravel())),
        ("auroc", lambda: pixel_auroc(maps, masks)),
        ("aupro", lambda: aupro(maps, masks)),
        ("aupro_binned", lambda: aupro(maps, masks, num_thresholds=1000)),
    ):
        results[key] = (fn(), median_wall_cpu(fn, a.repeats))
    (v_sk, t_sk), (v_fv, t_fv) = results["sk"], results["auroc"]
    (v_pe, t_pe), (v_pb, t_pb) = results["aupro"], results["aupro_binned"]

    def row(metric, impl, value, t, base):
        return [metric, impl, f"{value:.6f}", f"{t[0]:.3f}", f"{t[1]:.3f}", f"{base[0] / t[0]:.2f}x / {base[1] / t[1]:.2f}x"]

    body = [
        f"{n} synthetic maps of {a.size}x{a.size} ({masks.size / 1e6:.2f} M pixels), half with one rectangular defect; "
        f"median of {a.repeats} calls each.", "",
        *table(["metric", "implementation", "value", "wall s", "CPU s", "speed-up vs baseline (wall / CPU)"], [
            row("pixel AUROC", "sklearn roc_auc_score (baseline)", v_sk, t_sk, t_sk),
            row("pixel AUROC", "fovea pixel_auroc", v_fv, t_fv, t_sk),
            row("AUPRO 0.3", "fovea exact (baseline)", v_pe, t_pe, t_pe),
            row("AUPRO 0.3", "fovea 1000 thresholds", v_pb, t_pb, t_pe),
        ]), "",
        f"fovea's pixel AUROC minus scikit-learn's: {v_fv - v_sk:.1e}; binned minus exact AUPRO: {v_pb - v_pe:.1e}.",
    ]
    run.write("Engine metrics", body)


if __name__ == "__main__":
    main()
