"""Video understanding benchmarks -> docs/benchmarks/video.md (one block per part):

- latency: forward CPU time per clip of fovea's I3D-R50 8x8, R(2+1)D-R50 16x4 and SlowFast-R50
  8x8 against PyTorchVideo's hub models of the same architecture (pretrained=False, same input,
  same run; equal params and MACs, counted by torch.utils.flop_counter in each process, show the
  architectures are the same). PyTorchVideo runs in its own venv (default
  ~/.cache/fovea-bench/venv-pytorchvideo, created with torch 2.14.1 + pytorchvideo 0.1.5 when
  missing); it never enters fovea's dependencies. Children alternate fovea / PyTorchVideo.
- online: CPU cost per new frame of the online TSM (one 2D forward, cached shifts; plain and with
  BatchNorm folded + channels-last) vs offline TSM-8 (an 8-frame clip forward, what a
  sliding-window recognizer pays for each new frame), also like for like.
- events: the conveyor-event clip set (fovea.synth.conveyor_events, MP4 via PyAV), TSM on the
  offline ImageNet EfficientNet-Lite0 trained with the shared engine on CPU, held-out clip accuracy;
  the trained model as an online line stage on a ConveyorSource (jam flag latency, false stops over
  a 10-minute normal run); temporal localization mAP on long generated videos (sliding windows vs a
  frame-level temporal head on the causal TSM's per-frame features with actionness grouping).
- falls / nojam (not in 'all'; they load the model --run-name trained): the model on falls the camera
  sees whole vs only in part, by how far the item is shown to slide; its jam stop on belts with falls
  and roll-backs but no jam (every stop a false one).
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
    rounds, repeats = (1, 2) if args.quick else (3, 3)
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
             "(SlowFast: PyTorchVideo gets [every 4th frame, all 32], fovea samples the same slow frames itself). "
             "fovea runs its kt x 1 x 1 convolutions as 2D (kt, 1) ones over (B, C, T, H*W), and its 1 x k x k "
             "ones on thin inputs (batch 1, C*T*H <= 20480: SlowFast's fast pathway, the last stages) as 2D ones "
             "over the frames (same arithmetic, tested against Conv3d; oneDNN instead of torch's single-thread "
             "im2col Conv3d path); both libraries otherwise run torch's default eval forward (no BatchNorm "
             "folding, default memory format)."]
    run.write("Video understanding", body, tag="latency")


# ----------------------------------------------------------------------------- online vs offline TSM
def part_online(run: Run, args) -> None:
    import copy

    import torch

    import fovea.models.video as V
    from fovea.models.video.tsm import OnlineTSM, fold_batchnorm

    torch.set_num_threads(1)
    reps = 5 if args.quick else 15
    rows = []
    for name, hw, kw in (("tsm_lite0", (96, 160), {"weights": "random"}), ("tsm_r50", (224, 224), {})):
        torch.manual_seed(0)
        model = V.create_model(name, num_classes=5, num_segments=8, shift_mode="causal", **kw).eval()
        fast = copy.deepcopy(model)
        fold_batchnorm(fast)
        fast = fast.to(memory_format=torch.channels_last)
        streams = {"plain": OnlineTSM(model), "fast": OnlineTSM(model, fold_bn=True, channels_last=True)}
        clip = torch.randn(1, 3, 8, *hw)
        t = {k: [] for k in ("off", "off_fast", "plain", "fast")}
        with torch.inference_mode():
            model(clip)
            fast(clip)
            for k in range(reps):                  # alternate the four measurements, one of each per round
                for key, fn in (("off", lambda: model(clip)), ("off_fast", lambda: fast(clip))):
                    c0 = time.process_time()
                    fn()
                    t[key].append(time.process_time() - c0)
                for key, online in streams.items():
                    c0 = time.process_time()
                    online.step(clip[:, :, k % 8])
                    online.logits(8)
                    t[key].append(time.process_time() - c0)
        m = {k: statistics.median(v) for k, v in t.items()}
        rows.append([name, f"{hw[0]}x{hw[1]}", f"{m['off'] * 1e3:.1f}", f"{m['plain'] * 1e3:.1f}",
                     f"1/{m['off'] / m['plain']:.1f}", f"{m['fast'] * 1e3:.1f}", f"1/{m['off'] / m['fast']:.1f}",
                     "MET" if m["fast"] <= m["off"] / 6 else "NOT met", f"{m['off_fast'] * 1e3:.1f}",
                     f"1/{m['off_fast'] / m['fast']:.1f}"])
    body = [f"CPU ms per new frame, median of {reps} alternating rounds: offline TSM-8 recomputes the 8-frame "
            "clip (what a sliding-window recognizer pays per new frame); online TSM runs one 2D forward with the "
            "cached shifted channels (+ the classifier on the mean of 8 frame features). \"fast\" = "
            "`OnlineTSM(model, fold_bn=True, channels_last=True)`: BatchNorm folded into the convolutions, "
            "channels-last memory (same features, tested). The verdict compares it with the offline model as "
            "trained and exported; the last two columns give the offline clip the same two changes "
            "(like for like).", ""]
    body += table(["model", "frame", "offline TSM-8 ms", "online ms", "ratio", "online fast ms", "ratio",
                   "fast <= 1/6 of offline", "offline fast ms", "like for like"], rows)
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
    from fovea.video.train import VideoClassifyTask

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
    if args.seed:                # seed 0 keeps torch's initial generator state (how events_d was trained)
        torch.manual_seed(args.seed)
    model = V.create_model("tsm_lite0", num_classes=len(names), num_segments=8, shift_mode="causal")
    weights = out / "tsm_lite0_events.safetensors"
    if args.reuse_model and weights.is_file():       # evaluate the model a previous run of this name trained
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
        times = json.loads((out / "fit_times.json").read_text())
        return model.eval(), names, _held_out(model, ite, names, args), dict(times, gen_s=-1.0)
    net = model.backbone.net
    for mod in [net.conv_stem, net.bn1] + [net.blocks[i] for i in range(args.freeze)]:
        for p in mod.parameters():
            p.requires_grad_(False)
    task = VideoClassifyTask(model, names)
    cfg = TrainConfig(lr=args.lr, batch_size=8, max_epochs=args.epochs, schedule="cosine", weight_decay=1e-4,
                      out_dir=str(out / "fit"), seed=args.seed)
    c0, t0 = time.process_time(), time.perf_counter()
    if args.channels_last:       # same arithmetic; less CPU per Lite0 training step (dev timing 1.5x)
        model = model.to(memory_format=torch.channels_last)
    train_set = VideoClipDataset(itr, 8, train=True, short_side=args.short_side, vertical_flip=args.vflip,
                                 seed=args.seed)
    fit(task, train_set, None, cfg, progress=_epoch_printer())
    fit_cpu, fit_wall = time.process_time() - c0, time.perf_counter() - t0
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in task.model.state_dict().items()}, str(weights))   # channels_last
    times = {"fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall}
    (out / "fit_times.json").write_text(json.dumps(times))
    metrics = _held_out(task.model, ite, names, args)
    return task.model.eval(), names, metrics, dict(times, gen_s=t_gen)


def _held_out(model, items, names: list[str], args) -> dict:
    """Held-out metrics with 1 TSN clip (segment centres) and with 2 clips (MMAction2's multi-clip
    testing, mean softmax; together they cover all 16 frames of a clip): {1: metrics, 2: metrics}."""
    import torch

    from fovea.video.dataset import VideoClipDataset
    from fovea.video.train import evaluate

    out = {}
    for views in (1, 2):
        test_set = VideoClipDataset(items, 8, train=False, short_side=args.short_side, num_clips=views)
        out[views] = evaluate(model, torch.utils.data.DataLoader(test_set, batch_size=8), len(names))
        print(f"held-out, {views} clip(s): top-1 {out[views]['top1']:.3f}", flush=True)
    return out


def _epoch_printer():
    def progress(stage: str, done: int, total: int) -> None:
        if stage == "epochs":
            print(f"epoch {done}/{total} done, load {load_average():.1f}", flush=True)
    return progress


def line_run(model, names, duration_s: float, jams: list, seed: int, stride: int, window: int, threshold: float,
             min_frames: int, short_side: int, conv=None):
    """An online stage on a ConveyorSource with a SimClock (a belt with `jams`, or the given `conv`);
    returns the raised stop records and the stage."""
    from fovea.line.clock import SimClock
    from fovea.line.events import EventLog
    from fovea.line.sources import ConveyorSource
    from fovea.synth.conveyor import ConveyorConfig
    from fovea.synth.conveyor_events import EventConveyor, EventSchedule
    from fovea.video.online import EventDebouncer, OnlineEventRecognizer, VideoEventStage

    n_obj = int(duration_s * 400 / 120) + 10
    conv = conv or EventConveyor(ConveyorConfig(n_objects=n_obj, lead_in_mm=0.0, gap_mm=(40.0, 120.0), p_box=0.15,
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
            f"8 TSN segments, AdamW {args.lr:g} cosine, batch 8, {args.epochs} epochs on the shared engine, "
            f"training seed {args.seed}"
            + (", vertical flips" if args.vflip else "") + (", channels-last" if args.channels_last else "") + ": "
            + (f"{times['fit_cpu_s']:.0f} CPU s ({times['fit_wall_s']:.0f} s wall)." if times.get("fit_cpu_s")
               else f"CPU time not recorded ({times.get('note', '')})."), ""]
    rows = []
    for views, mv in m.items():
        conf = np.array(mv["confusion"])
        per_class = conf.diagonal() / np.maximum(conf.sum(1), 1)
        rows.append([f"{views} x 8 frames", f"{mv['top1'] * 100:.1f} %", f"{mv['mean_class_acc'] * 100:.1f} %",
                     " / ".join(f"{a * 100:.0f}" for a in per_class), mv["n"],
                     "MET" if mv["top1"] >= 0.9 else "NOT met"])
    body += table(["test views", "held-out top-1", "mean class acc", "per class % (" + " / ".join(names) + ")",
                   "clips", ">= 90 %"], rows)
    for views, mv in m.items():
        body += ["", f"Confusion, {views} view(s) (rows = truth, columns = predicted):", ""]
        body += table(["truth"] + names, [[n] + row for n, row in zip(names, mv["confusion"])])
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
             f"processed, mean of the last {window} frame features (no score until {window} frames are in: zero "
             "shift caches and a part-filled window at stream start), stop after "
             f"{min_frames} processed frames with "
             f"P(jam) >= {threshold}): {line_cpu:.0f} CPU s for both runs; online inference median "
             f"{statistics.median(nstage.infer_s) * 1e3:.1f} ms per processed frame.", ""]
    body += table(["run", "jams", "flagged within 1 s", "latency s (each jam)", "false stops"],
                  [[f"{10 + 20 * n_jams:.0f} s with jams", n_jams, f"{within}/{n_jams}",
                    ", ".join("-" if d is None else f"{d:.1f}" for d in flagged), false_in_jam_run],
                   [f"{normal_s / 60:.0f}-minute normal run", 0, "-", "-", len(nstops)]])
    ok_line = within == n_jams and false_in_jam_run == 0 and len(nstops) == 0
    body += ["", f"Each jam flagged within 1 s and no false stop: {'MET' if ok_line else 'NOT met'}."]
    body += localization_block(model, names, args)
    run.write("Video understanding", body, tag=args.run_name)


def _videos(n: int, seed0: int, dur: float):
    from fovea.synth.conveyor_events import make_event_video

    for v in range(n):
        frames, events, _ = make_event_video(dur, seed=seed0 + v)
        yield v, frames, events


def localization_block(model, names: list[str], args) -> list[str]:
    """Temporal localization on long generated videos: the previous sliding-window method and the
    frame-level head (fovea.video.temporal) on the same held-out videos; returns the doc lines."""
    import torch

    from fovea.engine.train import TrainConfig, fit
    from fovea.video.localize import frame_probabilities, localize
    from fovea.video.metrics import Segment, average_precision_at, localization_map
    from fovea.video.temporal import (FrameLabelTask, FrameWindows, TemporalConvHead, actionness_grouping,
                                      frame_features, frame_labels, head_probabilities)

    kinds = ["normal", "jam", "fall", "rollback"]
    fps, dur = 10.0, 60.0
    n_train, n_test = (4, 2) if args.quick else (args.loc_train_videos, 5)
    c0 = time.process_time()
    feats, labels = [], []
    for _, frames, events in _videos(n_train, 500, dur):          # training videos: seeds 500+
        feats.append(frame_features(model, frames, stride=2, short_side=args.short_side))
        labels.append(frame_labels(events, len(frames), fps, kinds))
    torch.manual_seed(0)
    head = TemporalConvHead(model.num_features, len(kinds))
    fit(FrameLabelTask(head), FrameWindows(feats, labels, length=128, step=32), None,
        TrainConfig(lr=1e-3, batch_size=16, max_epochs=args.head_epochs, schedule="cosine", weight_decay=1e-4,
                    out_dir=str(RUNS / args.run_name / "head"), seed=0))
    head_cpu = time.process_time() - c0
    dets = {"window": [], "head": []}
    truths = []
    for v, frames, events in _videos(n_test, 100, dur):           # held-out videos: seeds 100+
        off = v * (dur + 100)
        truths += [Segment(e.t_start_s + off, e.t_end_s + off, kinds.index(e.kind)) for e in events]
        probs = frame_probabilities(model, frames, window=16, num_segments=8, stride=4, short_side=args.short_side)
        p4 = probs[:, [names.index(k) for k in kinds]]
        for sg in localize(p4 / p4.sum(1, keepdims=True), fps=fps, threshold=0.5, min_len_s=0.3):
            dets["window"].append(Segment(sg.start_s + off, sg.end_s + off, sg.label, sg.score))
        hp = head_probabilities(head, frame_features(model, frames, stride=2, short_side=args.short_side))
        for sg in actionness_grouping(hp, fps=fps, min_len_s=0.2, nms_iou=0.5):
            dets["head"].append(Segment(sg.start_s + off, sg.end_s + off, sg.label, sg.score))
    rows = []
    for key, label in (("window", "16-frame windows every 4 frames, P >= 0.5 runs (previous method)"),
                       ("head", "frame-level head + actionness grouping")):
        lm = localization_map(dets[key], truths)
        per_class = [average_precision_at([d for d in dets[key] if d.label == c], [g for g in truths if g.label == c],
                                          0.5) for c in range(1, len(kinds))]
        rows.append([label, f"{lm['mAP@0.5']:.3f}", " / ".join(f"{a:.2f}" for a in per_class),
                     f"{lm['mAP@0.75']:.3f}", f"{lm['mAP@0.5:0.95']:.3f}", len(dets[key]),
                     "MET" if lm["mAP@0.5"] >= 0.8 else "NOT met"])
    n_ev = {k: sum(1 for t in truths if t.label == kinds.index(k)) for k in kinds[1:]}
    lines = ["", f"Temporal localization: {n_test} held-out generated videos of {dur:.0f} s (seeds 100+; "
             f"{len(truths)} events: " + ", ".join(f"{n} {k}s" for k, n in n_ev.items()) + "). Frame-level head: "
             "per-frame features of the trained causal TSM over the whole video (two interleaved 5 fps "
             "streams), a dilated temporal conv head (1x1 to 128, kernels 5 at dilations 1, 2, 4) trained on the "
             f"frame labels of {n_train} other generated videos (seeds 500+, {args.head_epochs} epochs, "
             f"{head_cpu:.0f} CPU s with their feature extraction), then actionness grouping (1 - P(normal) at "
             "thresholds 0.3-0.7, class = argmax of the run's mean probabilities, temporal NMS 0.5). "
             "mAP: ActivityNet-style, tIoU 0.5:0.95.", ""]
    lines += table(["method", "mAP@0.5", "AP@0.5 jam / fall / rollback", "mAP@0.75", "mAP@0.5:0.95", "detections",
                    ">= 0.8 at 0.5"], rows)
    return lines


# ----------------------------------------------------------------------------- falls seen whole vs in part
def _seen_share(conv, uid: int, t0_abs: float, side: int, t_clip: float, n_frames: int) -> float:
    """How far (0-1) the falling item got towards leaving over the belt's side in the frames that show it."""
    fps, y0 = conv.config.fps, conv._y0[uid]
    edge = conv._out_of_view_time(uid, t0_abs, side)
    dist = 0.5 * 600.0 * (edge - t0_abs) ** 2          # lateral distance to be out of view (FALL_ACCEL_MM_S2)
    seen = [abs(conv.positions(t_clip + k / fps)[1][uid] - y0) for k in range(n_frames)
            if uid in conv.visible(t_clip + k / fps)]
    return min(max(seen, default=0.0) / dist, 1.0)


