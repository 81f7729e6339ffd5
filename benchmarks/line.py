"""End-to-end latency and sustained FPS of the sorting line at 640x480, real time.

Baseline: the naive single loop of a typical sorter script (read -> infer -> decide -> send, one
thread; `LineRunner.run_naive`). Candidate: fovea's staged runner (`run_threaded`: capture,
perceive, decide and actuator threads joined by bounded queues). Both run the SAME stage code on
the same synthetic conveyor (a live camera with a 4-frame driver buffer, 30 fps), the same
classifier stand-in and the same emulated firmware, one after the other in this process.

The classifier stand-in is `OraclePredictor` (labels from ground truth) with a fixed latency per
call plus per crop (default 30 ms + 5 ms/crop), i.e. a model on an accelerator: it waits, it does
not burn the host CPU. Latencies are measured from each frame's exposure time (ground truth),
so frames aged in the camera buffer count against the pipeline that let them age.

    .venv/bin/python benchmarks/line.py [--n-objects 20] [--repeats 1] [--out docs/benchmarks/line.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from fovea.line.actuators import SimulatedActuator
from fovea.line.audit import audit
from fovea.line.clock import RealClock
from fovea.line.config import LineConfig
from fovea.line.doubles import OraclePredictor
from fovea.line.events import EventLog, fps_intervals
from fovea.line.runner import LineRunner
from fovea.line.sources import ConveyorSource
from fovea.synth.conveyor import Conveyor, ConveyorConfig


def one_run(mode: str, args) -> dict:
    conv_cfg = ConveyorConfig(width_px=640, height_px=480, mm_per_px=400 / 640, fps=30.0, belt_speed_mm_s=400.0,
                              n_objects=args.n_objects, seed=args.seed, appearance="realistic", p_box=0.1)
    conv = Conveyor(conv_cfg)
    conv.prepare()                                   # draw sprites before the clock starts
    cfg = LineConfig(mm_per_px=conv_cfg.mm_per_px, fps=conv_cfg.fps, belt_speed_mm_s=conv_cfg.belt_speed_mm_s,
                     min_area_px=200, crop_pad_px=6, max_missed_frames=2)
    clock = RealClock()
    log = EventLog()
    src = ConveyorSource(conv, clock=clock, driver_buffer=4, x_end_mm=max(cfg.gate_distance_mm.values()) + 200)
    act = SimulatedActuator(clock=clock, emit=log.emit)
    pred = OraclePredictor(clock=clock, latency_s=args.model_ms / 1000, per_crop_s=args.crop_ms / 1000,
                           seed=args.seed)
    runner = LineRunner(src, pred, act, cfg, clock=clock, log=log)
    t0 = time.perf_counter()
    (runner.run_naive if mode == "naive" else runner.run_threaded)()
    wall = time.perf_counter() - t0
    ev = log.events
    exposure = {e["frame"]: e["t_exposure"] for e in ev if e["type"] == "frame"}
    by_capture = {e["t_capture"]: exposure[e["frame"]] for e in ev if e["type"] == "frame"}
    done = [e for e in ev if e["type"] == "frame_done"]
    age = np.array([e["t"] - exposure[e["frame"]] for e in done])
    cmd = np.array([e["t"] - by_capture[e["t_capture"]] for e in ev if e["type"] == "command"
                    and e["t_capture"] in by_capture])
    fps = fps_intervals([e["t"] for e in done])
    rep = audit(conv, src.t0, act.emulator.swings, cfg, runner.finished)
    reasons = {}
    for e in ev:
        if e["type"] == "outcome" and e["lane"] == "default":
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    return {"mode": mode, "wall_s": wall, "exposed": src.next_k, "processed": len(done),
            "age_p50": float(np.percentile(age, 50) * 1e3), "age_p99": float(np.percentile(age, 99) * 1e3),
            "cmd_p50": float(np.percentile(cmd, 50) * 1e3) if cmd.size else float("nan"),
            "cmd_p99": float(np.percentile(cmd, 99) * 1e3) if cmd.size else float("nan"),
            "fps": float(np.median(fps)) if fps else float("nan"), "accuracy": rep.accuracy,
            "mismatch": rep.host_vs_physical_mismatch, "wrong_lane": sum(rep.wrong_in_lane.values()),
            "late_or_gap": sum(v for k, v in reasons.items() if k in ("late", "track_gap", "insufficient_evidence")),
            "items": rep.n_items, "default_reasons": reasons}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-objects", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model-ms", type=float, default=30.0)
    ap.add_argument("--crop-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the markdown table here (e.g. docs/benchmarks/line.md)")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"naive": [], "fovea": []}
    for _ in range(args.repeats):
        for mode in ("naive", "fovea"):
            r = one_run(mode, args)
            runs[mode].append(r)
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("mode", "default_reasons")}
           for m, rs in runs.items()}
    n, f = med["naive"], med["fovea"]
    rows = [("frame age at result p50 (ms, from exposure)", "age_p50"), ("frame age at result p99 (ms)", "age_p99"),
            ("exposure -> command sent p50 (ms)", "cmd_p50"), ("exposure -> command sent p99 (ms)", "cmd_p99"),
            ("sustained FPS (median of 1 s intervals)", "fps"), ("frames processed / exposed", None),
            ("sorting accuracy (physical audit)", "accuracy"), ("host/physics mismatches", "mismatch"),
            ("items in a wrong lane", "wrong_lane"), ("default-routed: late / gap / no evidence", "late_or_gap")]
    lines = [f"| metric | naive single loop | fovea runner | fovea / naive |", "|---|---|---|---|"]
    for name, k in rows:
        if k is None:
            lines.append(f"| {name} | {n['processed']:.0f} / {n['exposed']:.0f} | {f['processed']:.0f} / "
                         f"{f['exposed']:.0f} | {f['processed'] / max(n['processed'], 1):.2f} |")
            continue
        ratio = f[k] / n[k] if n[k] not in (0, 0.0) and np.isfinite(n[k]) else float("nan")
        fmt = "{:.3f}" if k == "accuracy" else "{:.1f}"
        lines.append(f"| {name} | {fmt.format(n[k])} | {fmt.format(f[k])} | {ratio:.2f} |")
    table = "\n".join(lines)
    head = (f"640x480 synthetic conveyor at 30 fps, 400 mm/s, {args.n_objects} items, model stand-in "
            f"{args.model_ms:.0f} ms + {args.crop_ms:.0f} ms/crop, medians of {args.repeats} run(s) each, "
            f"same process, machine: {_machine()}.")
    print(head)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("# Sorting line: naive loop vs fovea runner\n\n" + head + "\n\n" + table + "\n\n"
                                  "Command: `.venv/bin/python benchmarks/line.py " +
                                  f"--n-objects {args.n_objects} --repeats {args.repeats} --out {args.out}`\n")


def _machine() -> str:
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, load average {load:.1f} at start"


if __name__ == "__main__":
    main()
