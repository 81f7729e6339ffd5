"""Seeded random fault schedules for the whole line, judged by the physical audit.

A `FaultSchedule` is plain data (families, times, parameters) drawn from a seed, so a failing
seed reproduces exactly and prints as a readable list. `run_schedule` plays it through the REAL
runner on a simulated clock with the firmware emulator behind the real protocol client
(`SimulatedActuator` = `ProtocolActuator` over `EmulatorLink`), then audits where every item
physically went (`line.audit`). Every run has an end: a simulated-time cap (the runner logs
`run_time_limit`) and a wall-time cap (the run is aborted); either counts as a run that did not
end, never as a hang.

Families (`FAMILIES`): belt speed steps and ramps, MCU resets at random moments and mid-swing,
link drops and flapping, lost and delayed lines in either direction, slow (every k-th call over
budget) and stalled inference, stale frames with fresh stamps, stamps stepped back or repeated,
touching and edge-cut items, and the scripted faults of tests/line/test_line_faults.py (black and
frozen frames, detector dropouts, tracker id switches; link drop, reset, stall and touching are
families above).

    python -m fovea.line.fuzz --seeds 0:20 --items 300
"""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fovea.errors import ConfigError, FoveaError
from fovea.synth.conveyor import Conveyor, ConveyorConfig

FAMILIES = ("speed_step", "speed_ramp", "mcu_reset", "mcu_reset_mid_swing", "link_drop", "link_flap",
            "line_lost", "line_delayed", "slow_inference", "stalled_inference", "stale_frame", "stamp_back",
            "stamp_repeat", "touching", "edge_cut", "black_frames", "frozen_frames", "detector_dropout",
            "id_switch")
TX_VERBS = ("FIRE", "PING", "ARM", "HELLO", None)
RX_VERBS = ("ACK", "DONE", "NAK", "PONG", "READY", "STATE", None)
# the done-when counts (issue 11): each must be 0 in every fuzzed run
PROMISE = ("two_outcomes", "double_actuations", "not_ended", "logged_ne_bin", "unseen_uncounted")


class FuzzTimeout(FoveaError):
    """A fuzzed run used up its wall-time cap (it would have hung)."""


@dataclass
class Fault:
    """One scheduled fault: a family, a simulated time (s from the run start) and its parameters."""

    family: str
    t_s: float
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        kw = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"{self.family}@{self.t_s:.2f}s({kw})"


def _short(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"[{_short(v[0])}, {_short(v[1])}, ... {len(v)} values]"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(_short(x)) for x in v) + "]"
    return v


@dataclass
class FaultSchedule:
    """A reproducible mix of faults for one run of `n_items` items (seeded; see `random`)."""

    seed: int
    n_items: int = 300
    faults: list[Fault] = field(default_factory=list)
    conveyor: dict[str, Any] = field(default_factory=dict)     # ConveyorConfig overrides (profile, touching)
    line: dict[str, Any] = field(default_factory=dict)         # LineConfig overrides

    @property
    def families(self) -> list[str]:
        return sorted({f.family for f in self.faults} | {k for k in ("touching", "edge_cut")
                                                          if self.conveyor.get(f"p_{k}", 0) > 0}
                      | ({"speed_step"} if any(r == 0 for _, _, r in self.conveyor.get("speed_profile", ())) else set())
                      | ({"speed_ramp"} if any(r > 0 for _, _, r in self.conveyor.get("speed_profile", ())) else set()))

    def __str__(self) -> str:
        conv = ", ".join(f"{k}={_short(v)}" for k, v in self.conveyor.items())
        return (f"seed {self.seed}, {self.n_items} items, conveyor({conv}), line({self.line}): "
                + "; ".join(str(f) for f in self.faults))

    @classmethod
    def random(cls, seed: int, n_items: int = 300, families: tuple[str, ...] | None = None,
               n_families: tuple[int, int] = (1, 4), measure_speed: bool = True) -> "FaultSchedule":
        """Draw a schedule: `families` fixed, or 1-4 families drawn from FAMILIES; times spread over the run."""
        rng = np.random.default_rng([seed, 1101])
        if families is None:
            k = int(rng.integers(n_families[0], n_families[1] + 1))
            families = tuple(rng.choice(FAMILIES, size=k, replace=False))
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise ConfigError(f"unknown fault families {bad}; choose from {FAMILIES}")
        sched = cls(seed=seed, n_items=n_items, line={"measure_speed": measure_speed})
        base = ConveyorConfig(n_objects=n_items, appearance="simple", seed=seed)
        nominal_s = Conveyor(base).duration_s(base.view_mm + 600)
        lo, hi = 3.0, max(4.0, nominal_s - 4.0)      # after the belt warm-up, before the tail
        for fam in families:
            _draw(fam, rng, sched, lo, hi, base.fps)
        sched.faults.sort(key=lambda f: f.t_s)
        return sched