def part_falls(run: Run, args) -> None:
    """The trained events model (runs/video/<run-name>) on fall clips the camera sees whole (as trained)
    and on falls it sees only in part (the item leaves downstream or the clip ends first)."""
    import numpy as np
    import torch

    from fovea.synth.conveyor_events import EVENT_CLASSES, FALL_ACCEL_MM_S2, make_event_clip, write_mp4
    from fovea.video.dataset import VideoClipDataset, VideoItem
    from fovea.video.train import predict_scores

    assert FALL_ACCEL_MM_S2 == 600.0, "_seen_share assumes the generator's fall acceleration"
    torch.set_num_threads(1)
    names = list(EVENT_CLASSES)
    model = _trained_events_model(args.run_name, len(names))
    n = 16 if args.quick else 80
    bins = ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.01))
    rows, c0 = [], time.process_time()
    for seen in ("whole", "partial"):
        items, shares = [], []
        for i in range(n):
            seed = 7_000_000 + i                      # seeds of neither the training nor the held-out set
            frames, events, conv = make_event_clip("fall", seed, 16, fall_seen=seen, fps=10.0)
            ev = next(e for e in events if e.kind == "fall")
            uid, t0_abs, side = conv.schedule.falls[0]
            shares.append(_seen_share(conv, uid, t0_abs, side, t0_abs - ev.t_start_s, 16))
            items.append(VideoItem(write_mp4(RUNS / "falls_stress" / seen / f"{seed}.mp4", frames), names.index("fall")))
        ds = VideoClipDataset(items, 8, train=False, short_side=args.short_side)
        pred = predict_scores(model, torch.utils.data.DataLoader(ds, batch_size=8))[0].argmax(1)
        shares = np.array(shares)
        for lo, hi in bins:
            sel = (shares >= lo) & (shares < hi)
            if not sel.any():
                continue
            called = [int((pred[sel] == names.index(k)).sum()) for k in names]
            rows.append([seen, f"{lo:.2f}-{min(hi, 1):.2f}", int(sel.sum()),
                         f"{called[names.index('fall')] / sel.sum() * 100:.0f} %",
                         " / ".join(str(c) for c in called)])
    body = [f"The events model of `{args.run_name}` (trained on falls seen whole) on {n} new fall clips of each "
            "kind (seeds 7,000,000+, 16 frames, one TSN view): \"whole\" = the generator's fall clips "
            "(`fall_in_view`), \"partial\" = `make_event_clip(..., fall_seen='partial')`: the item starts to "
            "slide in full view but leaves downstream, or the clip ends, before it is over the belt's side. "
            "Seen share = the largest sideways distance the item is shown to travel, over the distance it "
            "needs to leave over the side (1 = seen leaving). "
            f"{time.process_time() - c0:.0f} CPU s.", ""]
    body += table(["falls", "seen share", "clips", "called fall", "predicted " + " / ".join(names)], rows)
    run.write("Video understanding", body, tag=f"{args.run_name}_falls")


