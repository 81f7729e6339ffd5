"""Decision policy: a pure function of (record, neighbours, time, config) -> lane or default.

"Good" (any lane) needs positive, on-time evidence about a single object: enough sightings
(min_sightings frames) and agreeing votes (share >= min_agreement) whose mean probability has
enough confidence and margin, no ambiguity flag, no neighbour within the minimum gap, a belt
speed that may be trusted, and a commit time before the deadline

    t_commit = t_capture + (gate_distance - x_front) / belt_speed - actuation - link_p99 - margin.

A measured speed is trusted (`fovea.line.speed.SpeedTrust`) only when settled and recent, and
only if the position error it can cause on the way to the gate, (gate - x) * rel_err plus
|accel| T^2 / 2 for a speed still trending (T the time to the gate), stays within
`speed_err_frac` of the gate window's slack (half the item's length + margin * v): otherwise the
item's deadline rests on a guess and it takes the default route (`speed_unsettled`,
`speed_stale`, `speed_unmeasured`, `speed_uncertain`; the runner also passes an untrusted speed,
`frame_time_doubt`, while frames contradict the tracker's predictions).

Everything else takes the default route (no gate moves; de-energised gates are closed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.line.config import LineConfig
from fovea.line.speed import SpeedTrust
from fovea.line.tracker import ObjectRecord

POLICY_NAME = "evidence"     # positive, on-time evidence or the default route (this module)
POLICY_VERSION = "3"         # 3: no lane while frames contradict the belt (reason frame_time_doubt)
DEFAULT = "default"


@dataclass
class Decision:
    """The one committed decision for a record."""

    lane: str                 # a class name routed to `gate`, or "default"
    gate: int | None
    reason: str               # "evidence" for a lane; why, for the default route
    class_name: str = ""
    confidence: float = float("nan")
    margin: float = float("nan")
    votes: int = 0
    t_commit: float = float("nan")
    t_open: float = float("nan")
    hold_s: float = float("nan")


def gate_times(rec: ObjectRecord, gate_mm: float, speed: float, cfg: LineConfig, link_p99_s: float):
    """(t_commit, t_open, hold_s) for sending `rec` through a gate at belt distance gate_mm."""
    x_front = rec.x_mm + rec.half_len_mm
    x_back = rec.x_mm - rec.half_len_mm
    t_front = rec.t_last + (gate_mm - x_front) / speed
    t_back = rec.t_last + (gate_mm - x_back) / speed
    t_open = t_front - cfg.actuation_s - cfg.margin_s
    hold = (t_back + cfg.margin_s) - t_open
    return t_open - link_p99_s, t_open, hold


def deadline(rec: ObjectRecord, speed: float, cfg: LineConfig, link_p99_s: float) -> float:
    """Earliest commit deadline over the gates (a record must be decided before the first one)."""
    return min(gate_times(rec, d, speed, cfg, link_p99_s)[0] for d in cfg.gate_distance_mm.values())


def combine_votes(votes) -> tuple[str, float, float, float]:
    """(class_name, mean probability of it, margin of the mean probabilities, share of agreeing votes)."""
    probs = np.mean([np.asarray(v.probs, np.float64) for v in votes], axis=0)
    order = np.argsort(probs)[::-1]
    k = int(order[0])
    names = votes[0].class_names
    name = names[k] if names else str(k)
    margin = float(probs[k] - (probs[order[1]] if len(probs) > 1 else 0.0))
    agree = sum(v.class_id == k for v in votes) / len(votes)
    return name, float(probs[k]), margin, float(agree)


def speed_error_mm(rec: ObjectRecord, gate_mm: float, now: float, speed: float, rel_err: float,
                   accel_mm_s2: float = 0.0) -> float:
    """Position error at the gate that a relative speed error rel_err and a speed trend accel_mm_s2
    cause for `rec` from `now`: travel * rel_err + |a| T^2 / 2 with T = travel / speed."""
    travel = max(gate_mm - rec.x_at(now, speed), 0.0)
    return travel * rel_err + 0.5 * abs(accel_mm_s2) * (travel / speed) ** 2


def gate_slack_mm(rec: ObjectRecord, speed: float, cfg: LineConfig) -> float:
    """How far the item's centre may be off at the gate and still cross it fully open (mm)."""
    return rec.half_len_mm + cfg.margin_s * speed


def decide(rec: ObjectRecord, too_close: list[str], now: float, speed: float, cfg: LineConfig,
           link_p99_s: float, speed_known: bool | SpeedTrust = True) -> Decision:
    """The policy. Pure: same inputs, same decision. speed_known: False or an untrusted SpeedTrust
    (belt speed not measured yet, changing, or too old) allows no lane; a trusted SpeedTrust's
    rel_err is checked against the gate window's slack."""
    trust = speed_known if isinstance(speed_known, SpeedTrust) else SpeedTrust(
        speed, bool(speed_known), 0.0 if speed_known else float("inf"), "" if speed_known else "speed_unmeasured")
    t_dead = deadline(rec, speed, cfg, link_p99_s)

    def default(reason: str, **kw) -> Decision:
        return Decision(DEFAULT, None, reason, t_commit=t_dead, **kw)

    for flag in ("merged", "not_single", "id_switch", "track_gap"):
        if flag in rec.flags:
            return default(flag)
    if now > t_dead:
        return default("late")
    if not trust.known:
        return default(trust.reason or "speed_unmeasured")
    if len(rec.votes) < cfg.min_votes:
        return default("insufficient_evidence", votes=len(rec.votes))
    if rec.sightings < cfg.min_sightings:
        return default("insufficient_sightings", votes=len(rec.votes))
    name, conf, margin, agree = combine_votes(rec.votes)
    kw = dict(class_name=name, confidence=conf, margin=margin, votes=len(rec.votes))
    if name not in cfg.lanes:
        return default("class_routes_default", **kw)
    if agree < cfg.min_agreement:
        return default("votes_disagree", **kw)
    if conf < cfg.min_confidence:
        return default("low_confidence", **kw)
    if margin < cfg.min_margin:
        return default("low_margin", **kw)
    if too_close:
        return default("too_close", **kw)
    gate = cfg.lanes[name]
    gate_mm = cfg.gate_distance_mm[gate]
    if speed_error_mm(rec, gate_mm, now, speed, trust.rel_err, trust.accel_mm_s2) > (
            cfg.speed_err_frac * gate_slack_mm(rec, speed, cfg)):
        return default("speed_uncertain", **kw)
    t_commit, t_open, hold = gate_times(rec, gate_mm, speed, cfg, link_p99_s)
    if now > t_commit:
        return default("late", **kw)
    return Decision(name, gate, "evidence", t_commit=t_commit, t_open=t_open, hold_s=hold, **kw)
