"""Label less, deploy small: `fovea label` on an unlabelled folder of generated apples, then CloFormer-XXS
students distilled from the teacher's labels, against the teacher on held-out truth.

1. Teacher: the zero-shot two-tower model (`trained_two_tower()`: max-pooled Lite0 at 224 px + MiniLM,
   prompts "good apple" / "damaged apple"); nobody labels anything.
2. `label_folder` over N unlabelled apples (128 px, seed 21) -> labels.csv (label + the teacher's class
   probabilities) + review.html.
3. `distill_student`: CloFormer-XXS from random init at --input-size px on labels.csv, one student per
   recipe of --students (RECIPES below): `hard` = the CSV's hard labels alone (alpha 0); `kd` = soft KL at
   T = 4 on the teacher's probabilities plus the hard labels (alpha 0.7); `kd_cons` = kd on two random
   augmentations of every image per step plus their symmetric-KL consistency (weight 1), crops keeping
   >= 70 % of the area. Every recipe: flips both ways, brightness/contrast +-15 %, random resized crops
   (>= 85 % of the area unless stated), AdamW lr 2e-3, cosine, batch 32, --epochs, through the engine;
   the best epoch by accuracy on 15 % of the labelled images (against the teacher's labels: no truth is
   used). `NAME@48` = that recipe at 48 px. The recipe named by --recipe (default kd_cons, what `fovea label
   distill` does by default) is judged against the targets; the other rows are its comparison. Students
   train on ONE torch thread (two OpenMP threads per process oversubscribe this loaded 2-core machine).
4. Teacher and students on M held-out apples (seed 22) against the generator's truth.
5. Latency per image, batch 1, one thread, every model in the same runtime, timed round-robin image by
   image (medians): (a) torch in-process (the classify predictors; the teacher as a zero-shot
   predictor), (b) onnxruntime on each model's ONNX export (opset 18, dynamo; the teacher exported as
   `ZeroShotGraph`: image tower + fixed class matrix), ORT graph optimisation ALL (batch norm folded,
   NCHWc convolutions), `intra_op_num_threads=1`. Both the thread CPU time (load-robust) and the wall
   time are reported; the speed-up is judged on CPU time. The teacher's time covers its resize to
   224 px, image tower and class matmul (class text embeddings computed once, as deployed). A second
   table splits onnxruntime's kernel time by operator type (`SessionOptions.enable_profiling`).
Students can be trained in separate processes first (`--train-only NAME`, the same recipe and folders)
and then reused by the run that writes the table (`--reuse-student`: a student folder is reused only
when its distill.json records the same recipe, size and epochs).
Quick version: `--quick` (120 unlabelled, 80 held-out, 6 epochs, 20 repeats).
"""

from __future__ import annotations

import argparse
import json
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


def latency_ms(predictors, images, repeats: int) -> list[tuple[float, float]]:
    """(median thread-CPU ms, median wall ms) per image of each predict function, batch 1, timed
    round-robin (image by image) so that load changes on a shared machine hit every model alike."""
    for im in images[:3]:
        for predict in predictors:
            predict(im)
    cpu: list[list[float]] = [[] for _ in predictors]
    wall: list[list[float]] = [[] for _ in predictors]
    for im in images[:repeats]:
        for k, predict in enumerate(predictors):
            t0, c0 = time.perf_counter(), time.thread_time()
            predict(im)
            cpu[k].append(time.thread_time() - c0)
            wall[k].append(time.perf_counter() - t0)
    return [(1000 * statistics.median(c), 1000 * statistics.median(w)) for c, w in zip(cpu, wall)]


