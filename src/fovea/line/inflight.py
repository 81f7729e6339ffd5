"""Gate commands in flight versus the belt the host now knows: pure checks used by the runner.

A command (`FireCommand`) was timed on the speed of its moment: the item's centre should cross
its gate at t_plan = t_open + (actuation + hold) / 2, and the gate is fully open for
(hold - actuation) / 2 either side. When the belt speed changes after the command was sent, the
item now crosses at t_anchor + (D - x_anchor) / v_new, where (t_anchor, x_anchor) is where the
new speed began to apply to it (`BeltTracker.position_after_change`). The change's onset is only
known to lie between two frames (or the two ends of a blind interval), so every check runs at
both ends and keeps the worst; the speed's own rel_err and trend widen the result.

- `off_window`: items that may now miss their own window (the host cannot know their bin);
- `swing_conflicts`: items that will pass a gate while a swing timed for another item moves or
  holds it open (they go where that swing sends them, not where the host decided);
- `unverified`: items crossing while no speed has been measured for longer than
  speed_max_age_s, or after frames began to contradict the predictions (`FrameTimeGuard` doubt):
  a change nobody saw may have moved them (the runner waits for the next measurement, or the end
  of the doubt, before it logs their outcome);
- `crossing_envelope`: when an item crossed its gate, from its last sighting and the lowest and
  highest belt speed measured since (the runner judges a DONE against this, not against the plan);
- `swings_met_on_default_route`: for an item whose own command was cancelled (it now passes every
  gate), the live swings it may still meet (its outcome is then unknown, not default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class BeltNow:
    """What the belt is believed to do now: speed v (old: v_old), the possible onsets of the
    latest change (one value when nothing changed), the speed's rel_err and trend."""

    now: float
    v: float
    v_old: float
    onsets: tuple[float, ...]
    rel_err: float
    accel_mm_s2: float = 0.0


def crossing_times(tracker, rec, gate_mm: float, belt: BeltNow) -> tuple[float, float, float]:
    """(earliest, latest, T): when `rec`'s centre crosses belt position gate_mm over the possible
    onsets (before an onset the old speed applied), and the longest time T still to travel."""
    lo, hi, T = math.inf, -math.inf, 0.0
    for onset in belt.onsets:
        anchor, x_anchor = tracker.position_after_change(rec, belt.now, onset, belt.v)
        rest = gate_mm - x_anchor
        t_cross = anchor + rest / (belt.v_old if rest < 0 else belt.v)
        lo, hi, T = min(lo, t_cross), max(hi, t_cross), max(T, max(rest, 0.0) / belt.v)
    return lo, hi, T


def _unsure_s(belt: BeltNow, T: float) -> float:
    return belt.rel_err * T + 0.5 * abs(belt.accel_mm_s2) * T * T / belt.v


def _scheduled(tracker, fires, *skip_flags: str):
    for rec in tracker.records.values():
        cmd = fires.get(rec.rid)
        if rec.state == "SCHEDULED" and not rec.final and cmd is not None and not rec.flags.intersection(skip_flags):
            yield rec, cmd


def off_window(tracker, fires, cfg, belt: BeltNow) -> list[str]:
    """rids of scheduled items whose crossing may now fall outside 90 % of their open window."""
    act, out = cfg.actuation_s, []
    for rec, cmd in _scheduled(tracker, fires, "speed_change_in_flight"):
        t_plan = cmd.t_open + (act + cmd.hold_s) / 2
        lo, hi, T = crossing_times(tracker, rec, cfg.gate_distance_mm[cmd.gate], belt)
        dev = max(abs(lo - t_plan), abs(hi - t_plan))
        if dev + _unsure_s(belt, T) >= 0.9 * (cmd.hold_s - act) / 2:
            out.append(rec.rid)
    return out


