"""Belt speed from tracked motion against closed-form belts: steps, outliers, mis-stamped frames, trust.

References are the belt kinematics themselves (x(t) = x0 + integral of a piecewise-constant speed),
rendered into pixel-quantized boxes the way a camera would see them; the estimator never sees the
truth. The issue's old estimator did not move for 2 s after a step and needed 3.5-5.75 s to come
within 5 %; these tests hold the new one to a few frames.
"""

import math

import numpy as np
import pytest

from fovea.core import Detections
from fovea.line.config import LineConfig
from fovea.line.policy import decide, gate_slack_mm, speed_error_mm
from fovea.line.speed import BeltSpeedEstimator, SpeedTrust
from fovea.line.tracker import BeltTracker, ObjectRecord

W_PX, MM_PX, FPS = 160, 2.5, 10.0


def belt_travel(t, steps, v0):
    """B(t) in mm for a belt at v0 that steps to v at each (t_s, v) in `steps` (closed form)."""
    b, t_prev, v = 0.0, 0.0, v0
    for ts, vs in steps:
        if t <= ts:
            break
        b += v * (ts - t_prev)
        t_prev, v = ts, vs
    return b + v * (t - t_prev)


def frame_dets(t, offsets_mm, steps, v0, half_mm=35.0, jitter_px=None, rng=None):
    """Pixel boxes of items at belt offsets s (centre x = B(t) - s), clipped by the image edges."""
    boxes = []
    for i, s in enumerate(offsets_mm):
        x = belt_travel(t, steps, v0) - s
        x0, x1 = round((x - half_mm) / MM_PX), round((x + half_mm) / MM_PX)
        if jitter_px is not None and i == jitter_px:
            d = int(rng.integers(-6, 7))
            x0, x1 = x0 + d, x1 + d
        x0, x1 = max(x0, 0), min(x1, W_PX)
        if x1 - x0 >= 3:
            boxes.append([x0, 30 + 5 * i, x1, 58 + 5 * i])
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy=xyxy, data={"solidity": np.ones(len(xyxy), np.float32)})


def run_belt(steps, v0=400.0, t_end=6.0, pitch_mm=130.0, jitter_item=None, **cfg_kw):
    """Track a stream of items on a belt with speed steps; returns (tracker, [(t, speed, trust)], events)."""
    cfg = LineConfig(mm_per_px=MM_PX, fps=FPS, belt_speed_mm_s=v0, measure_speed=True, **cfg_kw)
    tr = BeltTracker(cfg)
    offsets = [-100.0 + pitch_mm * k for k in range(int(t_end * 600 / pitch_mm) + 2)]
    rng = np.random.default_rng(0)
    trace, events = [], []
    for k in range(int(t_end * FPS) + 1):
        t = k / FPS
        d = frame_dets(t, offsets, steps, v0, jitter_px=jitter_item, rng=rng)
        tr.update(t, d, W_PX, [None] * len(d))
        events += tr.events
        tr.events = []
        trace.append((t, tr.speed_mm_s, tr.speed_trust(t)))
    return tr, trace, events


def test_estimate_follows_a_step_within_a_few_frames():
    t_step = 3.05                                   # between frames 30 and 31
    _, trace, events = run_belt([(t_step, 250.0)])
    before = [(t, v, tr) for t, v, tr in trace if 1.0 <= t < t_step]
    assert all(abs(v - 400.0) / 400.0 < 0.03 and tr.known for _, v, tr in before)
    changes = [e for k, e in events if k == "speed_change"]
    assert len(changes) == 1
    assert t_step < changes[0]["t_capture"] <= t_step + 0.3 + 1e-9      # seen within 3 frames
    assert changes[0]["from_mm_s"] == pytest.approx(400.0, rel=0.03)
    # within 5 % of the new speed, and trusted again, 4 frames after the step (the issue: 3.5-5.75 s)
    after = [(t, v, tr) for t, v, tr in trace if t >= t_step + 0.4 - 1e-9]
    assert all(abs(v - 250.0) / 250.0 < 0.05 for _, v, _ in after)
    assert all(tr.known for _, _, tr in after)
    # between the step and the settled estimate the speed is never trusted at a wrong value
    for t, v, tr in trace:
        if t_step <= t < t_step + 0.4 and tr.known:
            assert abs(v - 250.0) / 250.0 < 0.05, (t, v)