def _draw(fam: str, rng: np.random.Generator, s: FaultSchedule, lo: float, hi: float, fps: float) -> None:
    """Append one family's concrete faults (or conveyor settings) to schedule s."""
    u = lambda a, b: float(rng.uniform(a, b))          # noqa: E731
    t = lambda: u(lo, hi)                               # noqa: E731
    n = lambda a, b: int(rng.integers(a, b + 1))        # noqa: E731
    if fam in ("speed_step", "speed_ramp"):
        prof = list(s.conveyor.get("speed_profile", ()))
        n_changes = n(1, 3)
        times = np.sort(rng.uniform(lo, hi, n_changes))
        t_free = prof[-1][0] + prof[-1][2] if prof else -1.0
        for tc in times:
            ramp = 0.0 if fam == "speed_step" else u(0.5, 2.0)
            tc = max(float(tc), t_free + 0.5)
            prof.append((tc, u(250.0, 550.0), ramp))
            t_free = tc + ramp
        s.conveyor["speed_profile"] = tuple(sorted(prof))
        return
    if fam == "touching":
        s.conveyor["p_touching"] = u(0.03, 0.15)
        return
    if fam == "edge_cut":
        s.conveyor["p_edge_cut"] = u(0.1, 0.3)
        return
    if fam == "mcu_reset":
        for _ in range(n(1, 3)):
            s.faults.append(Fault(fam, t(), {"power_loss": bool(rng.random() < 0.3)}))
    elif fam == "mcu_reset_mid_swing":
        for _ in range(n(1, 2)):
            s.faults.append(Fault(fam, t(), {"power_loss": bool(rng.random() < 0.3), "into_swing_s": u(0.0, 0.1)}))
    elif fam == "link_drop":
        for _ in range(n(1, 2)):
            s.faults.append(Fault(fam, t(), {"down_s": u(0.1, 2.0)}))
    elif fam == "link_flap":
        t0 = t()
        ups_downs = [round(u(0.3, 0.7), 3) for _ in range(2 * n(2, 5))]
        s.faults.append(Fault(fam, t0, {"down_up_s": ups_downs}))
    elif fam in ("line_lost", "line_delayed"):
        for _ in range(n(1, 3)):
            d = "tx" if rng.random() < 0.5 else "rx"
            verbs = TX_VERBS if d == "tx" else RX_VERBS
            verb = verbs[int(rng.integers(len(verbs)))]
            p = {"direction": d, "verb": verb, "count": n(1, 2)}
            if fam == "line_delayed":
                p["delay_s"] = u(0.02, 0.4)
            s.faults.append(Fault(fam, t(), p))
    elif fam == "slow_inference":
        s.faults.append(Fault(fam, 0.0, {"every": n(3, 7), "x_budget": u(1.2, 2.5)}))
    elif fam == "stalled_inference":
        for _ in range(n(1, 2)):
            s.faults.append(Fault(fam, t(), {"stall_s": u(0.3, 2.0)}))
    elif fam in ("stale_frame", "stamp_back", "stamp_repeat"):
        t0 = t()
        frames = sorted({int(round(x * fps)) for x in rng.uniform(t0, min(t0 + u(2, 15), hi + 3), n(3, 30))})
        p: dict[str, Any] = {"frames": frames}
        if fam == "stale_frame":
            p["lag"] = [n(1, 3) for _ in frames]
        elif fam == "stamp_back":
            p["shift_s"] = [-u(0.05, 0.3) for _ in frames]
        s.faults.append(Fault(fam, t0, p))
    elif fam in ("black_frames", "frozen_frames", "detector_dropout"):
        for _ in range(n(1, 3)):
            t0 = t()
            k0 = int(round(t0 * fps))
            s.faults.append(Fault(fam, t0, {"frames": list(range(k0, k0 + n(1, 4)))}))
    elif fam == "id_switch":
        s.faults.append(Fault(fam, t(), {}))


