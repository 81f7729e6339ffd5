"""Video understanding benchmarks -> docs/benchmarks/video.md (one block per part):

- latency: forward CPU time per clip of fovea's I3D-R50 8x8, R(2+1)D-R50 16x4 and SlowFast-R50
  8x8 against PyTorchVideo's hub models of the same architecture (pretrained=False, same input,
  same run; equal params and MACs, counted by torch.utils.flop_counter in each process, show the
  architectures are the same). PyTorchVideo runs in its own venv (default
  ~/.cache/fovea-bench/venv-pytorchvideo, created with torch 2.14.1 + pytorchvideo 0.1.5 when
  missing); it never enters fovea's dependencies. Children alternate fovea / PyTorchVideo.
- online: CPU cost per new frame of the online TSM (one 2D forward, cached shifts) vs offline
  TSM-8 (an 8-frame clip forward, what a sliding-window recognizer pays for each new frame).
- events: the conveyor-event clip set (fovea.synth.conveyor_events, MP4 via PyAV), TSM on the
  offline ImageNet EfficientNet-Lite0 trained with the shared engine on CPU, held-out clip accuracy;
  the trained model as an online line stage on a ConveyorSource (jam flag latency, false stops over
  a 10-minute normal run); temporal localization mAP on long generated videos.
One torch thread; CPU times are process CPU seconds (robust to the shared machine's load, which is
printed). Quick version: `--quick` (fewer repeats, smaller sets, a 2-minute normal run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import ROOT, Run, add_doc_args, load_average, table  # noqa: E402

PTV_VENV = Path(os.environ.get("FOVEA_PTV_VENV", "~/.cache/fovea-bench/venv-pytorchvideo")).expanduser()
PTV_PINS = (("torch==2.14.1", "torchvision==0.29.1"), ("pytorchvideo==0.1.5",))
CHILD = ROOT / "benchmarks" / "_video_latency_child.py"
RUNS = ROOT / "runs" / "video"


# ----------------------------------------------------------------------------- latency vs PyTorchVideo
def ptv_python() -> tuple[Path | None, str]:
    """The PyTorchVideo venv's python (created when missing), or None and the reason it is unusable."""
    py = PTV_VENV / "bin" / "python"
    probe = "import pytorchvideo.models.hub as h; h.i3d_r50; h.r2plus1d_r50; h.slowfast_r50"
    try:
        if not py.is_file():
            print(f"creating {PTV_VENV} (torch 2.14.1 + pytorchvideo 0.1.5; minutes, once) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(PTV_VENV)], check=True)
            for pins in PTV_PINS:
                subprocess.run([str(py), "-m", "pip", "install", "-q", *pins], check=True)
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if r.returncode:
            return None, (r.stderr.strip().splitlines() or ["import failed"])[-1]
        return py, ""
    except Exception as exc:  # venv or pip failure: reported in the table, never faked
        return None, f"{type(exc).__name__}: {exc}"


def run_child(python: Path, lib: str, repeats: int, size: int) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    r = subprocess.run([str(python), str(CHILD), "--lib", lib, "--repeats", str(repeats), "--size", str(size)],
                       capture_output=True, text=True, env=env, cwd=str(ROOT if lib == "fovea" else "/tmp"))
    if r.returncode:
        raise RuntimeError(f"{lib} child failed: {r.stderr.strip()[-800:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def part_latency(run: Run, args) -> None:
    rounds, repeats = (1, 2) if args.quick else (2, 3)
    py, why = ptv_python()
    res: dict[tuple[str, str], list[dict]] = {}
    for _ in range(rounds):
        for lib, python in (("fovea", Path(sys.executable)), ("ptv", py)):
            if python is None:
                continue
            for row in run_child(python, lib, repeats, 224):
                res.setdefault((lib, row["model"]), []).append(row)
    rows = []
    for name in ("I3D-R50 8x8", "R(2+1)D-R50 16x4", "SlowFast-R50 8x8"):
        f = res[("fovea", name)]
        f_cpu = statistics.median(c for r in f for c in r["cpu_s"])
        if py is None:
            rows.append([name, f"{f[0]['params'] / 1e6:.2f} M / -", f"{f[0]['gmacs']:.2f} / -", f"{f_cpu:.2f}",
                         "-", "-", f"NOT met: pytorchvideo could not be made to import ({why})"])
            continue
        p = res[("ptv", name)]
        p_cpu = statistics.median(c for r in p for c in r["cpu_s"])
        same = f[0]["params"] == p[0]["params"] and abs(f[0]["gmacs"] - p[0]["gmacs"]) < 0.01
        verdict = "MET" if p_cpu >= f_cpu else "NOT met"
        rows.append([name, f"{f[0]['params'] / 1e6:.2f} M / {p[0]['params'] / 1e6:.2f} M",
                     f"{f[0]['gmacs']:.2f} / {p[0]['gmacs']:.2f}" + ("" if same else " (differ!)"),
                     f"{f_cpu:.2f}", f"{p_cpu:.2f}", f"{p_cpu / f_cpu:.2f}x", verdict])
    body = ["Forward CPU seconds per clip (batch 1, 224^2, one thread, `inference_mode`, random init), median "
            f"over {rounds} alternating round(s) x {repeats} repeats per library process.", ""]
    body += table(["model", "params fovea / PTV", "GMACs fovea / PTV", "fovea CPU s", "PyTorchVideo CPU s",
                   "PTV / fovea", "at least as fast"], rows)
    body += ["", f"PyTorchVideo 0.1.5 hub builders `i3d_r50`, `r2plus1d_r50`, `slowfast_r50` in `{PTV_VENV}`; "
             "fovea `i3d_r50_8x8`, `r2plus1d_r50`, `slowfast_r50_8x8`. Inputs: 8, 16 and 32 frames "
             "(SlowFast: PyTorchVideo gets [every 4th frame, all 32], fovea samples the same slow frames itself)."]
    run.write("Video understanding", body, tag="latency")


# ----------------------------------------------------------------------------- online vs offline TSM
def part_online(run: Run, args) -> None:
    import torch

    import fovea.models.video as V
    from fovea.models.video.tsm import OnlineTSM

    torch.set_num_threads(1)
    reps = 5 if args.quick else 15
    rows = []
    for name, hw, kw in (("tsm_lite0", (96, 160), {"weights": "random"}), ("tsm_r50", (224, 224), {})):
        model = V.create_model(name, num_classes=5, num_segments=8, shift_mode="causal", **kw).eval()
        online = OnlineTSM(model)
        clip = torch.randn(1, 3, 8, *hw)
        off, on = [], []
        with torch.inference_mode():
            model(clip)
            for k in range(reps):
                c0 = time.process_time()
                model(clip)
                off.append(time.process_time() - c0)
                c0 = time.process_time()
                online.step(clip[:, :, k % 8])
                online.logits(8)
                on.append(time.process_time() - c0)
        m_off, m_on = statistics.median(off), statistics.median(on)
        rows.append([name, f"{hw[0]}x{hw[1]}", f"{m_off * 1e3:.1f}", f"{m_on * 1e3:.1f}", f"1/{m_off / m_on:.1f}",
                     "MET" if m_on <= m_off / 6 else "NOT met"])
    body = [f"CPU ms per new frame, median of {reps}: offline TSM-8 recomputes the 8-frame clip; online TSM runs "
            "one 2D forward with the cached shifted channels (+ the classifier on the mean of 8 frame features).", ""]
    body += table(["model", "frame", "offline TSM-8 ms", "online ms", "online / offline", "<= 1/6"], rows)
    run.write("Video understanding", body, tag="online")


# ----------------------------------------------------------------------------- conveyor events
def _set_size(labels: Path) -> int:
    return len(labels.read_text().splitlines()) - 1 if labels.is_file() else -1


def train_event_model(args, out: Path, sets: Path):
    import torch

    import fovea.models.video as V
    from fovea.engine.train import TrainConfig, fit
    from fovea.synth.conveyor_events import EVENT_CLASSES
    from fovea.video.conveyor_set import write_event_clip_set
    from fovea.video.dataset import VideoClipDataset, items_from_csv
    from fovea.video.train import VideoClassifyTask, evaluate

    names = list(EVENT_CLASSES)
    t0 = time.perf_counter()
    tr, te = sets / "train" / "labels.csv", sets / "test" / "labels.csv"
    reused = args.reuse_set and _set_size(tr) == args.n_train * len(names) and _set_size(te) == args.n_test * len(names)
    if not reused:
        tr = write_event_clip_set(sets / "train", args.n_train, seed=1)
        te = write_event_clip_set(sets / "test", args.n_test, seed=2)
    t_gen = -1.0 if reused else time.perf_counter() - t0
    itr, _ = items_from_csv(tr, names)
    ite, _ = items_from_csv(te, names)
    model = V.create_model("tsm_lite0", num_classes=len(names), num_segments=8, shift_mode="causal")
    net = model.backbone.net
    for mod in [net.conv_stem, net.bn1] + [net.blocks[i] for i in range(args.freeze)]:
        for p in mod.parameters():
            p.requires_grad_(False)
    task = VideoClassifyTask(model, names)
    cfg = TrainConfig(lr=args.lr, batch_size=8, max_epochs=args.epochs, schedule="cosine", weight_decay=1e-4,
                      out_dir=str(out / "fit"), seed=0)
    c0, t0 = time.process_time(), time.perf_counter()
    fit(task, VideoClipDataset(itr, 8, train=True, short_side=args.short_side), None, cfg)
    fit_cpu, fit_wall = time.process_time() - c0, time.perf_counter() - t0
    test_set = VideoClipDataset(ite, 8, train=False, short_side=args.short_side)
    loader = torch.utils.data.DataLoader(test_set, batch_size=8)
    metrics = evaluate(task.model, loader, len(names))
    from safetensors.torch import save_file

    save_file(task.model.state_dict(), str(out / "tsm_lite0_events.safetensors"))
    return task.model.eval(), names, metrics, {"gen_s": t_gen, "fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall}


def line_run(model, names, duration_s: float, jams: list, seed: int, stride: int, window: int, threshold: float,
             min_frames: int, short_side: int):
    """An online stage on a ConveyorSource with a SimClock; returns the raised records and the conveyor."""
    from fovea.line.clock import SimClock
    from fovea.line.events import EventLog
    from fovea.line.sources import ConveyorSource
    from fovea.synth.conveyor import ConveyorConfig
    from fovea.synth.conveyor_events import EventConveyor, EventSchedule
    from fovea.video.online import EventDebouncer, OnlineEventRecognizer, VideoEventStage

    n_obj = int(duration_s * 400 / 120) + 10
    conv = EventConveyor(ConveyorConfig(n_objects=n_obj, lead_in_mm=0.0, gap_mm=(40.0, 120.0), p_box=0.15,
                                        fps=10.0, seed=seed), EventSchedule(jams=jams))
    source = ConveyorSource(conv, clock=SimClock(), n_frames=int(duration_s * 10))
    rec = OnlineEventRecognizer(model, names, window=window, frame_stride=stride, short_side=short_side)
    stops = []
    stage = VideoEventStage(rec, EventDebouncer(names, ("jam",), threshold, min_frames, clear_frames=4),
                            EventLog(), on_stop=lambda k, r: stops.append(r), stop_on=("jam",))
    stage.run(source)
    return stops, stage


def part_events(run: Run, args) -> None:
    import numpy as np
    import torch

    from fovea.synth.conveyor_events import make_event_video
    from fovea.video.localize import frame_probabilities, localize
    from fovea.video.metrics import Segment, localization_map

    torch.set_num_threads(1)
    sets = RUNS / ("events_quick" if args.quick else "events")
    out = RUNS / (args.run_name + ("_quick" if args.quick else ""))
    model, names, m, times = train_event_model(args, out, sets)
    body = [f"Conveyor-event clips: {args.n_train} training and {args.n_test} held-out clips per class "
            f"({', '.join(names)}), 16 frames at 10 fps, 96x160 (resized to {args.short_side} px short side), "
            "H.264 MP4 via PyAV; "
            "held-out clips come from other seeds (new belts, items and event times). "
            + ("Clip sets reused from disk (--reuse-set)." if times["gen_s"] < 0 else
               f"Generation {times['gen_s']:.0f} s."),
            "", f"TSM (causal shift) on ImageNet EfficientNet-Lite0, stem + first {args.freeze} stages frozen, "
            f"8 TSN segments, AdamW {args.lr:g} cosine, batch 8, {args.epochs} epochs on the shared engine: {times['fit_cpu_s']:.0f} CPU s "
            f"({times['fit_wall_s']:.0f} s wall).", ""]
    body += table(["held-out top-1", "mean class acc", "top-5", "clips", ">= 90 %"],
                  [[f"{m['top1'] * 100:.1f} %", f"{m['mean_class_acc'] * 100:.1f} %", f"{m['top5'] * 100:.1f} %",
                    m["n"], "MET" if m["top1"] >= 0.9 else "NOT met"]])
    body += ["", "Confusion (rows = truth, columns = predicted, order " + ", ".join(names) + "):", ""]
    body += table(["truth"] + names, [[n] + row for n, row in zip(names, m["confusion"])])
    # ---- the line: jams flagged within 1 s, no false stop in a normal run
    stride, window, threshold, min_frames = 2, 4, 0.6, 2
    n_jams = 4 if args.quick else 6
    jams = [(10.0 + 20.0 * k, 10.0 + 20.0 * k + 4.0, 260.0) for k in range(n_jams)]
    c0 = time.process_time()
    stops, stage = line_run(model, names, 10.0 + 20.0 * n_jams, jams, seed=7, stride=stride, window=window,
                            threshold=threshold, min_frames=min_frames, short_side=args.short_side)
    lat, false_in_jam_run = [], 0
    for r in stops:
        t = r["t_exposure"]
        hit = [j for j in jams if j[0] <= t <= j[1] + 1.0]
        if hit:
            lat.append((hit[0][0], t - hit[0][0]))
        else:
            false_in_jam_run += 1
    first = {}
    for j0, dt in lat:
        first.setdefault(j0, dt)
    flagged = [first.get(j[0]) for j in jams]
    within = sum(1 for d in flagged if d is not None and d <= 1.0)
    normal_s = 120.0 if args.quick else 600.0
    nstops, nstage = line_run(model, names, normal_s, [], seed=8, stride=stride, window=window,
                              threshold=threshold, min_frames=min_frames, short_side=args.short_side)
    line_cpu = time.process_time() - c0
    body += ["", "Line stage (`VideoEventStage` on a `ConveyorSource`, simulated clock, 10 fps, "
             f"every {stride}nd frame "
             f"processed, mean of the last {window} frame features, stop after {min_frames} processed frames with "
             f"P(jam) >= {threshold}): {line_cpu:.0f} CPU s for both runs; online inference median "
             f"{statistics.median(nstage.infer_s) * 1e3:.1f} ms per processed frame.", ""]
    body += table(["run", "jams", "flagged within 1 s", "latency s (each jam)", "false stops"],
                  [[f"{10 + 20 * n_jams:.0f} s with jams", n_jams, f"{within}/{n_jams}",
                    ", ".join("-" if d is None else f"{d:.1f}" for d in flagged), false_in_jam_run],
                   [f"{normal_s / 60:.0f}-minute normal run", 0, "-", "-", len(nstops)]])
    ok_line = within == n_jams and false_in_jam_run == 0 and len(nstops) == 0
    body += ["", f"Each jam flagged within 1 s and no false stop: {'MET' if ok_line else 'NOT met'}."]
    # ---- temporal localization on long generated videos
    n_videos, dur = (2, 60.0) if args.quick else (3, 60.0)
    dets, truths = [], []
    kinds = ["normal", "jam", "fall", "rollback"]
    for v in range(n_videos):
        frames, events, conv = make_event_video(dur, seed=100 + v)
        probs = frame_probabilities(model, frames, window=16, num_segments=8, stride=4, short_side=args.short_side)
        probs4 = probs[:, [names.index(k) for k in kinds]]
        offset = v * (dur + 100)
        for s in localize(probs4 / probs4.sum(1, keepdims=True), fps=10.0, threshold=0.5, min_len_s=0.3):
            dets.append(Segment(s.start_s + offset, s.end_s + offset, s.label, s.score))
        truths += [Segment(e.t_start_s + offset, e.t_end_s + offset, kinds.index(e.kind)) for e in events]
    lm = localization_map(dets, truths)
    body += ["", f"Temporal localization: {n_videos} generated videos of {dur:.0f} s (jams, falls, roll-backs; "
             f"{len(truths)} events), per-frame probabilities from 16-frame windows every 4 frames, segments at "
             f"P >= 0.5 (>= 0.3 s), temporal NMS 0.5.", ""]
    body += table(["mAP@0.5", "mAP@0.75", "mAP@0.5:0.95", "detections", ">= 0.8 at 0.5"],
                  [[f"{lm['mAP@0.5']:.3f}", f"{lm['mAP@0.75']:.3f}", f"{lm['mAP@0.5:0.95']:.3f}", len(dets),
                    "MET" if lm["mAP@0.5"] >= 0.8 else "NOT met"]])
    _ = np
    run.write("Video understanding", body, tag=args.run_name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_doc_args(ap, "video", "fewer repeats, 20+8 clips per class, 2 epochs, a 2-minute normal run")
    ap.add_argument("--part", choices=("latency", "online", "events", "all"), default="all")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--freeze", type=int, default=3, help="Lite0 stages (after the stem) kept frozen")
    ap.add_argument("--run-name", default="events", help="runs/video/<name> and the doc block's tag")
    ap.add_argument("--reuse-set", action="store_true", help="reuse clip sets of the same size already on disk")
    ap.add_argument("--short-side", type=int, default=48, help="frames are resized to this short side (px)")
    args = ap.parse_args()
    args.n_train = args.n_train or (20 if args.quick else 40)
    args.n_test = args.n_test or (8 if args.quick else 40)
    args.epochs = args.epochs or (2 if args.quick else 10)
    run = Run(args, full_command=".venv/bin/python benchmarks/video.py")
    print(f"load average {load_average():.1f}", flush=True)
    if args.part in ("latency", "all"):
        part_latency(run, args)
    if args.part in ("online", "all"):
        part_online(run, args)
    if args.part in ("events", "all"):
        part_events(run, args)


if __name__ == "__main__":
    main()