def test_speed_up_and_constant_belt_raise_no_false_change():
    _, trace, events = run_belt([(2.55, 550.0)], v0=250.0, t_end=5.0)
    changes = [e for k, e in events if k == "speed_change"]
    assert len(changes) == 1 and changes[0]["to_mm_s"] > 300
    assert all(abs(v - 550.0) / 550.0 < 0.05 for t, v, _ in trace if t >= 2.55 + 0.4)
    _, trace, events = run_belt([], v0=400.0, t_end=8.0)
    assert [e for k, e in events if k == "speed_change"] == []
    assert all(abs(v - 400.0) / 400.0 < 0.03 for t, v, _ in trace if t > 1.0)


def test_one_bad_box_per_frame_does_not_move_the_median():
    """One of the items' boxes jumps by up to 6 px every frame (a shadow, a merged blob)."""
    _, trace, events = run_belt([], v0=400.0, t_end=6.0, pitch_mm=110.0, jitter_item=3)
    assert [e for k, e in events if k == "speed_change"] == []
    assert all(abs(v - 400.0) / 400.0 < 0.04 for t, v, _ in trace if t > 1.5)


def test_a_single_deviating_frame_is_not_a_speed_change():
    """Samples (dx, dt) from a 400 mm/s belt; one frame reads 30 % fast (a stamp off by 0.07 s)."""
    est = BeltSpeedEstimator(400.0, quant_mm=2.5)
    for k in range(1, 11):
        assert est.update(k / 10, [(120.0, 0.3), (120.0, 0.3)]) is None
    assert est.trust(1.0).known and est.speed_mm_s == pytest.approx(400.0)
    assert est.update(1.1, [(120.0, 0.23)]) is None                  # suspect: held, not believed
    assert not est.trust(1.1).known and est.speed_mm_s == pytest.approx(400.0)
    assert est.update(1.2, [(120.0, 0.3)]) is None                   # back on line: the suspect is dropped
    assert est.trust(1.2).known and est.n_changes == 0
    # two frames in a row at 250 mm/s: a real change, dated from the first of them
    assert est.update(1.3, [(75.0, 0.3)]) is None
    ch = est.update(1.4, [(75.0, 0.3)])
    assert ch is not None and ch.from_mm_s == pytest.approx(400.0) and ch.to_mm_s == pytest.approx(250.0)
    assert est.t_segment == pytest.approx(1.3) and not est.trust(1.4).known
    est.update(1.5, [(25.0, 0.1)])
    est.update(1.6, [(50.0, 0.2)])                                   # samples now span settle_s = 0.2 s
    tr = est.trust(1.6)
    assert tr.known and tr.speed_mm_s == pytest.approx(250.0)
    # nothing measured for longer than max_age_s: not trusted
    assert est.trust(1.6 + est.max_age_s + 0.01).reason == "speed_stale"
    assert BeltSpeedEstimator(400.0, quant_mm=2.5).trust(0.0).reason == "speed_unmeasured"
    assert est.update(1.7, [(-5.0, 0.1), (1e4, 0.1)]) is None and est.speed_mm_s == pytest.approx(250.0)


def test_rel_err_is_the_quantization_bound_or_the_spread():
    est = BeltSpeedEstimator(400.0, quant_mm=2.5, smooth_frames=1)
    est.update(0.3, [(120.0, 0.3)])
    # one sample over 0.3 s at 400 mm/s: one pixel (2.5 mm) in 120 mm
    assert est.rel_err == pytest.approx(2.5 / 0.3 / 400.0)
    est2 = BeltSpeedEstimator(400.0, quant_mm=0.01, smooth_frames=1)
    v = np.array([380.0, 400.0, 420.0, 400.0])
    est2.update(0.3, [(x * 0.3, 0.3) for x in v])
    mad = np.median(np.abs(v - np.median(v)))
    assert est2.rel_err == pytest.approx(1.4826 * mad / 400.0 / math.sqrt(4))