# ---------------------------------------------------------------------------------------- running
@dataclass
class FuzzResult:
    """Counts of one fuzzed run (the audit's, plus whether the run ended by itself)."""

    schedule: FaultSchedule
    ended: bool
    counts: dict[str, float]
    faults_logged: dict[str, int]
    default_reasons: dict[str, int]
    wall_s: float
    sim_s: float
    error: str = ""
    audit: Any = None
    run: Any = None          # the SimResult, when run_schedule(keep_run=True)

    def violations(self) -> list[str]:
        """The issue's done-when counts that are not 0 in this run."""
        return [f"{k}={self.counts[k]:g}" for k in PROMISE if self.counts.get(k, 0)]

    def line(self) -> str:
        c = self.counts
        return (f"seed {self.schedule.seed} [{', '.join(self.schedule.families)}]: "
                f"{'ended' if self.ended else 'DID NOT END'} in {self.sim_s:.0f} sim-s ({self.wall_s:.1f} s wall); "
                + ", ".join(f"{k} {c[k]:g}" for k in c) + (f"; error {self.error}" if self.error else ""))


def _line_config(conv_cfg, overrides):
    from fovea.line.sim import line_config_for

    return line_config_for(conv_cfg, **overrides)


def _reset(emulator, t: float, power_loss: bool) -> None:
    """Reset the emulated MCU; `power_loss` where the emulator supports it."""
    if "power_loss" in inspect.signature(emulator.reset).parameters:
        emulator.reset(t, power_loss=power_loss)
    else:
        emulator.reset(t)


def _fault_fns(sched: FaultSchedule, conv: Conveyor, cfg) -> tuple[list, dict, dict, dict, list, Any]:
    """(timed callbacks, source_faults, source_kw, predictor_kw, link rules, localizer) for the schedule."""
    from fovea.line.doubles import FaultyLocalizer, LineFault
    from fovea.line.localize import BackgroundSubtractor

    timed: list = []
    src: dict[str, dict] = {"stale": {}, "stamp_shift_s": {}, "stamp_repeat": set()}
    pred: dict[str, Any] = {"stalls": []}
    rules: list = []
    loc_kw: dict[str, Any] = {"dropout_frames": set()}
    black, frozen = set(), set()
    fps = conv.config.fps
    for f in sched.faults:
        p = f.params
        if f.family == "mcu_reset":
            timed.append((f.t_s, lambda ctx, pl=p["power_loss"]: _reset(ctx["actuator"].emulator,
                                                                         ctx["clock"].now(), pl)))
        elif f.family == "mcu_reset_mid_swing":
            timed.append((f.t_s, lambda ctx, p=p: _reset_in_swing(ctx, p["power_loss"], p["into_swing_s"])))
        elif f.family == "link_drop":
            timed.append((f.t_s, lambda ctx: ctx["actuator"].link_port.set_down(True)))
            timed.append((f.t_s + p["down_s"], lambda ctx: ctx["actuator"].link_port.set_down(False)))
        elif f.family == "link_flap":
            t = f.t_s
            for i, d in enumerate(p["down_up_s"]):
                timed.append((t, lambda ctx, down=(i % 2 == 0): ctx["actuator"].link_port.set_down(down)))
                t += d
            timed.append((t, lambda ctx: ctx["actuator"].link_port.set_down(False)))
        elif f.family == "line_lost":
            rules.append(LineFault(p["direction"], p["verb"], f.t_s, count=p["count"]))
        elif f.family == "line_delayed":
            rules.append(LineFault(p["direction"], p["verb"], f.t_s, action="delay", delay_s=p["delay_s"],
                                   count=p["count"]))
        elif f.family == "slow_inference":
            budget = cfg.staleness_budget_s(cfg.link_floor_s)
            pred.update(slow_every=p["every"], slow_s=p["x_budget"] * budget)
        elif f.family == "stalled_inference":
            pred["stalls"].append((f.t_s, p["stall_s"]))
        elif f.family == "stale_frame":
            src["stale"].update(zip(p["frames"], p["lag"]))
        elif f.family == "stamp_back":
            src["stamp_shift_s"].update(zip(p["frames"], p["shift_s"]))
        elif f.family == "stamp_repeat":
            src["stamp_repeat"].update(p["frames"])
        elif f.family == "black_frames":
            black.update(p["frames"])
        elif f.family == "frozen_frames":
            frozen.update(p["frames"])
        elif f.family == "detector_dropout":
            loc_kw["dropout_frames"].update(p["frames"])
        elif f.family == "id_switch":          # the first frame from t_s on with two items in view
            k, k_end = int(round(f.t_s * fps)), int(conv.duration_s() * fps)
            while k <= k_end and len(conv.visible(k / fps)) < 2:
                k += 1
            if k <= k_end:
                a, b = conv.visible(k / fps)[:2]
                loc_kw.update(tracker_ids=True, swap_ids_at=(k, a, b))
    localizer = None
    if loc_kw["dropout_frames"] or loc_kw.get("tracker_ids"):
        localizer = FaultyLocalizer(BackgroundSubtractor(threshold=cfg.bg_threshold, min_area_px=cfg.min_area_px,
                                                         warmup_frames=cfg.warmup_frames), **loc_kw)
    source_faults = {k: v for k, v in src.items() if v}
    pred = {k: v for k, v in pred.items() if v}
    return timed, source_faults, {"black_frames": black, "frozen_frames": frozen}, pred, rules, localizer