def ort_runner(onnx_path: Path):
    """One-thread onnxruntime session (graph optimisation ALL) -> (run(image uint8 (H, W, 3)), node count
    after ORT's optimisation)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(onnx_path.with_suffix(".ort-optimised.onnx"))
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    nodes = len(onnx.load(opts.optimized_model_filepath).graph.node)
    return (lambda im: session.run(None, {name: np.ascontiguousarray(im[None])})), nodes


def export_teacher_onnx(vl_model, path: Path) -> Path:
    """The zero-shot teacher as `ZeroShotGraph` through the dynamo exporter (opset 18, dynamic batch/H/W),
    the same exporter settings fovea's classify export uses for the student."""
    import warnings

    from fovea.vl.zeroshot import ZeroShotGraph, build_zero_shot_classifier

    graph = ZeroShotGraph(vl_model, build_zero_shot_classifier(vl_model, CLASSES)).eval()
    example = torch.randint(0, 256, (2, 136, 144, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("height", min=16, max=8192),
            2: torch.export.Dim("width", min=16, max=8192)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=18, input_names=["images"],
                                    output_names=["probs"], dynamic_shapes={"images": dims}, verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path


def label_or_reuse(args, teacher, work: Path):
    """Write the folders and run `label_folder`, or reuse WORK's labels.csv -> (labels run, seconds, reused)."""
    from fovea.label.autolabel import label_folder, read_soft_labels

    reuse = args.reuse_labels and (work / "labels" / "labels.csv").is_file()
    if not reuse:
        write_apples(work / "unlabelled", args.unlabelled, 21)
        write_apples(work / "held_out", args.held_out, 22)
        t0 = time.perf_counter()
        return label_folder(teacher, work / "unlabelled", work / "labels"), time.perf_counter() - t0, False
    paths, probs, _, _ = read_soft_labels(work / "labels" / "labels.csv")
    order = np.argsort([p.name for p in paths])
    return type("Reused", (), {"csv": work / "labels" / "labels.csv", "probs": probs[order]}), 0.0, True


RECIPES = {  # name -> distill_student keywords (augment: Augment keywords)
    "hard": dict(alpha=0.0, consistency=0.0, augment=dict(vflip=True)),
    "kd": dict(alpha=0.7, consistency=0.0, augment=dict(vflip=True)),
    "kd_cons": dict(alpha=0.7, consistency=1.0, augment=dict(scale=(0.7, 1.0), vflip=True)),
}


def parse_student(spec: str, default_size: int) -> tuple[str, int]:
    """'kd' -> ('kd', default_size); 'kd@48' -> ('kd', 48)."""
    name, _, size = spec.partition("@")
    if name not in RECIPES:
        raise SystemExit(f"unknown student recipe {name!r} in {spec!r}. Fix: one of {sorted(RECIPES)} "
                         "(optionally @px).")
    return name, int(size) if size else default_size


def _matches(summary: dict, name: str, size: int, epochs: int) -> bool:
    from dataclasses import asdict

    from fovea.classify.data import Augment

    r = RECIPES[name]
    aug = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(Augment(**r["augment"])).items()}
    return (summary.get("alpha") == r["alpha"] and summary.get("consistency", 0.0) == r["consistency"]
            and summary.get("augment") == aug and summary.get("input_size") == [size, size]
            and summary.get("epochs_planned") == epochs)


def train_or_reuse(args, labels_csv: Path, student_dir: Path, name: str, size: int) -> tuple[dict, bool]:
    """distill_student with recipe `name` at `size` px, or the summary of an earlier run of the same recipe."""
    from fovea.classify.data import Augment
    from fovea.engine.train import TrainConfig
    from fovea.label.distill import distill_student

    if args.reuse_student and (student_dir / "distill.json").is_file():
        summary = json.loads((student_dir / "distill.json").read_text())
        if not _matches(summary, name, size, args.epochs):
            raise SystemExit(f"{student_dir}/distill.json records another recipe than {name} at {size} px, "
                             f"{args.epochs} epochs. Fix: drop --reuse-student or remove that folder.")
        return summary, True
    cfg = TrainConfig(lr=2e-3, batch_size=32, max_epochs=args.epochs, schedule="cosine", warmup_epochs=2,
                      weight_decay=0.05, seed=0, max_time_s=args.max_train_s)
    torch.set_num_threads(1)
    r = RECIPES[name]
    summary = distill_student(labels_csv, student_dir, student="cloformer_xxs", input_size=size, alpha=r["alpha"],
                              consistency=r["consistency"], config=cfg, augment=Augment(**r["augment"]))
    return summary, False


def ort_profile(onnx_path: Path, images, repeats: int) -> dict[str, tuple[int, float]]:
    """onnxruntime kernel time by operator type: {op: (nodes, share of the summed kernel time)} over
    `repeats` runs (batch 1, one thread, level ALL, the same session options as `ort_runner`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(onnx_path.with_suffix("")) + "_profile"
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for im in images[:repeats]:
        session.run(None, {name: np.ascontiguousarray(im[None])})
    events = json.loads(Path(session.end_profiling()).read_text())
    time_by, nodes_by = {}, {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            time_by[op] = time_by.get(op, 0) + e["dur"]
            nodes_by.setdefault(op, set()).add(e["name"])
    total = sum(time_by.values())
    return {op: (len(nodes_by[op]), t / total) for op, t in sorted(time_by.items(), key=lambda kv: -kv[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unlabelled", type=int, default=500)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--input-size", type=int, default=32, help="student side in px (a student spec may say @px)")
    ap.add_argument("--students", default="hard,kd,kd_cons,kd@48,kd_cons@48",
                    help=f"comma-separated recipes {sorted(RECIPES)}, each optionally @px")
    ap.add_argument("--recipe", default="kd_cons", help="the student spec judged against the targets")
    ap.add_argument("--train-only", default=None, metavar="SPEC",
                    help="train this one student (label folders must exist: run once without it) and exit")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--max-train-s", type=float, default=None,
                    help="wall-clock cap on each student's training (best epoch so far kept); for a loaded machine")
    ap.add_argument("--work", default="runs/bench_label")
    ap.add_argument("--reuse-student", action="store_true",
                    help="keep student folders from an earlier run of the same recipe (their distill.json)")
    ap.add_argument("--teacher-dir", default=None, help="two-tower folder of the teacher (default: trained_two_tower())")
    ap.add_argument("--reuse-labels", action="store_true",
                    help="keep WORK's generated folders and labels.csv from an earlier run (labelling time not re-measured)")
    add_doc_args(ap, "label", "120 unlabelled, 80 held-out, 6 epochs, 20 repeats")
    args = ap.parse_args()
    if args.quick:
        args.unlabelled, args.held_out, args.epochs, args.repeats = 120, 80, 6, 20
    specs = [parse_student(x.strip(), args.input_size) for x in args.students.split(",") if x.strip()]
    judged = parse_student(args.recipe, args.input_size)
    if judged not in specs:
        specs.append(judged)
    work = Path(args.work)

    def student_dir(name: str, size: int) -> Path:
        return work / f"student_{name}_{size}px"

    torch.set_num_threads(1)
    if args.train_only:
        name, size = parse_student(args.train_only, args.input_size)
        summary, _ = train_or_reuse(args, work / "labels" / "labels.csv", student_dir(name, size), name, size)
        print(json.dumps(summary))
        return
    run = Run(args, full_command=".venv/bin/python benchmarks/label.py")
    from fovea.classify.predictor import load_predictor
    from fovea.io import read_image
    from fovea.models.vl.two_tower import load_two_tower
    from fovea.vl.pretrained import trained_two_tower
    from fovea.vl.zeroshot import zero_shot_predictor

    vl_model = load_two_tower(args.teacher_dir) if args.teacher_dir else trained_two_tower()
    teacher = zero_shot_predictor(vl_model, CLASSES, class_names=["good", "damaged"])
    lab, t_label, reused_labels = label_or_reuse(args, teacher, work)
    acc_labels = float((lab.probs.argmax(1) == np.array(truth_of(args.unlabelled, 21))).mean())
    trained = {spec: train_or_reuse(args, lab.csv, student_dir(*spec), *spec) for spec in specs}

    held = [read_image(work / "held_out" / f"apple_{i:04d}.png") for i in range(args.held_out)]
    y = np.array(truth_of(args.held_out, 22))
    p_t = teacher.predict_probs(held)
    acc_t = float((p_t.argmax(1) == y).mean())
    students = {spec: load_predictor(student_dir(*spec)) for spec in specs}
    onnx_t = export_teacher_onnx(vl_model, work / "onnx" / "teacher.onnx")
    runners = [ort_runner(onnx_t)]
    for (name, size), st in students.items():
        runners.append(ort_runner(st.export(work / "onnx", formats=["onnx"], name=f"student_{name}_{size}px")["onnx"]))
    torch_fns = [lambda im: teacher.predict_probs([im])] + [
        (lambda s: (lambda im: s.predict_probs([im])))(st) for st in students.values()]
    times = latency_ms(torch_fns + [r for r, _ in runners], held, args.repeats)
    n = len(runners)
    (tc_torch, tw_torch), (tc_ort, tw_ort) = times[0], times[n]

    rows, verdict = [["teacher: zero-shot Lite0 + MiniLM (224 px)", f"{acc_t:.1%}", "", "", "",
                      f"{tc_torch:.1f} / {tw_torch:.1f}", f"{tc_ort:.2f} / {tw_ort:.2f}", runners[0][1],
                      "1.0x / 1.0x"]], ""
    what = {"hard": "hard labels only", "kd": "soft KL + hard labels",
            "kd_cons": "soft KL + hard, two views + consistency"}
    for k, ((name, size), st) in enumerate(students.items(), start=1):
        summary, reused = trained[(name, size)]
        p_s = st.predict_probs(held)
        acc_s = float((p_s.argmax(1) == y).mean())
        agree = float((p_s.argmax(1) == p_t.argmax(1)).mean())
        (sc_torch, sw_torch), (sc_ort, sw_ort) = times[k], times[n + k]
        mark = " **(judged)**" if (name, size) == judged else ""
        rows.append([f"student `{name}`: CloFormer-XXS {size} px, {what[name]}{mark}", f"{acc_s:.1%}",
                     f"{100 * (acc_s - acc_t):+.1f}", f"{agree:.1%}",
                     f"{'reused: ' if reused else ''}{summary['train_seconds']:.0f} s wall"
                     + (f" / {summary['train_cpu_seconds']:.0f} s CPU" if "train_cpu_seconds" in summary else "")
                     + f", best epoch "
                     f"{summary['best_epoch']} ({summary['best_val_acc']:.1%})",
                     f"{sc_torch:.1f} / {sw_torch:.1f}", f"{sc_ort:.2f} / {sw_ort:.2f}", runners[k][1],
                     f"{tc_torch / sc_torch:.1f}x / {tc_ort / sc_ort:.1f}x"])
        if (name, size) == judged:
            gap, speed = 100 * (acc_s - acc_t), tc_ort / sc_ort
            verdict = (f"Judged student (`{args.recipe}`) vs teacher: {gap:+.1f} points (target: within 2 points: "
                       f"{'MET' if gap >= -2 else 'NOT met'}); {speed:.1f}x faster per image in onnxruntime, "
                       f"{tc_torch / sc_torch:.1f}x in torch (CPU time, batch 1, one thread; target >= 5x in the "
                       f"same runtime: {'MET' if speed >= 5 else 'NOT met'} in onnxruntime, "
                       f"{'MET' if tc_torch / sc_torch >= 5 else 'NOT met'} in torch).")
    took = "(labels reused from an earlier run)" if reused_labels else f"in {t_label:.0f} s"
    body = [f"{args.unlabelled} unlabelled apples labelled by the teacher {took} (teacher labels agree with the "
            f"hidden truth on {acc_labels:.1%}). Students: {args.epochs} epochs planned each, on one thread "
            f"(cap {args.max_train_s} s). Training column: seconds of training (wall on this loaded machine; "
            f"CPU where recorded), the kept epoch (0-based, as `fit` reports it) and its validation accuracy "
            f"against the teacher's labels.", ""]
    body += table(["model", f"accuracy on {len(held)} held-out apples (truth)", "points vs teacher",
                   "agrees with the teacher",
                   "training", "torch in-process ms / image: CPU / wall", "onnxruntime ms / image: CPU / wall",
                   "ORT graph nodes", "speed-up (CPU): torch / ORT"], rows)
    body += ["", verdict, ""]
    prof_rows = []
    prof_t = ort_profile(onnx_t, held, min(args.repeats, 50))
    judged_onnx = work / "onnx" / f"student_{judged[0]}_{judged[1]}px.onnx"
    prof_s = ort_profile(judged_onnx, held, min(args.repeats, 50))
    for op in list(dict.fromkeys(list(prof_s) + list(prof_t))):
        ns, fs = prof_s.get(op, (0, 0.0))
        nt, ft = prof_t.get(op, (0, 0.0))
        prof_rows.append([op, ns, f"{fs:.1%}", nt, f"{ft:.1%}"])
    body += [f"onnxruntime kernel time by operator type (profiling on, {min(args.repeats, 50)} images, level ALL; "
             "Reorder* are the NCHWc layout conversions ORT inserts around operators without an NCHWc kernel):", ""]
    body += table(["operator", f"student ({judged[1]} px) nodes", "share of student kernel time", "teacher nodes",
                   "share of teacher kernel time"], prof_rows)
    run.write("Auto-labelling and distillation: fovea label -> CloFormer-XXS student", body)


if __name__ == "__main__":
    main()