def test_policy_routes_an_uncertain_speed_to_default():
    cfg = LineConfig(belt_speed_mm_s=400.0, gate_distance_mm={1: 700.0, 2: 800.0}, actuation_s=0.1, margin_s=0.05)
    from fovea.core import ClassResult

    rec = ObjectRecord("o1", 10.0, 10.0, 300.0, 100.0, 35.0, sightings=5)
    rec.votes = [ClassResult(probs=np.array([0.95, 0.04, 0.01], np.float32), class_names=("good", "damaged", "box"))] * 3
    slack = gate_slack_mm(rec, 400.0, cfg)
    assert slack == pytest.approx(35.0 + 0.05 * 400.0)
    # closed form: error = (700 - 300) * rel_err; the limit is speed_err_frac * slack
    limit = cfg.speed_err_frac * slack / 400.0
    ok = decide(rec, [], 10.0, 400.0, cfg, 0.01, SpeedTrust(400.0, True, 0.9 * limit, ""))
    assert (ok.lane, ok.reason) == ("good", "evidence")
    bad = decide(rec, [], 10.0, 400.0, cfg, 0.01, SpeedTrust(400.0, True, 1.1 * limit, ""))
    assert (bad.lane, bad.reason) == ("default", "speed_uncertain")
    # a speed still trending: |a| T^2 / 2 with T = 400 mm / 400 mm/s = 1 s
    a = 2 * cfg.speed_err_frac * slack * 1.1
    assert speed_error_mm(rec, 700.0, 10.0, 400.0, 0.0, a) == pytest.approx(0.5 * a)
    assert decide(rec, [], 10.0, 400.0, cfg, 0.01, SpeedTrust(400.0, True, 0.0, "", a)).reason == "speed_uncertain"
    for why in ("speed_unsettled", "speed_stale", "speed_unmeasured"):
        assert decide(rec, [], 10.0, 400.0, cfg, 0.01, SpeedTrust(400.0, False, math.inf, why)).reason == why
    few = ObjectRecord("o2", 10.0, 10.0, 300.0, 100.0, 35.0, sightings=2)
    few.votes = rec.votes[:2]
    assert decide(few, [], 10.0, 400.0, cfg, 0.01).reason == "insufficient_sightings"


def test_a_belt_encoder_gives_the_speed_without_any_item_in_view():
    """Encoder readings (whole 0.5 mm counts) latched with each frame; the belt is empty."""
    cfg = LineConfig(mm_per_px=MM_PX, fps=FPS, belt_speed_mm_s=400.0, measure_speed=True, encoder_mm_per_count=0.5)
    tr = BeltTracker(cfg)
    steps = [(2.05, 250.0)]
    changes = []
    for k in range(41):
        t = k / FPS
        belt = np.floor(belt_travel(t, steps, 400.0) / 0.5) * 0.5
        tr.update(t, Detections.empty(), W_PX, [], belt_mm=belt)
        changes += [e for kind, e in tr.events if kind == "speed_change"]
        tr.events = []
        if 0.5 <= t < 2.05:
            assert tr.speed_trust(t).known and tr.speed_mm_s == pytest.approx(400.0, abs=0.5 / 0.3 + 1e-6)
    assert len(changes) == 1 and changes[0]["source"] == "encoder" and 2.05 < changes[0]["t_capture"] <= 2.35
    assert tr.speed_trust(4.0).known and tr.speed_mm_s == pytest.approx(250.0, abs=0.5 / 0.3 + 1e-6)
    assert tr.speed_trust(4.0).rel_err < 0.01


def test_synthetic_camera_latches_the_encoder_with_each_exposure():
    from fovea.line.clock import SimClock
    from fovea.line.sources import ConveyorSource
    from fovea.synth.conveyor import Conveyor, ConveyorConfig

    conv = Conveyor(ConveyorConfig(n_objects=3, appearance="simple", speed_profile=((0.25, 250.0, 0.0),)))
    clock = SimClock()
    src = ConveyorSource(conv, clock=clock, encoder_mm_per_count=0.7)
    for k in range(6):
        clock.advance_to(k / conv.config.fps)
        f = src.read()
        t = k / conv.config.fps
        expect = 400.0 * min(t, 0.25) + 250.0 * max(t - 0.25, 0.0)       # closed-form belt travel
        assert f.meta["belt_mm"] == pytest.approx(np.floor(expect / 0.7 + 1e-9) * 0.7)


