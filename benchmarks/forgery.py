"""Forgery localisation: a reduced SparseViT beside a plain UNet of the same size, same data, same budget.

Generates splice / copy-move / inpaint forgeries and authentic images (`fovea.synth.forgery`, JPEG
re-saved at quality 70-95): train and validation from `TRAIN_SOURCES` (seeds 100 / 200), test from
`HELD_OUT_SOURCES` (seed 300: pictures never seen in training). Each model trains from random init
with `train_forgery` (AdamW, weight decay 0.05 as the paper, cosine schedule, BCE on the logits,
kept epoch by validation loss, decision threshold fitted on the validation images) for the same
epochs on the same images, then is tested through the Predictor at full resolution: pixel F1 at
the fitted threshold (the answer's 0.5) and at the best single threshold (an oracle chosen on the
test set), pixel AUC (per image, averaged) per forgery kind and overall; authentic images'
false-alarm pixels and the image-level AUC (max probability). Also parameters, GMACs (FlopCounter
/ 2), 1-thread CPU latency (median) and training seconds, with the load. Writes
docs/benchmarks/forgery.md after every model (so a long run leaves the models it finished).

    .venv/bin/python benchmarks/forgery.py            # 320 / 32 / 100 images at 128 px, 8 epochs
    .venv/bin/python benchmarks/forgery.py --quick    # 96 / 16 / 40 images at 128 px, 3 epochs
    .venv/bin/python benchmarks/forgery.py --size 256 # the input where stage 3's S = 8 groups hold 2 x 2 tokens
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _doc import Run, add_doc_args, load_average, median_wall_cpu, table
from torch.utils.flop_counter import FlopCounterMode

from fovea.engine.train import TrainConfig
from fovea.forgery.data import SynthForgerySet
from fovea.forgery.model import SPARSEVIT_SMALL, UNET_SMALL, ForgeryModelConfig, build_network
from fovea.forgery.predictor import ForgeryPredictor
from fovea.forgery.train import evaluate_forgery, train_forgery
from fovea.synth.forgery import HELD_OUT_SOURCES, TRAIN_SOURCES, ForgeryConfig, generate_forgeries

MODELS = {  # name -> (arch, net settings, what it is)
    "sparsevit": ("sparsevit", SPARSEVIT_SMALL, "SparseViT-small: sparse attention S=8,8,4,4,2,2,1,1 / 2,1, LFF"),
    "unet": ("unet", UNET_SMALL, "plain UNet baseline (stem /4, widths 32-64-128-192-256)"),
    "sparsevit_dense": ("sparsevit", {**SPARSEVIT_SMALL, "stage3_sparse": [1] * 8, "stage4_sparse": [1, 1]},
                        "same SparseViT-small with dense (global) attention in every block"),
}
KIND_ORDER = ("splice", "copy_move", "inpaint")


def size_of(arch: str, net: dict, size: int) -> tuple[float, float]:
    """(parameters in millions, GMACs at size x size) of a random-init network."""
    model = build_network(ForgeryModelConfig(arch, dict(net), (size, size))).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()) / 1e6, counter.get_total_flops() / 2e9


def fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def body(args, results: dict, data_line: str) -> list[str]:
    lines = [data_line, "", "Models (random init, same images, epochs, optimizer and schedule):", ""]
    lines += table(["model", "what", "params (M)", f"GMACs @{args.size}", "train wall s", "train CPU s",
                    f"kept epoch (1-{args.epochs})", "val loss", "fitted threshold", "CPU ms / image (1 thread)",
                    "load"],
                   [[name, MODELS[name][2], f"{r['params_m']:.2f}", f"{r['gmacs']:.3f}", f"{r['fit_s']:.0f}",
                     f"{r['fit_cpu_s']:.0f}", r["best_epoch"] + 1, fmt(r["val_loss"]), f"{r['threshold']:.2f}",
                     f"{r['latency_ms']:.1f}", f"{r['load']:.1f}"] for name, r in results.items()])
    lines += ["", "Held-out test (pictures never seen in training): pixel F1 at the fitted threshold / F1 at the "
              "best single test threshold (oracle, in units of the answer: 0.5 = fitted) / pixel AUC (per image, "
              "mean); n = images:", ""]
    header = ["model"] + [f"{k} (n={next(iter(results.values()))['test']['by_kind'].get(k, {}).get('n', 0)})"
                          for k in KIND_ORDER] + ["all manipulated", "pooled pixel AUC", "authentic false-alarm px",
                                                  "image AUC"]
    rows = []
    for name, r in results.items():
        m = r["test"]
        cells = [name]
        for k in (*KIND_ORDER, None):
            g = m["overall"] if k is None else m["by_kind"].get(k)
            cells.append("-" if g is None else f"{fmt(g['f1'])} / {fmt(g['f1_best'])} @{g['best_threshold']:.2f} / "
                                               f"{fmt(g['auc'])}")
        cells += [fmt(m["overall"]["pixel_auc"]), fmt(m.get("authentic", {}).get("false_alarm_px", float("nan")), 4),
                  fmt(m.get("image_auc", float("nan")))]
        rows.append(cells)
    lines += table(header, rows)
    lines += ["", "Seen pictures, new seeds (the validation set the threshold was fitted on, through the "
              "Predictor): over all manipulated images:", ""]
    lines += table(["model", "F1 at fitted threshold", "F1 best", "pixel AUC"],
                   [[name, fmt(r["val"]["overall"]["f1"]), fmt(r["val"]["overall"]["f1_best"]),
                     fmt(r["val"]["overall"]["auc"])] for name, r in results.items()])
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--val", type=int, default=32)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--models", default="sparsevit,unet,sparsevit_dense")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-cpu-s", type=float, default=None, help="CPU-second cap per model's training")
    ap.add_argument("--pos-weight", type=float, default=3.0, help="BCE weight of manipulated pixels (all models)")
    ap.add_argument("--tag", default=None, help="name of this run's block in the doc (several blocks per doc)")
    ap.add_argument("--out", default="runs/bench_forgery")
    add_doc_args(ap, "forgery", "96 / 16 / 40 images, 3 epochs")
    args = ap.parse_args()
    run = Run(args, full_command=".venv/bin/python benchmarks/forgery.py")
    if args.quick:
        args.train, args.val, args.test, args.epochs = 96, 16, 40, 3
        args.out = str(Path(args.out) / "quick")
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    post = dict(size=size, jpeg_quality=(70, 95))
    t0 = time.perf_counter()
    train = SynthForgerySet(generate_forgeries(args.train, 100, ForgeryConfig(**post)), size, augment=True)
    val = SynthForgerySet(generate_forgeries(args.val, 200, ForgeryConfig(**post)), size, name="val")
    test = SynthForgerySet(generate_forgeries(args.test, 300, ForgeryConfig(sources=HELD_OUT_SOURCES, **post)),
                           size, name="test")
    data_line = (f"Data ({time.perf_counter() - t0:.0f} s to generate): {args.train} train + {args.val} val "
                 f"images from {len(TRAIN_SOURCES)} pictures ({', '.join(TRAIN_SOURCES)}), {args.test} test "
                 f"images from {len(HELD_OUT_SOURCES)} others ({', '.join(HELD_OUT_SOURCES)}); {args.size} px, "
                 "kinds equally likely (authentic, splice, copy-move, inpaint), JPEG re-saved at quality 70-95. "
                 f"Training: AdamW lr {args.lr}, weight decay 0.05, cosine, 1 warm-up epoch, batch "
                 f"{args.batch_size}, {args.epochs} epochs, BCE with logits (manipulated pixels weighted {args.pos_weight}), "
                 "flips; kept epoch = lowest validation loss; decision threshold = the one maximising mean "
                 "per-image F1 on the validation images.")
    results: dict = {}
    out = Path(args.out)
    for name in args.models.split(","):
        arch, net, _ = MODELS[name]
        params_m, gmacs = size_of(arch, net, args.size)
        cfg = TrainConfig(optimizer="adamw", lr=args.lr, weight_decay=0.05, batch_size=args.batch_size,
                          max_epochs=args.epochs, schedule="cosine", warmup_epochs=1, seed=0,
                          max_cpu_time_s=args.max_cpu_s, out_dir=str(out / name))
        load0 = load_average()
        result = train_forgery(train, val, ForgeryModelConfig(arch, dict(net), size), cfg, pos_weight=args.pos_weight)
        predictor = ForgeryPredictor.load(result.checkpoint)
        image = test.load(0)[0]
        _, cpu = median_wall_cpu(lambda: predictor.predict_one(image), 7)
        results[name] = {
            "params_m": params_m, "gmacs": gmacs, "fit_s": result.timings_s["fit"],
            "fit_cpu_s": result.timings_s["fit_cpu"], "best_epoch": result.best_epoch,
            "val_loss": result.best_metric, "threshold": predictor.recipe.info["threshold"], "latency_ms": cpu * 1000, "load": (load0 + load_average()) / 2,
            "test": evaluate_forgery(predictor, test).metrics, "val": evaluate_forgery(predictor, val).metrics}
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
        run.write("Forgery localisation", body(args, results, data_line), tag=args.tag)


if __name__ == "__main__":
    main()
