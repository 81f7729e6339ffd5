"""How much PaDiM's image AUROC on the texture sets depends on its random channel subset.

PaDiM keeps `n_features` (100) randomly chosen channels of the concatenated stages. Anomalib and
fovea draw different subsets (Python `random.sample` under `seed_everything` vs a seeded
`torch.randperm`), so the fovea-vs-Anomalib PaDiM rows of `benchmarks/anomaly.py` compare two
draws. This script refits fovea's PaDiM on the same splits and images as a finished
`benchmarks/anomaly.py` run, for several subset seeds and both image-score rules (max of the
sigma-4 smoothed map, the default; max of the unsmoothed map), and prints the spread beside the
Anomalib AUROC of that run. Usage (after `benchmarks/anomaly.py --out OUT`):

    .venv/bin/python benchmarks/padim_seeds.py --bench-out OUT   # writes docs/benchmarks/padim_seeds.md
    .venv/bin/python benchmarks/padim_seeds.py --bench-out OUT --quick   # grass only, 2 seeds, printed only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from fovea.engine.metrics import auroc

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-out", default=str(ROOT / "runs" / "bench_anomaly"), help="OUT of a finished anomaly.py run")
    ap.add_argument("--datasets", nargs="*", default=["brick", "grass", "gravel"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--doc", default=None, help="markdown table (default docs/benchmarks/padim_seeds.md; "
                    "'-' prints only; --quick prints only unless --doc is given)")
    ap.add_argument("--quick", action="store_true", help="grass only, 2 subset seeds (a few minutes)")
    args = ap.parse_args()
    if args.quick:
        args.datasets, args.seeds = ["grass"], 2
    if args.doc is None:
        args.doc = "-" if args.quick else str(ROOT / "docs" / "benchmarks" / "padim_seeds.md")
    torch.set_num_threads(args.threads)
    from fovea.anomaly.models import build_model
    from fovea.anomaly.workflow import FitOptions, fit_pipeline
    from fovea.io import read_image

    jobs = Path(args.bench_out) / "jobs"
    results = json.loads((Path(args.bench_out) / "results.json").read_text())
    rows, same_subset = [], []
    for ds in args.datasets:
        job = json.loads((jobs / f"{ds}_padim_fovea_job.json").read_text())
        val = [SimpleNamespace(path=Path(p), label=int(lb), mask_path=Path(m) if m else None) for p, lb, m in job["val"]]
        images = [np.array(read_image(p)) for p in job["test_paths"]]
        labels = np.array([0 if Path(p).parent.name == "good" else 1 for p in job["test_paths"]])
        anomalib = _anomalib_auroc(results, ds)
        subset = _anomalib_subset(jobs, ds)
        if subset is not None:  # fovea's PaDiM with exactly the channels Anomalib drew
            model = build_model("padim", backbone=job["backbone"], seed=0, n_features=job["n_features"])
            model.channel_index = subset
            value = _fit_and_score(model, job, val, images, labels)
            same_subset.append((ds, value, anomalib))
            print(f"{ds:<8} fovea with Anomalib's channel subset: {value:.3f}  (Anomalib {anomalib:.3f})", flush=True)
        for sigma in (4.0, 0.0):
            values = []
            for seed in range(args.seeds):
                opts = {"backbone": job["backbone"], "seed": seed, "score_sigma": sigma, "n_features": job["n_features"]}
                pipe, _ = fit_pipeline([Path(p) for p in job["train_paths"]], val,
                                       FitOptions(model="padim", input_size=tuple(job["input_size"]),
                                                  batch_size=int(job["batch_size"]), model_options=opts))
                with torch.no_grad():
                    scores = np.array([float(pipe.raw(torch.from_numpy(im)[None])[0][0]) for im in images])
                values.append(auroc(scores, labels))
            rows.append((ds, sigma, values, anomalib))
            print(f"{ds:<8} score sigma {sigma:>3}: " + " ".join(f"{v:.3f}" for v in values)
                  + f"  mean {np.mean(values):.3f}  (Anomalib {anomalib:.3f})", flush=True)
    if args.doc != "-":
        _write_doc(Path(args.doc), args, rows, labels, same_subset)


def _anomalib_subset(jobs: Path, ds: str):
    """The `idx` buffer (Anomalib's random channel subset) of the Anomalib PaDiM run on `ds`, if saved."""
    ckpts = sorted((jobs / f"{ds}_padim_anomalib_results").rglob("model.ckpt"))
    if not ckpts:
        return None
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["state_dict"]
    return state["model.idx"].clone()


def _fit_and_score(model, job, val, images, labels) -> float:
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.io import read_image

    pipe = AnomalyPipeline(model, tuple(job["input_size"])).eval()
    bs = int(job["batch_size"])
    paths = job["train_paths"]
    with torch.no_grad():
        model.fit([torch.cat([pipe.preprocess(torch.from_numpy(np.array(read_image(p)))[None])
                              for p in paths[i:i + bs]]) for i in range(0, len(paths), bs)])
        scores = np.array([float(pipe.raw(torch.from_numpy(im)[None])[0][0]) for im in images])
    return auroc(scores, labels)


def _anomalib_auroc(results, ds: str) -> float:
    rows = results["rows"] if isinstance(results, dict) and "rows" in results else results
    for r in rows:
        if r.get("dataset") == ds and r.get("model") == "padim" and r.get("side") == "anomalib":
            return float(r["image_auroc"])
    return float("nan")


def _write_doc(path: Path, args, rows, labels, same_subset) -> None:
    n_bad = int(labels.sum())
    lines = ["# PaDiM: spread over the random channel subset", "",
             f"Produced by `.venv/bin/python benchmarks/padim_seeds.py --bench-out {args.bench_out}` on the splits of "
             f"that `benchmarks/anomaly.py` run ({len(labels)} test images, {n_bad} anomalous: "
             f"{n_bad * (len(labels) - n_bad)} normal/anomalous pairs per AUROC). fovea PaDiM refitted for "
             f"channel-subset seeds 0-{args.seeds - 1}; everything else as in the anomaly benchmark.", "",
             "| data set | image score | AUROC per seed | mean | min-max | Anomalib (its own subset) |",
             "|---|---|---|---|---|---|"]
    for ds, sigma, values, anomalib in rows:
        rule = "max of sigma-4 smoothed map (default)" if sigma else "max of unsmoothed map"
        lines.append(f"| {ds} | {rule} | {' '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} | "
                     f"{min(values):.3f}-{max(values):.3f} | {anomalib:.3f} |")
    if same_subset:
        lines += ["", "Same subset: fovea's PaDiM fitted with the channel indices Anomalib drew (its checkpoint's `idx` "
                  "buffer), sigma-4 smoothed score:", "", "| data set | fovea, Anomalib's subset | Anomalib |", "|---|---|---|"]
        lines += [f"| {ds} | {v:.3f} | {a:.3f} |" for ds, v, a in same_subset]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
