"""The sorting line: latency vs a naive loop (real time), and its promise under faults (issue 11).

Sections (`--section`, default all):

* latency: end-to-end latency and sustained FPS at 640x480, real time (below).
* faults: a fault-family table (families x counts: wrong lane, two outcomes, double actuations,
  partial hits, logged != bin, unseen & uncounted, runs ended), "old" = the code at git a0adeaf
  (a `git worktree` checkout at --old-tree, run in a subprocess with PYTHONPATH on its src and
  today's fault harness + audit loaded over it) vs "new" = this tree; the 400 -> 250 -> 550 mm/s
  step sequence with speed measurement on against issue 11's targets; `--sweep N` random fault
  mixes (`fovea.line.fuzz`) on the new code (section `sweep`, own block). Counts come from a simulated clock, so they do not
  depend on machine load; `--jobs` runs schedules in parallel processes.
* `--models` (or `--section models` alone): the trained-model accuracy table
  (`benchmarks/_line_models.py`: `model_accuracy_table(quick)`).

Each section writes its own marked block in docs/benchmarks/line.md (text outside the blocks is kept).

Baseline: the naive single loop of a typical sorter script (read -> infer -> decide -> send, one
thread; `LineRunner.run_naive`). Candidate: fovea's staged runner (`run_threaded`: capture,
perceive, decide and actuator threads joined by bounded queues). Both run the SAME stage code on
the same synthetic conveyor (a live camera with a 4-frame driver buffer, 30 fps), the same
classifier stand-in and the same emulated firmware, one after the other in this process.

The classifier stand-in is `OraclePredictor` (labels from ground truth) with a fixed latency per
call plus per crop (default 30 ms + 5 ms/crop), i.e. a model on an accelerator: it waits, it does
not burn the host CPU. Latencies are measured from each frame's exposure time (ground truth),
so frames aged in the camera buffer count against the pipeline that let them age.

    .venv/bin/python benchmarks/line.py [--quick] [--section all|latency|faults] [--sweep 300] [--jobs 2] [--models]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _doc  # noqa: E402

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


def latency_section(args) -> list[str]:
    """Markdown lines: naive single loop vs fovea's staged runner, real time."""
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
    lines = ["| metric | naive single loop | fovea runner | fovea / naive |", "|---|---|---|---|"]
    for name, k in rows:
        if k is None:
            lines.append(f"| {name} | {n['processed']:.0f} / {n['exposed']:.0f} | {f['processed']:.0f} / "
                         f"{f['exposed']:.0f} | {f['processed'] / max(n['processed'], 1):.2f} |")
            continue
        ratio = f[k] / n[k] if n[k] not in (0, 0.0) and np.isfinite(n[k]) else float("nan")
        fmt = "{:.3f}" if k == "accuracy" else "{:.1f}"
        lines.append(f"| {name} | {fmt.format(n[k])} | {fmt.format(f[k])} | {ratio:.2f} |")
    head = (f"640x480 synthetic conveyor at 30 fps, 400 mm/s, {args.n_objects} items, model stand-in "
            f"{args.model_ms:.0f} ms + {args.crop_ms:.0f} ms/crop, medians of {args.repeats} run(s) each, "
            f"same process, machine: {_machine()}.")
    return ["## Naive loop vs fovea runner (real time)", "", head, ""] + lines