def _reset_in_swing(ctx, power_loss: bool, into_s: float) -> None:
    """From now on, reset the MCU `into_s` seconds after the next gate opening (checked every 5 ms)."""
    clock, emu = ctx["clock"], ctx["actuator"].emulator
    state = {"armed_at": None}

    def check():
        now = clock.now()
        if state["armed_at"] is None:
            if getattr(emu, "_open_swing", None):
                state["armed_at"] = now + into_s
            elif now - t_start > 20.0:
                _reset(emu, now, power_loss)       # no swing came: reset anyway
                return
        if state["armed_at"] is not None and now >= state["armed_at"]:
            _reset(emu, now, power_loss)
            return
        clock.call_at(now + 0.005, check)

    t_start = clock.now()
    check()


def _wall_cap(ctx, wall_deadline: float) -> None:
    """A timer that aborts the run (FuzzTimeout) once the wall-clock deadline passes."""
    clock = ctx["clock"]

    def check():
        if time.perf_counter() > wall_deadline:
            raise FuzzTimeout(f"run exceeded its wall-time cap at simulated t={clock.now():.1f} s")
        clock.call_at(clock.now() + 0.5, check)

    check()


@contextlib.contextmanager
def _alarm(wall_s: float):
    """Raise FuzzTimeout after wall_s seconds even inside a busy loop (SIGALRM; main thread on Unix).

    The SimClock timer of `_wall_cap` cannot fire while a stage loops without advancing time; the
    signal can. Elsewhere (other threads, no setitimer) only the timer cap applies."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise FuzzTimeout(f"run exceeded its wall-time cap of {wall_s} s (stuck without advancing time?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(wall_s, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_schedule(schedule: FaultSchedule, max_sim_extra_s: float = 60.0, max_wall_s: float = 300.0,
                 predictor_kw: dict | None = None, keep_run: bool = False) -> FuzzResult:
    """Play one schedule through the real runner + emulator on a SimClock; audit it physically.

    The simulated run is capped at the conveyor's duration + `max_sim_extra_s`, the wall time at
    `max_wall_s`; a run stopped by either cap did not end.
    """
    from fovea.line.sim import simulate

    conv = Conveyor(ConveyorConfig(n_objects=schedule.n_items, appearance="simple", seed=schedule.seed,
                                   **schedule.conveyor))
    cfg = _line_config(conv.config, schedule.line)
    timed, source_faults, source_kw, pred, rules, localizer = _fault_fns(schedule, conv, cfg)
    source_kw = {k: v for k, v in source_kw.items() if v}
    t_wall = time.perf_counter()
    timed = timed + [(0.0, lambda ctx: _wall_cap(ctx, t_wall + max_wall_s))]
    max_sim = conv.duration_s(max(cfg.gate_distance_mm.values()) + 200) + max_sim_extra_s
    pkw = {"error_rate": 0.02, "seed": schedule.seed, **pred, **(predictor_kw or {})}
    try:
        with _alarm(max_wall_s):
            r = simulate(conv, config=cfg, localizer=localizer, source_kw=source_kw, faults=timed, predictor_kw=pkw,
                         max_time_s=max_sim, source_faults=source_faults or None, link_faults=rules or None,
                         actuator_seed=schedule.seed)
    except FuzzTimeout as exc:
        return FuzzResult(schedule, False, {"not_ended": 1}, {}, {}, time.perf_counter() - t_wall, float("nan"),
                          error=str(exc))
    wall = time.perf_counter() - t_wall
    ev = r.log.events
    faults = Counter(e["kind"] for e in ev if e["type"] == "fault")
    reasons = Counter(e["reason"] for e in ev if e["type"] == "outcome" and e["lane"] == "default")
    ended = faults.get("run_time_limit", 0) == 0
    a = r.audit
    counts = {
        "wrong_lane": sum(a.wrong_in_lane.values()), "two_outcomes": a.items_with_two_outcomes,
        "double_actuations": a.actuated_twice, "partial_hits": a.partial_hits,
        "logged_ne_bin": a.host_vs_physical_mismatch, "unseen": a.items_without_record,
        "unseen_uncounted": a.unseen_uncounted, "unseen_estimated": a.unseen_estimated,
        "unknown_flagged": a.flagged_unknown, "not_ended": int(not ended),
        "unresolved_at_shutdown": sum(v for k, v in reasons.items() if "shutdown" in k),
        "items": a.n_items, "sorted": sum(v for k, v in a.bins.items() if k != "default"),
    }
    return FuzzResult(schedule, ended, counts, dict(faults), dict(reasons), wall, r.runner.clock.now(), audit=a,
                      run=r if keep_run else None)


def sweep(seeds, n_items: int = 300, families: tuple[str, ...] | None = None, progress=None, **kw) -> list[FuzzResult]:
    """Run `FaultSchedule.random(seed, n_items, families)` for each seed."""
    out = []
    for s in seeds:
        res = run_schedule(FaultSchedule.random(int(s), n_items, families), **kw)
        out.append(res)
        if progress is not None:
            progress(res)
    return out


def totals(results: list[FuzzResult]) -> dict[str, float]:
    """Summed counts over runs (NaN estimates skipped) and the number of runs violating the promise."""
    keys = sorted({k for r in results for k in r.counts})
    tot = {k: float(np.nansum([r.counts.get(k, 0) for r in results])) for k in keys}
    tot["runs"] = len(results)
    tot["runs_violating"] = sum(1 for r in results if r.violations())
    return tot


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="fuzz the sorting line with seeded random fault schedules")
    ap.add_argument("--seeds", default="0:10", help="a:b range or comma list")
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--families", default=None, help="comma list (default: a random mix per seed)")
    args = ap.parse_args(argv)
    if ":" in args.seeds:
        a, b = args.seeds.split(":")
        seeds = range(int(a), int(b))
    else:
        seeds = [int(x) for x in args.seeds.split(",")]
    fams = tuple(args.families.split(",")) if args.families else None

    def show(r: FuzzResult) -> None:
        print(("FAIL " if r.violations() else "ok   ") + r.line(), flush=True)
        if r.violations():
            print("     schedule:", r.schedule, flush=True)

    res = sweep(seeds, args.items, fams, progress=show)
    print({k: (round(v, 1) if isinstance(v, float) and math.isfinite(v) else v) for k, v in totals(res).items()})
    return 1 if any(r.violations() for r in res) else 0


if __name__ == "__main__":
    raise SystemExit(main())