def _trained_events_model(run_name: str, n_classes: int):
    """The causal TSM-Lite0 events model that `--part events --run-name RUN_NAME` trained, in eval mode."""
    from safetensors.torch import load_file

    import fovea.models.video as V

    weights = RUNS / run_name / "tsm_lite0_events.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{weights} is missing: train it first with --part events --run-name {run_name}")
    model = V.create_model("tsm_lite0", num_classes=n_classes, num_segments=8, shift_mode="causal")
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def part_nojam(run: Run, args) -> None:
    """The events model of --run-name as the jam-stopping line stage on belts with falls and roll-backs but
    no jam (the same stage settings as the events part): every stop is a false stop."""
    import torch

    from fovea.synth.conveyor_events import EVENT_CLASSES, event_video_conveyor

    torch.set_num_threads(1)
    names = list(EVENT_CLASSES)
    model = _trained_events_model(args.run_name, len(names))
    stride, window, threshold, min_frames = 2, 4, 0.6, 2        # as in part_events
    duration = 120.0 if args.quick else 600.0
    rows, c0 = [], time.process_time()
    for seed in (900, 901):
        conv = event_video_conveyor(duration, seed, events_per_minute=10.0, kinds=("fall", "rollback"))
        events = conv.events(duration)
        stops, _ = line_run(model, names, duration, [], seed, stride, window, threshold, min_frames,
                            args.short_side, conv=conv)
        near = [next((e.kind for e in events if e.t_start_s - 1 <= r["t_exposure"] <= e.t_end_s + 2), "none")
                for r in stops]
        rows.append([seed, f"{duration / 60:.0f} min", sum(e.kind == "fall" for e in events),
                     sum(e.kind == "rollback" for e in events), len(stops),
                     ", ".join(f"{r['t_exposure']:.1f} s ({k})" for r, k in zip(stops, near)) or "-"])
    body = [f"The events model of `{args.run_name}` as the jam-stopping line stage (settings of the events part: "
            f"every {stride}nd frame, mean of {window} frame features, stop after {min_frames} processed frames "
            f"with P(jam) >= {threshold}) on belts with falls and roll-backs (10 a minute, "
            "`event_video_conveyor`, seeds 900/901) and no jam: every stop is a false stop. "
            f"{time.process_time() - c0:.0f} CPU s.", ""]
    body += table(["seed", "run", "falls", "roll-backs", "false stops", "stops at (event near it)"], rows)
    verdict = "MET" if all(r[4] == 0 for r in rows) else "NOT met"
    body += ["", f"No false stop on falls and roll-backs: {verdict}."]
    run.write("Video understanding", body, tag=f"{args.run_name}_nojam")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_doc_args(ap, "video", "fewer repeats, 20+8 clips per class, 2 epochs, a 2-minute normal run")
    ap.add_argument("--part", choices=("latency", "online", "events", "falls", "nojam", "all"), default="all",
                    help="falls: the --run-name events model on falls seen whole vs in part; nojam: that model's "
                    "jam stop on belts with falls and roll-backs only (neither is in 'all')")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0, help="training seed of the events model: head init (seeds other than 0), batch order, frame and flip draws")
    ap.add_argument("--freeze", type=int, default=2, help="Lite0 stages (after the stem) kept frozen")
    ap.add_argument("--run-name", default="events", help="runs/video/<name> and the doc block's tag")
    ap.add_argument("--reuse-set", action="store_true", help="reuse clip sets of the same size already on disk")
    ap.add_argument("--short-side", type=int, default=64, help="frames are resized to this short side (px)")
    ap.add_argument("--vflip", action=argparse.BooleanOptionalAction, default=True,
                    help="training augmentation: random top-bottom mirror")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="train in channels_last memory format")
    ap.add_argument("--loc-train-videos", type=int, default=12, help="60 s videos to train the localization head")
    ap.add_argument("--head-epochs", type=int, default=40)
    ap.add_argument("--reuse-model", action="store_true",
                    help="evaluate runs/video/<run-name>/tsm_lite0_events.safetensors instead of training")
    args = ap.parse_args()
    args.n_train = args.n_train or (20 if args.quick else 100)   # defaults: the events_d recipe
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
    if args.part == "falls":
        part_falls(run, args)
    if args.part == "nojam":
        part_nojam(run, args)


if __name__ == "__main__":
    main()
