"""Clock, queues, policy timing and the belt tracker against hand-computed references."""

import numpy as np
import pytest

from fovea.core import ClassResult, Detections
from fovea.errors import ConfigError
from fovea.line.clock import BoundedQueue, SimClock
from fovea.line.config import LineConfig
from fovea.line.policy import combine_votes, decide, gate_times
from fovea.line.tracker import BeltTracker, ObjectRecord

NAMES = ("good", "damaged", "box")


def vote(p):
    return ClassResult(probs=np.asarray(p, np.float32), class_names=NAMES)


# ------------------------------------------------------------------ queues and clock
def test_queue_policies():
    q = BoundedQueue("f", 2, "drop_oldest")
    assert [q.put(i) for i in range(4)] == [None, None, 0, 1]
    assert (q.get(), q.get(), q.get(), q.dropped) == (2, 3, None, 2)
    q = BoundedQueue("f", 2, "drop_newest")
    assert [q.put(i) for i in range(4)] == [None, None, 2, 3]
    assert (q.get(), q.get(), q.dropped) == (0, 1, 2)
    q = BoundedQueue("f", 1, "block")
    q.put("a")
    assert q.put("b", timeout=0.01) == "b" and q.dropped == 1
    with pytest.raises(ConfigError):
        BoundedQueue("f", 1, "latest")


def test_simclock_timers_run_in_order_without_drift():
    c = SimClock()
    seen = []
    c.call_every(0.1, lambda: seen.append(("tick", round(c.now(), 9))))
    c.call_at(0.25, lambda: seen.append(("once", c.now())))
    c.advance_to(0.35)
    assert seen == [("tick", 0.0), ("tick", 0.1), ("tick", 0.2), ("once", 0.25), ("tick", 0.3)]
    n = []
    c2 = SimClock()
    c2.call_every(0.1, lambda: n.append(c2.now()))
    c2.advance_to(1000.0)
    assert n[-1] == 1000.0 and len(n) == 10_001
    c3 = SimClock()
    c3.call_at(1.0, lambda: c3.sleep(0.5))
    with pytest.raises(ConfigError):
        c3.advance_to(2.0)


# ------------------------------------------------------------------ policy
def cfg(**kw):
    base = dict(belt_speed_mm_s=400.0, gate_distance_mm={1: 700.0, 2: 800.0}, actuation_s=0.1, margin_s=0.05,
                decision_x_mm=300.0)
    base.update(kw)
    return LineConfig(**base)


def rec(x=300.0, half=35.0, t=10.0, votes=()):
    r = ObjectRecord("o1", t, t, x, 100.0, half, sightings=len(votes) or 1)
    r.votes = [vote(v) for v in votes]
    return r


def test_gate_times_match_the_issue_formula():
    c = cfg()
    t_commit, t_open, hold = gate_times(rec(), 700.0, 400.0, c, link_p99_s=0.01)
    # t_commit = t_capture + (D - x_front)/v - actuation - link_p99 - margin, x_front = 300 + 35
    assert t_commit == pytest.approx(10 + (700 - 335) / 400 - 0.1 - 0.01 - 0.05)
    assert t_open == pytest.approx(10 + (700 - 335) / 400 - 0.1 - 0.05)
    # hold until the back edge (x = 265) passed the gate plus the margin
    assert t_open + hold == pytest.approx(10 + (700 - 265) / 400 + 0.05)


def test_combine_votes_mean_probability():
    name, conf, margin, agree = combine_votes([vote([0.9, 0.1, 0]), vote([0.6, 0.3, 0.1]), vote([0.2, 0.7, 0.1])])
    assert name == "good"
    assert conf == pytest.approx((0.9 + 0.6 + 0.2) / 3)
    assert margin == pytest.approx((0.9 + 0.6 + 0.2) / 3 - (0.1 + 0.3 + 0.7) / 3)
    assert agree == pytest.approx(2 / 3)


def test_policy_needs_positive_on_time_single_object_evidence():
    c = cfg()
    good = [[0.95, 0.04, 0.01]] * 3
    d = decide(rec(votes=good), [], 10.0, 400.0, c, 0.01)
    assert (d.lane, d.gate, d.reason) == ("good", 1, "evidence")
    d = decide(rec(votes=good), [], d.t_commit + 1e-3, 400.0, c, 0.01)
    assert (d.lane, d.reason) == ("default", "late")
    assert decide(rec(votes=good[:1]), [], 10.0, 400.0, c, 0.01).reason == "insufficient_evidence"
    assert decide(rec(votes=good), ["o2"], 10.0, 400.0, c, 0.01).reason == "too_close"
    r = rec(votes=good)
    r.flags.add("id_switch")
    assert decide(r, [], 10.0, 400.0, c, 0.01).reason == "id_switch"
    assert decide(rec(votes=[[0.55, 0.45, 0]] * 3), [], 10.0, 400.0, c, 0.01).reason == "low_confidence"
    assert decide(rec(votes=[[0.1, 0.1, 0.8]] * 3), [], 10.0, 400.0, c, 0.01).reason == "class_routes_default"
    d = decide(rec(votes=[[0.05, 0.9, 0.05]] * 3), [], 10.0, 400.0, c, 0.01)
    assert (d.lane, d.gate) == ("damaged", 2)


def test_config_rejects_unsafe_geometry():
    with pytest.raises(ConfigError):
        cfg(decision_x_mm=100.0)       # a too-close neighbour could still be outside the image
    with pytest.raises(ConfigError):
        cfg(lanes={"good": 3})
    with pytest.raises(ConfigError):
        cfg(gate_distance_mm={1: 320.0, 2: 800.0})


# ------------------------------------------------------------------ tracker
def dets(xs_px, ys_px=None, tids=None, r=12):
    ys_px = ys_px or [40] * len(xs_px)
    xyxy = [[x - r, y - r, x + r, y + r] for x, y in zip(xs_px, ys_px)]
    return Detections(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4), tracker_id=tids,
                      data={"solidity": np.ones(len(xs_px), np.float32)})


def test_tracker_one_record_per_object_through_dropouts_and_id_switches():
    c = cfg(mm_per_px=2.5, fps=10.0)
    tr = BeltTracker(c)
    v_px = 400.0 / 2.5 / 10          # 16 px per frame
    for k in range(6):
        t = k / 10
        if k in (2, 3):              # detector dropout: two frames with nothing
            tr.update(t, Detections.empty(), 160, [])
            continue
        tids = [7, 8] if k < 4 else [8, 7]      # the external tracker swaps ids at frame 4
        tr.update(t, dets([14 + v_px * k, 50 + v_px * k], tids=tids), 160, [None, None])
    recs = tr.active()
    assert len(recs) == 2
    assert all(r.sightings == 4 and r.max_misses == 2 for r in recs)
    assert sorted(r.x_mm for r in recs) == pytest.approx([(14 + v_px * 5) * 2.5, (50 + v_px * 5) * 2.5])
    assert all({"track_gap", "id_switch"} <= r.flags for r in recs)


def test_tracker_flags_a_merged_blob():
    c = cfg(mm_per_px=2.5, fps=10.0)
    tr = BeltTracker(c)
    tr.update(0.0, dets([40, 70]), 160, [None, None])
    tr.update(0.1, dets([72]).__class__(xyxy=np.array([[44, 28, 100, 52]], np.float32)), 160, [None])
    assert all("merged" in r.flags for r in tr.active())