def test_whole_line_through_400_250_550_steps_keeps_items_in_their_lanes():
    """Issue 11's step sequence on the simulated line (real runner, firmware emulator, physical audit)."""
    from fovea.line.sim import line_config_for, simulate
    from fovea.synth.conveyor import Conveyor, ConveyorConfig

    steps = ((12.0, 250.0, 0.0), (30.0, 550.0, 0.0))
    conv = Conveyor(ConveyorConfig(n_objects=120, appearance="simple", seed=9, speed_profile=steps))
    r = simulate(conv, config=line_config_for(conv.config, measure_speed=True))
    a = r.audit
    changes = r.log.of_type("speed_change")
    assert len(changes) == 2
    for (t_s, v, _), e in zip(steps, changes):
        assert t_s < e["t_capture"] <= t_s + 0.35                  # seen within 3 frames of the step
    settled = [e for e in r.log.of_type("speed_settled") if e["t_capture"] > steps[0][0]]
    assert settled[0]["speed_mm_s"] == pytest.approx(250.0, rel=0.05)
    assert settled[-1]["speed_mm_s"] == pytest.approx(550.0, rel=0.05)
    # an item in flight at a step can still be met by a swing timed on the old speed (the protocol cannot
    # withdraw a queued command): issue 11's target is <= 0.5 % wrong lane; the host must then say it
    # does not know, never log a bin the item did not reach
    assert sum(a.wrong_in_lane.values()) <= max(1, 0.005 * a.n_items), a.lines()
    assert a.items_with_two_outcomes == 0 and a.actuated_twice == 0
    assert a.partial_hits <= 0.01 * a.n_items
    assert a.host_vs_physical_mismatch == 0, a.mismatches
    assert a.accuracy > 0.9, a.lines()


def test_in_flight_checks_against_closed_form_crossings():
    """An item at 500 mm heads for the gate at 700 mm; its command was timed at 400 mm/s."""
    from fovea.line.actuators import FireCommand
    from fovea.line.inflight import BeltNow, off_window, swing_conflicts

    cfg = LineConfig(belt_speed_mm_s=400.0, gate_distance_mm={1: 700.0, 2: 800.0}, actuation_s=0.1, margin_s=0.05)
    tr = BeltTracker(cfg)
    a = tr._new(10.0, 500.0, 100.0, 35.0)
    b = tr._new(10.0, 350.0, 100.0, 35.0)               # 150 mm behind, going to the default route
    a.state, a.gate, b.gate = "SCHEDULED", 1, None
    t_plan = 10.0 + 200.0 / 400.0                         # centre at the gate
    half_open = 35.0 / 400.0 + cfg.margin_s               # the fully open half-window around t_plan
    hold = 2 * half_open + cfg.actuation_s
    fires = {a.rid: FireCommand(a.rid, 1, t_plan - (cfg.actuation_s + hold) / 2, hold)}
    same = BeltNow(10.0, 404.0, 400.0, (10.0,), 0.0)       # 1 % faster: 200/404 s, still inside
    assert off_window(tr, fires, cfg, same) == []
    slow = BeltNow(10.0, 250.0, 400.0, (10.0,), 0.0)       # now 200/250 = 0.8 s: 0.3 s late
    assert abs(10.0 + 200.0 / 250.0 - t_plan) > half_open
    assert off_window(tr, fires, cfg, slow) == [a.rid]
    assert swing_conflicts(tr, fires, cfg, slow) == []     # b reaches gate 1 at 11.4 s, long after the swing
    fast = BeltNow(10.0, 700.0, 400.0, (10.0,), 0.0)       # b now crosses gate 1 at 10 + 350/700 = 10.5 s
    assert swing_conflicts(tr, fires, cfg, fast) == [[b.rid, a.rid, 1]]
