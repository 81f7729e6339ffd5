"""Label less, deploy small: `fovea label` on an unlabelled folder of generated apples, then a
CloFormer-XXS student distilled from the teacher's soft labels, against the teacher on held-out truth.

1. Teacher: the zero-shot two-tower model (`trained_two_tower()`: Lite0 at 224 px + MiniLM, prompts
   "good apple" / "damaged apple"); nobody labels anything.
2. `label_folder` over N unlabelled apples (128 px, seed 21) -> labels.csv + review.html.
3. `distill_student`: CloFormer-XXS from random init at 64 px on labels.csv (soft KL at T = 4 plus
   the CSV's hard labels, alpha 0.7), through the engine; the best epoch by accuracy on 15 % of the
   labelled images (against the teacher's labels: no truth is used).
4. Teacher and student on M held-out apples (seed 22) against the generator's truth; CPU latency
   per image (batch 1, one torch thread, median of R images after warm-up) of both in this run.
   The teacher's latency covers its image tower and the class matmul (class text embeddings are
   computed once, as a deployed zero-shot model would keep them). Timed round-robin, image by image.
Quick version: `--quick` (120 unlabelled, 80 held-out, 8 epochs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402

CLASSES = ("good apple", "damaged apple")


def write_apples(folder: Path, n: int, seed: int) -> list[int]:
    """n apple crops (half damaged, shuffled by seed) as PNGs in folder; returns the hidden truth."""
    from fovea.io import write_image
    from fovea.synth.apples import render_apple

    folder.mkdir(parents=True, exist_ok=True)
    truth = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        img, _, meta = render_apple(rng, 128, damaged=bool(rng.random() < 0.5))
        write_image(folder / f"apple_{i:04d}.png", img)
        truth.append(int(meta["damaged"]))
    return truth


def truth_of(n: int, seed: int) -> list[int]:
    """The hidden truth `write_apples` records, without rendering (same draws)."""
    return [int(np.random.default_rng([seed, i]).random() < 0.5) for i in range(n)]


def latency_ms(predictors, images, repeats: int) -> list[float]:
    """Median ms per image of each predict function, batch 1, timed round-robin (image by image) so that
    load changes on a shared machine hit every model alike."""
    for im in images[:3]:
        for predict in predictors:
            predict([im])
    times: list[list[float]] = [[] for _ in predictors]
    for im in images[:repeats]:
        for k, predict in enumerate(predictors):
            t0 = time.perf_counter()
            predict([im])
            times[k].append(time.perf_counter() - t0)
    return [1000 * statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unlabelled", type=int, default=500)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--max-train-s", type=float, default=None,
                    help="wall-clock cap on the student's training (best epoch so far kept); for a loaded machine")
    ap.add_argument("--work", default="runs/bench_label")
    ap.add_argument("--reuse-student", action="store_true",
                    help="with --reuse-labels: keep WORK/student from an earlier run (its distill.json summary)")
    ap.add_argument("--teacher-dir", default=None, help="two-tower folder of the teacher (default: trained_two_tower())")
    ap.add_argument("--reuse-labels", action="store_true",
                    help="keep WORK's generated folders and labels.csv from an earlier run (labelling time not re-measured)")
    add_doc_args(ap, "label", "120 unlabelled, 80 held-out, 8 epochs")
    args = ap.parse_args()
    if args.quick:
        args.unlabelled, args.held_out, args.epochs, args.repeats = 120, 80, 8, 20
    run = Run(args, full_command=".venv/bin/python benchmarks/label.py")
    from fovea.classify.predictor import load_predictor
    from fovea.engine.train import TrainConfig
    from fovea.io import read_image
    from fovea.label.autolabel import label_folder
    from fovea.label.distill import distill_student
    from fovea.vl.pretrained import trained_two_tower
    from fovea.vl.zeroshot import zero_shot_predictor

    work = Path(args.work)
    torch.set_num_threads(2)
    from fovea.models.vl.two_tower import load_two_tower

    vl_model = load_two_tower(args.teacher_dir) if args.teacher_dir else trained_two_tower()
    teacher = zero_shot_predictor(vl_model, CLASSES, class_names=["good", "damaged"])
    reuse = args.reuse_labels and (work / "labels" / "labels.csv").is_file()
    truth_u = write_apples(work / "unlabelled", args.unlabelled, 21) if not reuse else truth_of(args.unlabelled, 21)
    truth_h = write_apples(work / "held_out", args.held_out, 22) if not reuse else truth_of(args.held_out, 22)
    t0 = time.perf_counter()
    if reuse:
        from fovea.label.autolabel import read_soft_labels

        paths, probs, _, _ = read_soft_labels(work / "labels" / "labels.csv")
        order = np.argsort([p.name for p in paths])
        lab = type("Reused", (), {"csv": work / "labels" / "labels.csv", "probs": probs[order]})
    else:
        lab = label_folder(teacher, work / "unlabelled", work / "labels")
    t_label = time.perf_counter() - t0
    acc_labels = float((lab.probs.argmax(1) == np.array(truth_u)).mean())
    cfg = TrainConfig(lr=2e-3, batch_size=32, max_epochs=args.epochs, schedule="cosine", warmup_epochs=1,
                      weight_decay=0.05, seed=0, max_time_s=args.max_train_s)
    if reuse and args.reuse_student and (work / "student" / "distill.json").is_file():
        import json

        summary = json.loads((work / "student" / "distill.json").read_text())
    else:
        summary = distill_student(lab.csv, work / "student", student="cloformer_xxs", input_size=args.input_size,
                                  config=cfg)
    student = load_predictor(work / "student")
    held = [read_image(work / "held_out" / f"apple_{i:04d}.png") for i in range(args.held_out)]
    y = np.array(truth_h)
    acc_t = float((teacher.predict_probs(held).argmax(1) == y).mean())
    acc_s = float((student.predict_probs(held).argmax(1) == y).mean())
    torch.set_num_threads(1)
    ms_t, ms_s = latency_ms([teacher.predict_probs, student.predict_probs], held, args.repeats)
    rows = [["teacher: zero-shot Lite0 + MiniLM (224 px)", f"{acc_t:.1%}", f"{ms_t:.1f}", "1.0x"],
            [f"student: CloFormer-XXS ({args.input_size} px, from scratch on the teacher's labels)", f"{acc_s:.1%}",
             f"{ms_s:.1f}", f"{ms_t / ms_s:.1f}x"]]
    took = "(labels reused from an earlier run)" if reuse else f"in {t_label:.0f} s"
    body = [f"{args.unlabelled} unlabelled apples labelled by the teacher {took} "
            f"(teacher labels agree with the hidden truth on {acc_labels:.1%}); student trained "
            f"{summary['train_seconds']:.0f} s (cap {args.max_train_s} s, {args.epochs} epochs planned), best epoch "
            f"{summary['best_epoch']} "
            f"(val accuracy against the teacher's labels {summary['best_val_acc']:.1%}).", ""]
    body += table(["model", f"accuracy on {len(held)} held-out apples (truth)", "CPU ms / image (1 thread, batch 1)",
                   "speed-up"], rows)
    gap = 100 * (acc_t - acc_s)
    body += ["", f"Student vs teacher: {-gap:+.1f} points; {ms_t / ms_s:.1f}x faster per image "
             f"(targets: within 2 points, >= 5x)."]
    run.write("Auto-labelling and distillation: fovea label -> CloFormer-XXS student", body)


if __name__ == "__main__":
    main()