def put_block(run: "_doc.Run", tag: str, title: str, body: list[str]) -> None:
    """Print a section and put it into the doc between `<!-- begin benchmarks/line.py:<tag> -->` markers."""
    run.write(title, body, tag=tag)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=("all", "latency", "faults", "sweep", "models"), default="all",
                    help="models: only the trained-model table (same as --models with no other section)")
    ap.add_argument("--n-objects", type=int, default=20, help="latency section: items per run")
    ap.add_argument("--repeats", type=int, default=1, help="latency section: runs per mode")
    ap.add_argument("--model-ms", type=float, default=30.0)
    ap.add_argument("--crop-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", type=int, default=None,
                    help="faults section: random fault mixes on the new code (default 300; 10 with --quick)")
    ap.add_argument("--jobs", type=int, default=1, help="faults/sweep sections: parallel processes")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="sweep section: start no new schedule after this many seconds (the table says how many ran)")
    ap.add_argument("--old-tree", default="/tmp/line_old", help="git worktree of the old code (made if missing)")
    ap.add_argument("--old-rev", default="a0adeaf")
    ap.add_argument("--models", action="store_true", help="also the trained-model table (benchmarks/_line_models.py)")
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)       # old name of --doc
    _doc.add_doc_args(ap, "line", "1 seed x 100 items per fault family, 10 random mixes, 10 latency items")
    ap.add_argument("--fault-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--harness-src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rows", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fault_child:
        args.sweep = args.sweep or 0
        fault_child(args)
        return
    if args.out:
        args.doc = args.out
    if args.sweep is None:
        args.sweep = 10 if args.quick else 300
    if args.quick:
        args.n_objects = min(args.n_objects, 10)
    run = _doc.Run(args, full_command=".venv/bin/python benchmarks/line.py --jobs 2")
    print(f"machine: {_machine()}", flush=True)
    if args.section in ("all", "faults"):
        put_block(run, "faults", "Sorting line", fault_section(args))
    if args.section in ("all", "sweep"):
        put_block(run, "sweep", "Sorting line", sweep_section(args))
    if args.section in ("all", "latency"):
        put_block(run, "latency", "Sorting line", latency_section(args))
    if args.models or args.section == "models":
        models = Path(__file__).resolve().parent / "_line_models.py"
        if models.is_file():
            from _line_models import model_accuracy_table

            put_block(run, "models", "Sorting line", model_accuracy_table(args.quick))
        else:
            print(f"--models: {models} does not exist yet; no model table", flush=True)


def _machine() -> str:
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, load average {load:.1f} at start"


# ============================================================================ fault families (issue 11)
FAULT_COLS = [("wrong_lane", "wrong lane"), ("two_outcomes", "two outcomes"), ("double_actuations", "double act."),
              ("partial_hits", "partial hits"), ("logged_ne_bin", "logged != bin"),
              ("unseen_uncounted", "unseen & uncounted"), ("ended", "runs ended")]
UNSEEN_COLS = [("unseen", "unseen items (truth)"), ("unseen_estimated", "unseen (log's estimate)")]
HARNESS = ("fovea.synth.conveyor", "fovea.line.audit", "fovea.line.doubles", "fovea.line.sim", "fovea.line.fuzz")


def fault_rows(quick: bool) -> list[tuple[str, str, list]]:
    """(key, label, schedules) per fault family, mirroring issue 11's table; seeds differ per run."""
    from fovea.line.fuzz import Fault, FaultSchedule
    from fovea.synth.conveyor import Conveyor, ConveyorConfig

    n_items = 100 if quick else 300
    seeds = [0] if quick else [0, 1, 2]
    step_seeds = [0] if quick else [0, 1, 2, 3, 4]
    T = Conveyor(ConveyorConfig(n_objects=n_items, appearance="simple")).duration_s(1100)   # nominal run, s
    steps = ((T / 3, 250.0, 0.0), (2 * T / 3, 550.0, 0.0))
    ramps = ((T / 3, 250.0, 1.0), (2 * T / 3, 550.0, 1.0))
    every_s = [float(t) for t in np.arange(5.0, T - 5.0, 1.0)]

    def frames(fps=10.0):
        return [int(round(t * fps)) for t in every_s]

    def S(seed, faults=(), conveyor=None, measure=True):
        return FaultSchedule(seed=seed, n_items=n_items, faults=list(faults), conveyor=dict(conveyor or {}),
                             line={"measure_speed": measure})

    rows = [
        ("speed_off", "speed steps 400 -> 250 -> 550 mm/s, speed measurement off",
         [S(s, conveyor={"speed_profile": steps}, measure=False) for s in seeds]),
        ("speed_on", "the same steps, speed measurement on",
         [S(s, conveyor={"speed_profile": steps}) for s in step_seeds]),
        ("speed_ramp", "1 s ramps 400 -> 250 -> 550 mm/s, measurement on",
         [S(s, conveyor={"speed_profile": ramps}) for s in seeds]),
        ("mcu_reset", "MCU reset while a gate is open (single), then a double reset",
         [S(s, [Fault("mcu_reset_mid_swing", 0.3 * T, {"power_loss": False, "into_swing_s": 0.05}),
                Fault("mcu_reset_mid_swing", 0.6 * T, {"power_loss": False, "into_swing_s": 0.02}),
                Fault("mcu_reset", 0.6 * T + 0.3, {"power_loss": False})]) for s in seeds]),
        ("link_flap", "serial link flapping (0.3-0.7 s down/up, ~5 s)",
         [S(s, [Fault("link_flap", 0.4 * T, {"down_up_s": [0.4, 0.5, 0.7, 0.3, 0.6, 0.45, 0.35, 0.7, 0.5, 0.4]})])
          for s in seeds]),
        ("done_lost", "one DONE line lost",
         [S(s, [Fault("line_lost", 0.5 * T, {"direction": "rx", "verb": "DONE", "count": 1})]) for s in seeds]),
        ("lines", "lost and delayed lines, either direction (random)",
         [FaultSchedule.random(100 + s, n_items, families=("line_lost", "line_delayed")) for s in seeds]),
        ("slow", "every 5th inference 2x over budget",
         [S(s, [Fault("slow_inference", 0.0, {"every": 5, "x_budget": 2.0})]) for s in seeds]),
        ("stall", "inference stalled 1.5 s",
         [S(s, [Fault("stalled_inference", 0.5 * T, {"stall_s": 1.5})]) for s in seeds]),
        ("stale", "a stale frame with a fresh timestamp, once a second",
         [S(s, [Fault("stale_frame", 5.0, {"frames": frames(), "lag": [2] * len(every_s)})]) for s in seeds]),
        ("stamp_back", "a timestamp stepped back 0.15 s, once a second",
         [S(s, [Fault("stamp_back", 5.0, {"frames": frames(), "shift_s": [-0.15] * len(every_s)})]) for s in seeds]),
        ("stamp_repeat", "a repeated timestamp, once a second",
         [S(s, [Fault("stamp_repeat", 5.0, {"frames": frames()})]) for s in seeds]),
        ("touch_edge", "touching (10 %) and edge-cut (20 %) items",
         [S(s, conveyor={"p_touching": 0.1, "p_edge_cut": 0.2}) for s in seeds]),
        ("scripted", "the seven scripted faults in one run",
         [S(s, [Fault("link_drop", 0.15 * T, {"down_s": 1.5}), Fault("mcu_reset", 0.25 * T, {"power_loss": False}),
                Fault("stalled_inference", 0.35 * T, {"stall_s": 1.0}),
                Fault("black_frames", 0.45 * T, {"frames": list(range(int(4.5 * T), int(4.5 * T) + 3))}),
                Fault("frozen_frames", 0.55 * T, {"frames": list(range(int(5.5 * T), int(5.5 * T) + 3))}),
                Fault("detector_dropout", 0.65 * T, {"frames": [int(6.5 * T), int(6.5 * T) + 1]}),
                Fault("id_switch", 0.75 * T, {})], conveyor={"p_touching": 0.05}) for s in seeds]),
    ]
    return rows


def _overlay_harness(src: str) -> None:
    """Load the fault harness (conveyor, audit, doubles, sim, fuzz) from `src` over an older fovea.

    The old code under test (runner, tracker, policy, actuators, emulator) keeps coming from
    PYTHONPATH; only the judge and the fault injection are today's, so old and new face the same
    faults and the same audit.
    """
    import importlib
    import importlib.util
    import sys

    for name in HARNESS:
        pkg, _, leaf = name.rpartition(".")
        parent = importlib.import_module(pkg)
        path = Path(src) / (name.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        setattr(parent, leaf, mod)


def _run_one(item):
    from fovea.line.fuzz import run_schedule

    key, sched = item
    r = run_schedule(sched, max_wall_s=900.0)
    c = dict(r.counts)
    c["ended"] = int(r.ended)
    c["wall_s"] = r.wall_s
    return key, sched.seed, c, r.violations(), str(sched) if r.violations() else ""


def _progress(r, k: int, n: int) -> str:
    """One progress line per finished run, with its counts (a run cut short still leaves figures)."""
    c = r[2]
    counts = " ".join(f"{col}={c.get(col, 0):g}" for col, _ in FAULT_COLS + UNSEEN_COLS if col != "ended")
    return f"  {k}/{n} {r[0]} seed {r[1]}: {', '.join(r[3]) or 'ok'} | {counts} ended={c.get('ended')}"


def _pool_map(fn, items, jobs: int, budget_s: float | None = None):
    """fn over items in `jobs` processes, in order; with budget_s, stop starting new items once the
    budget is spent (the results so far are returned, so a partial sweep says how far it got)."""
    t0 = time.perf_counter()
    over = lambda: budget_s is not None and time.perf_counter() - t0 > budget_s    # noqa: E731
    out = []
    if jobs <= 1:
        for x in items:
            if over():
                break
            out.append(fn(x))
            print(_progress(out[-1], len(out), len(items)), flush=True)
        return out
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(jobs) as pool:
        pending = [pool.apply_async(fn, (x,)) for x in items[:jobs]]
        nxt = jobs
        while pending:
            r = pending.pop(0).get()
            out.append(r)
            print(_progress(r, len(out), len(items)), flush=True)
            if nxt < len(items) and not over():
                pending.append(pool.apply_async(fn, (items[nxt],)))
                nxt += 1
        pool.terminate()
    return out


def fault_child(args) -> None:
    """Run the fault rows (and/or the random sweep) in this process's fovea; write JSON results."""
    import json

    if args.harness_src:
        _overlay_harness(args.harness_src)
    import fovea

    items = []
    if args.rows:
        for key, _label, scheds in fault_rows(args.quick):
            items += [(key, s) for s in scheds]
    if args.sweep:
        from fovea.line.fuzz import FaultSchedule

        items += [("sweep", FaultSchedule.random(s, 100 if args.quick else 300)) for s in range(args.sweep)]
    print(f"[{args.fault_child}] fovea from {Path(fovea.__file__).parent}: {len(items)} runs, {args.jobs} job(s)",
          flush=True)
    out = _pool_map(_run_one, items, args.jobs, budget_s=args.budget_s)
    Path(args.json).write_text(json.dumps(out))


def _child(impl: str, args, rows: bool, sweep: int) -> list:
    """Run the fault rows in a subprocess against `impl` ("old": the git worktree, "new": this tree)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fault-child", impl, "--jobs", str(args.jobs)]
    if impl == "old":
        old = Path(args.old_tree)
        if not (old / "src" / "fovea").is_dir():
            subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(old), args.old_rev], check=True)
        env["PYTHONPATH"] = str(old / "src")
        cmd += ["--harness-src", str(root / "src")]
    cmd += ["--rows"] if rows else []
    cmd += ["--sweep", str(sweep)] if sweep else []
    cmd += ["--budget-s", str(args.budget_s)] if sweep and args.budget_s else []
    cmd += ["--quick"] if args.quick else []
    cache = None
    if impl == "old":        # the old code never changes: reuse its results while the harness is the same
        import hashlib
        import inspect

        h = hashlib.sha256(f"{args.old_rev} {rows} {sweep} {args.quick}".encode())
        for name in HARNESS:
            h.update((root / "src" / (name.replace(".", "/") + ".py")).read_bytes())
        h.update((inspect.getsource(fault_rows) + inspect.getsource(_run_one)).encode())
        cache = Path(args.old_tree) / f".fault_results_{h.hexdigest()[:16]}.json"
        if cache.is_file():
            print(f"[old] reusing {cache} (same old code, same harness)", flush=True)
            return json.loads(cache.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        cmd += ["--json", str(Path(tmp) / "out.json")]
        subprocess.run(cmd, env=env, check=True, cwd=str(root))
        text = (Path(tmp) / "out.json").read_text()
    if cache is not None:
        cache.write_text(text)
    return json.loads(text)


def _sum(runs: list, key: str) -> float:
    return float(np.nansum([r[2].get(key, 0) for r in runs]))


def fault_section(args) -> list[str]:
    """Markdown lines: the fault-family table (old vs new) and the step-sequence targets."""
    rows = fault_rows(args.quick)
    res = {impl: _child(impl, args, rows=True, sweep=0) for impl in ("old", "new")}
    by = {impl: {} for impl in res}
    for impl, runs in res.items():
        for r in runs:
            by[impl].setdefault(r[0], []).append(r)
    n_items = 100 if args.quick else 300
    head = ["fault family", "runs x items"] + [lab for _, lab in FAULT_COLS + UNSEEN_COLS]
    body = []
    for key, label, scheds in rows:
        cells = [label, f"{len(scheds)} x {n_items}"]
        for col, _ in FAULT_COLS + UNSEEN_COLS:
            o, n = _sum(by["old"][key], col), _sum(by["new"][key], col)
            cells.append(f"{o:.0f} / {len(scheds)} -> **{n:.0f}** / {len(scheds)}" if col == "ended"
                         else f"{o:.0f} -> **{n:.0f}**" if col != "unseen_estimated" else f"{o:.1f} -> **{n:.1f}**")
        body.append(cells)
    out = ["## Fault families: old (a0adeaf) -> **new** (this tree)", "",
           f"Each row: the same seeded schedules (`fovea.line.fuzz`, simulated clock, real runner, firmware "
           f"emulator behind the protocol client, 2 % classifier error, 10 fps), judged by the physical audit "
           f"(`line/audit.py`). Counts are summed over the runs; old = the code at git {args.old_rev} "
           f"(a `git worktree` checkout) with today's fault harness and audit loaded over it.", ""]
    out += _doc.table(head, body)
    items = {impl: len(by[impl]["speed_on"]) * n_items for impl in by}
    out += ["", "### 400 -> 250 -> 550 mm/s steps, speed measurement on (issue 11 targets)", ""]
    tgt = []
    for col, lab, limit in (("wrong_lane", "wrong-lane items", 0.5), ("partial_hits", "partial gate hits", 1.0)):
        o = 100 * _sum(by["old"]["speed_on"], col) / items["old"]
        n = 100 * _sum(by["new"]["speed_on"], col) / items["new"]
        tgt.append([lab, f"{o:.2f} %", f"{n:.2f} %", f"<= {limit} %", "met" if n <= limit else "**NOT met**"])
    out += _doc.table(["count", "old", "new", "target", ""], tgt)
    out += ["", f"({items['new']} items: {len(by['new']['speed_on'])} seeds x {n_items}; steps at 1/3 and 2/3 of "
            "the nominal run.)"]
    viol = [(impl, r) for impl in by for rs in by[impl].values() for r in rs if r[3]]
    if viol:
        out += ["", "Runs breaking the promise (family, seed, counts):", ""]
        out += [f"- {impl} {r[0]} seed {r[1]}: {', '.join(r[3])}" for impl, r in viol if impl == "new"]
    return out


def sweep_section(args) -> list[str]:
    """Markdown lines: the done-when sweep of random fault mixes on the new code."""
    out = []
    if args.sweep:
        sw = _child("new", args, rows=False, sweep=args.sweep)
        bad = [r for r in sw if r[3]]
        n_it = 100 if args.quick else 300
        out += [f"## Random fault mixes: {len(sw)} schedules x {n_it} items (`FaultSchedule.random(seed)`, "
                f"seeds 0-{len(sw) - 1}, new code)", ""]
        if len(sw) < args.sweep:
            out += [f"**{args.sweep} schedules asked, {len(sw)} ran** within the {args.budget_s:.0f} s budget "
                    f"(`--budget-s`).", ""]
        cols = [c for c, _ in FAULT_COLS + UNSEEN_COLS]
        out += _doc.table(["runs", "items"] + [lab for _, lab in FAULT_COLS + UNSEEN_COLS],
                          [[len(sw), len(sw) * n_it] + [f"{_sum(sw, c):.1f}" if c == "unseen_estimated"
                                                        else f"{_sum(sw, c):.0f}" for c in cols]])
        out += ["", f"Runs breaking the promise: {len(bad)} of {len(sw)}."]
        out += [f"- seed {r[1]}: {', '.join(r[3])} — {r[4]}" for r in bad[:15]]
    return out


if __name__ == "__main__":
    main()
