"""Reverse Distillation on a bricks category: image / pixel AUROC after a bounded CPU training run.

Generates the bricks data set (`fovea.synth.bricks`, MVTec layout), fits Reverse Distillation
through the same `AnomalyPipeline` the `fovea anomaly` workflow uses (resize, ImageNet
normalisation, model, sigma-4 map smoothing), and scores the test split. PaDiM on the same
backbone is measured in the same run as the baseline. AUROC from `fovea.engine.metrics.auroc`,
cross-checked with scikit-learn. Writes its table to docs/benchmarks/rd.md. Usage:

    .venv/bin/python benchmarks/rd_bricks.py --threads 1            # full: 30 epochs at 256 px
    .venv/bin/python benchmarks/rd_bricks.py --threads 1 --quick    # 10 epochs at 128 px
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _doc import Run, add_doc_args, table
from sklearn.metrics import roc_auc_score

from fovea.anomaly.models import build_model
from fovea.anomaly.pipeline import AnomalyPipeline
from fovea.engine.metrics import auroc, pixel_auroc
from fovea.io import read_image, read_mask
from fovea.synth.bricks import generate_bricks


def batches(pipe: AnomalyPipeline, paths: list[Path], batch_size: int):
    for i in range(0, len(paths), batch_size):
        with torch.no_grad():
            yield torch.cat([pipe.preprocess(torch.from_numpy(read_image(p).copy())[None]) for p in paths[i:i + batch_size]])


def run(name: str, options: dict, size: int, train: list[Path], test: list[tuple[Path, int, Path | None]]) -> dict:
    model = build_model(name, **options)
    pipe = AnomalyPipeline(model, (size, size), blur_sigma=4.0).eval()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.fit(list(batches(pipe, train, 8)))
    fit_wall, fit_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    pipe.eval()
    scores, labels, maps, masks = [], [], [], []
    for path, label, mask_path in test:
        with torch.no_grad():
            s, m = pipe.raw(torch.from_numpy(read_image(path).copy())[None])
        scores.append(float(s[0]))
        labels.append(label)
        maps.append(m[0, 0].numpy())
        masks.append(read_mask(mask_path) > 0 if mask_path else np.zeros(maps[-1].shape, bool))
    scores, labels = np.asarray(scores), np.asarray(labels)
    out = {"model": name, "image_auroc": auroc(scores, labels), "image_auroc_sklearn": roc_auc_score(labels, scores),
           "pixel_auroc": pixel_auroc(np.stack(maps), np.stack(masks)), "fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu}
    if getattr(model, "history", None):
        out["train_loss_first_last"] = [model.history[0].get("train_loss"), model.history[-1].get("train_loss")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--category", default="one_up", choices=["one_up", "two_up", "three_up", "four_up"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--out", default="runs/bench_rd_bricks")
    add_doc_args(ap, "rd", "10 epochs at 128 px (other options as given)")
    args = ap.parse_args()
    run_doc = Run(args, full_command=".venv/bin/python benchmarks/rd_bricks.py --threads 1")
    if args.quick:
        args.epochs, args.size = 10, 128
        args.out = str(Path(args.out) / "quick")
    torch.set_num_threads(args.threads)
    root = generate_bricks(Path(args.out) / "data", args.category, n_train=args.n_train, n_test_good=20, n_test_bad=30,
                           size=args.size, seed=args.seed)
    train = sorted((root / "train" / "good").glob("*.png"))
    test = [(p, 0, None) for p in sorted((root / "test" / "good").glob("*.png"))]
    for d in sorted(p.name for p in (root / "test").iterdir() if p.name != "good"):
        test += [(p, 1, root / "ground_truth" / d / f"{p.stem}_mask.png") for p in sorted((root / "test" / d).glob("*.png"))]
    rd = run("reverse_distillation", {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                                      "seed": args.seed, "weights": args.weights}, args.size, train, test)
    padim = run("padim", {"weights": args.weights}, args.size, train, test)
    Path(args.out, "result.json").write_text(json.dumps({"args": vars(args), "rd": rd, "padim": padim}, indent=2))
    rows = [[r["model"] + (" (baseline)" if r is padim else ""), f"{r['image_auroc']:.3f}", f"{r['image_auroc_sklearn']:.3f}",
             f"{r['pixel_auroc']:.3f}", f"{r['fit_wall_s']:.1f} / {r['fit_cpu_s']:.1f}"] for r in (rd, padim)]
    loss = rd.get("train_loss_first_last")
    target = "met" if rd["image_auroc"] >= 0.95 and rd["fit_cpu_s"] <= 600 else "NOT met"
    body = [
        f"Bricks `{args.category}`, {args.size} px, {len(train)} train / {len(test)} test images (20 good, 30 anomalous); "
        f"RD: EfficientNet-Lite0 teacher ({args.weights} weights) stages 1-3, AdamW lr {args.lr}, cosine, batch "
        f"{args.batch_size}, {args.epochs} epochs, {args.threads} torch thread(s). Fit time includes building the "
        "teacher and reading the images.", "",
        *table(["model", "image AUROC", "(scikit-learn)", "pixel AUROC", "fit wall / CPU s"], rows), "",
        (f"RD training loss (sum over three scales of the mean cosine distance), first / last epoch: "
         f"{loss[0]:.2f} / {loss[1]:.2f}. " if loss else "")
        + f"Issue 3 target (image AUROC >= 0.95 within 600 CPU-s of training): {target} in this run.",
    ]
    run_doc.write("Reverse Distillation on bricks", body)


if __name__ == "__main__":
    main()
