"""Issue 3 done-when: EfficientNet-Lite0 fine-tuned from offline ImageNet weights on synthetic apples
reaches >= 95 % held-out accuracy within 5 minutes of CPU training; the same run from random init
is reported beside it.

Data: `fovea.synth.apples.generate_apple_crops` (good / damaged, deterministic by seed), its
train split for training, val for best-epoch selection, test (never seen) for the number.
Both runs: same data, seed, optimizer (AdamW, cosine, 1 warm-up epoch), batch, input size and a
cap of --max-cpu-s CPU seconds of training (1 thread: CPU seconds ~ seconds on an idle core; wall
time on a shared machine is longer and is reported beside it). Accuracy is measured through `load_predictor` on the
saved checkpoint (the same path as the CLI and exports).

    .venv/bin/python benchmarks/classify_apples.py [--n-per-class 300] [--max-cpu-s 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from fovea.classify.data import Augment
from fovea.classify.train import evaluate_classifier, train_classifier
from fovea.engine.train import TrainConfig
from fovea.synth.apples import generate_apple_crops


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(data: Path, out: Path, weights: str, args) -> dict:
    cfg = TrainConfig(optimizer="adamw", lr=args.lr, weight_decay=0.01, batch_size=args.batch_size,
                      max_epochs=args.epochs, schedule="cosine", warmup_epochs=1, seed=args.seed,
                      max_cpu_time_s=args.max_cpu_s, monitor="val_acc", mode="max")
    c0, t0 = cpu_seconds(), time.perf_counter()
    augment = Augment(scale=(0.9, 1.0), hflip=True, vflip=True)  # apples have no up/down
    res = train_classifier(data / "train", out, val_source=data / "val", weights=weights,
                           input_size=args.input_size, config=cfg, augment=augment)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    test = evaluate_classifier(out, data / "test", out / "test")
    return {"weights": weights, "test_accuracy": test["accuracy"], "test_n": test["n"],
            "val_accuracy": res.val_metrics["accuracy"], "best_epoch": res.train.best_epoch,
            "epochs_run": len(res.train.history), "train_wall_s": wall, "train_cpu_s": cpu,
            "per_class": test["per_class"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-per-class", type=int, default=300)
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--max-cpu-s", type=float, default=300.0,
                    help="training budget in CPU seconds of this process (the machine is shared; wall time is "
                         "reported too)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--only", choices=["default", "random"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="fovea_cls_apples_"))
    data = root / "data"
    if not (data / "test").is_dir():
        generate_apple_crops(data, n_per_class=args.n_per_class, size=args.crop_size, seed=args.seed)
    rows = []
    for weights in ([args.only] if args.only else ["default", "random"]):
        rows.append(run(data, root / f"run_{weights}", weights, args))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_class"}), flush=True)
    print(f"\nsynthetic apples, {args.n_per_class}/class ({args.crop_size} px crops), input {args.input_size} px, "
          f"cap {args.max_cpu_s:.0f} CPU s, {args.threads} thread(s), {os.cpu_count()} CPUs")
    print("| init | test acc | n test | val acc | best epoch | epochs run | train wall s | train CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "ImageNet (offline, efficientnet_lite0)" if r["weights"] == "default" else "random init"
        print(f"| {name} | {r['test_accuracy']:.3f} | {r['test_n']} | {r['val_accuracy']:.3f} | {r['best_epoch']} | "
              f"{r['epochs_run']} | {r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} |")


if __name__ == "__main__":
    main()