def swing_conflicts(tracker, fires, cfg, belt: BeltNow) -> list[list]:
    """[[rid, owner rid, gate], ...]: items that meet another item's swing on a gate they pass
    (gates up to their own; all gates for a default item), by their whole length and the uncertainty."""
    act = cfg.actuation_s
    swings = [(c.gate, c.t_open, c.t_open + c.hold_s + act, rid) for rid, c in fires.items()
              if rid in tracker.records and not tracker.records[rid].final]
    out = []
    for rec in tracker.records.values():
        if rec.final or "swing_conflict" in rec.flags:
            continue
        own = cfg.gate_distance_mm[rec.gate] if rec.gate is not None else math.inf
        for gate, t0, t1, owner in swings:
            gate_mm = cfg.gate_distance_mm[gate]
            if owner == rec.rid or gate_mm > own:
                continue
            lo, hi, T = crossing_times(tracker, rec, gate_mm, belt)
            pad = rec.half_len_mm / belt.v + _unsure_s(belt, T)
            if hi + pad >= t0 and lo - pad <= t1 and hi + pad > belt.now - 1.0:
                out.append([rec.rid, owner, gate])
                break
    return out


def unverified(tracker, fires, cfg, now: float, doubt_from: float | None = None) -> list:
    """Scheduled records whose window has begun while the planned crossing lies more than
    speed_max_age_s after the newest speed sample, or after `doubt_from` (frames contradict the
    predictions since then; None: they do not)."""
    t_sample, act = tracker.speed.t_sample, cfg.actuation_s
    stale = now - t_sample > cfg.speed_max_age_s
    if not stale and doubt_from is None:
        return []
    out = []
    for rec, cmd in _scheduled(tracker, fires, "speed_change_in_flight", "position_in_doubt"):
        t_plan = cmd.t_open + (act + cmd.hold_s) / 2
        if now >= cmd.t_open and ((stale and t_plan - t_sample > cfg.speed_max_age_s)
                                  or (doubt_from is not None and t_plan > doubt_from)):
            out.append(rec)
    return out


def crossing_envelope(tracker, rec, gate_mm: float, now: float) -> tuple[float, float]:
    """(earliest, latest) time `rec`'s centre crossed (or crosses) belt position gate_mm: from where
    it was last seen, at the highest and the lowest belt speed measured since (`speed_range`).
    Whatever the belt did in between, its mean speed over that travel lies between the two, so the
    true crossing does too. With measure_speed=False the gates are timed on the configured speed,
    but the estimator still runs: the envelope spans the configured speed and whatever it measured
    since, so a belt that changed speed after the decision makes the crossing uncertain (a DONE
    then cannot claim the lane) instead of being assumed away."""
    v = tracker.speed_mm_s
    t_seen = rec.t_seen if rec.t_seen == rec.t_seen else rec.t_last
    _, x_seen = tracker.position_after_change(rec, now, t_seen, v)
    rest = gate_mm - x_seen
    v_lo, v_hi = tracker.speed.speed_range(t_seen, max(now, t_seen))
    if not tracker.cfg.measure_speed:
        measured = tracker.speed.history and tracker.speed.history[-1][0] >= t_seen
        v_lo, v_hi = (min(v, v_lo), max(v, v_hi)) if measured else (v, v)
    if rest <= 0:
        return t_seen + rest / v_lo, t_seen + rest / v_hi
    return t_seen + rest / v_hi, t_seen + rest / v_lo


def swings_met_on_default_route(tracker, rec, fires, cfg, now: float, skip=(),
                                speed_err: float = 0.05) -> list[str]:
    """Records whose gate swing an item sent to the default route (no swing of its own: it passes
    every gate) may still meet, from its dead-reckoned position at the current speed; `skip`: owners
    whose command never opens (cancelled). The crossing is padded by the item's half length, the
    margin and `speed_err` (relative) of the time still to travel."""
    v, act = tracker.speed_mm_s, cfg.actuation_s
    x = rec.x_at(now, v)
    out = []
    for owner, c in fires.items():
        o = tracker.records.get(owner)
        if owner == rec.rid or owner in skip or o is None or o.final:
            continue
        rest = cfg.gate_distance_mm[c.gate] - x
        if rest < -rec.half_len_mm:
            continue                                   # the item is past that gate
        t_cross = now + rest / v
        pad = rec.half_len_mm / v + cfg.margin_s + speed_err * max(rest, 0.0) / v
        if t_cross + pad >= c.t_open and t_cross - pad <= c.t_open + c.hold_s + act:
            out.append(owner)
    return out
