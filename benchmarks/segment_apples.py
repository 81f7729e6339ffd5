"""Segmentation on synthetic apple scenes: train with the engine, test through the Predictor.

Generates train / val / test scenes with different seeds (`fovea.synth.apples`), fine-tunes an
LRASPP head + EfficientNet-Lite0 (offline ImageNet weights) with `train_segmenter`, and reports
per-class IoU, mean IoU and pixel accuracy on the held-out test scenes at full resolution, next to
a trivial baseline measured in the same run (every apple pixel called "good skin", which a
colour threshold would reach). Writes its table to docs/benchmarks/segment.md. Usage:

    .venv/bin/python benchmarks/segment_apples.py --threads 1            # full: 240/40/60 scenes, 256 px, 20 epochs
    .venv/bin/python benchmarks/segment_apples.py --threads 1 --quick    # same scene counts at 128 px, 15 epochs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _doc import Run, add_doc_args, table

import fovea
from fovea.engine.train import TrainConfig
from fovea.segment.data import MaskFolderDataset
from fovea.segment.metrics import confusion_matrix, summarize
from fovea.segment.train import evaluate_segmenter, train_segmenter
from fovea.synth.apples import CLASS_NAMES, generate_apple_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--test", type=int, default=60)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--apples", type=int, nargs=2, default=(1, 2), help="min/max apples per scene")
    ap.add_argument("--radius", type=float, nargs=2, default=(0.25, 0.38), help="apple radius / image size")
    ap.add_argument("--low-index", type=int, default=0, help="LRASPP low branch feature index (0 = stride 2)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--class-weights", default="none", choices=["none", "auto"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_segment_apples")
    add_doc_args(ap, "segment", "128 px, 15 epochs (scene counts as given)")
    args = ap.parse_args()
    run = Run(args, full_command=".venv/bin/python benchmarks/segment_apples.py --threads 1")
    if args.quick:
        args.size, args.epochs = 128, 15
        args.out = str(Path(args.out) / "quick")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    size = (args.size, args.size)
    t0 = time.perf_counter()
    for split, n, seed in (("train", args.train, 100 + args.seed), ("val", args.val, 200 + args.seed),
                           ("test", args.test, 300 + args.seed)):
        if not (out / "data" / split / "images" / f"{n - 1:05d}.png").is_file():
            generate_apple_scenes(out / "data" / split, n=n, size=args.size, seed=seed, n_apples=tuple(args.apples),
                                  radius_frac=tuple(args.radius))
    gen_s = time.perf_counter() - t0
    ds = {s: MaskFolderDataset(out / "data" / s / "images", out / "data" / s / "masks", size=size,
                               augment=(s == "train")) for s in ("train", "val", "test")}
    cfg = TrainConfig(optimizer="adamw", lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs,
                      schedule="cosine", warmup_epochs=1, monitor="val_miou", mode="max", seed=args.seed,
                      out_dir=str(out / "run"))
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_segmenter(ds["train"], ds["val"], len(CLASS_NAMES), CLASS_NAMES, "efficientnet_lite0", cfg,
                          weights=args.weights, input_size=size, low_index=args.low_index,
                          class_weights=None if args.class_weights == "none" else "auto")
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    predictor = fovea.load_predictor(res.checkpoint)
    t0 = time.perf_counter()
    test = evaluate_segmenter(predictor, ds["test"], overlay_dir=out / "overlays", max_overlays=8).metrics
    test_s = time.perf_counter() - t0

    # baseline in the same run: ground-truth apple silhouettes, every apple pixel "good"
    cm = np.zeros((len(CLASS_NAMES),) * 2, np.int64)
    for i in range(len(ds["test"])):
        _, mask = ds["test"].load(i)
        cm += confusion_matrix(np.where(mask > 0, 1, 0), mask, len(CLASS_NAMES))
    base = summarize(cm, CLASS_NAMES)
    (out / "result.json").write_text(json.dumps({"args": vars(args), "test": test, "baseline": base,
                                                 "history": res.history, "train_s": train_s}, indent=2, default=str))

    def iou(v):
        return "-" if v is None else f"{v:.3f}"

    rows = [[name, iou(test["iou"][name]), iou(base["iou"][name])] for name in CLASS_NAMES]
    rows += [["**mean IoU**", f"**{test['mean_iou']:.3f}**", f"{base['mean_iou']:.3f}"],
             ["pixel accuracy", f"{test['pixel_accuracy']:.3f}", f"{base['pixel_accuracy']:.3f}"]]
    target = "met" if test["mean_iou"] >= 0.8 else "NOT met"
    body = [
        f"Scenes (train / val / test): {args.train} / {args.val} / {args.test} at {args.size} px, 1-2 apples of radius "
        f"{args.radius[0]}-{args.radius[1]} x image size, generated in {gen_s:.0f} s. LRASPP + EfficientNet-Lite0 "
        f"({args.weights} weights), low branch index {args.low_index}, AdamW lr {args.lr}, cosine, batch "
        f"{args.batch_size}, {args.epochs} epochs, best epoch by validation mean IoU, {args.threads} torch thread(s). "
        f"Training: {train_s:.0f} s wall / {train_cpu_s:.0f} s CPU; best validation mean IoU {res.best_metric:.3f} "
        f"at epoch {res.best_epoch} of {len(res.history)}. Test through `fovea.load_predictor` on the saved "
        f"checkpoint at full resolution: {test_s / max(args.test, 1) * 1000:.0f} ms per scene.", "",
        "Baseline (same run): ground-truth apple silhouettes with every apple pixel called good skin, i.e. a "
        "perfect apple/background separator that finds no damage.", "",
        *table(["class", "IoU, model", "IoU, baseline"], rows), "",
        f"Issue 3 target (mean IoU >= 0.8): {target} in this run.",
    ]
    run.write("Segmentation on synthetic apple scenes", body)


if __name__ == "__main__":
    main()
