"""Tracking that does not invent objects: edge-for-edge association, ghost/twin merges, frame time.

Hand-built detection sequences of items on a belt with known kinematics (x = x0 + v t, pixel-
quantized boxes clipped by the image edges) are the reference.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from fovea.core import Detections
from fovea.line.config import LineConfig
from fovea.line.frametime import FrameTimeGuard
from fovea.line.tracker import BeltTracker, Observed, comparable_residuals

W_PX, MM_PX, FPS, V = 160, 2.5, 10.0, 400.0


def cfg(**kw):
    return LineConfig(mm_per_px=MM_PX, fps=FPS, belt_speed_mm_s=V, **kw)


def dets_at(xs_mm, half_mm=35.0, ys_px=None):
    """Pixel boxes of items centred at belt x (mm), clipped by the image edges."""
    ys_px = ys_px or [40] * len(xs_mm)
    boxes = []
    for x, y in zip(xs_mm, ys_px):
        x0, x1 = max(round((x - half_mm) / MM_PX), 0), min(round((x + half_mm) / MM_PX), W_PX)
        if x1 - x0 >= 2:
            boxes.append([x0, y - 12, x1, y + 12])
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy=xyxy, data={"solidity": np.ones(len(xyxy), np.float32)})


def test_cut_boxes_are_compared_edge_for_edge():
    # an item entering (centre -15 mm, half 35): only its front edge x1 = 20 mm is in the image
    obs = Observed(np.array([[0.0, 0, 20.0, 10]]), np.array([True]), np.array([False]))
    pred, half = np.array([-15.0]), np.array([35.0])
    assert comparable_residuals(obs, pred, half)[0, 0] == pytest.approx(0.0)
    # the raw centre of the cut box (10 mm) against the predicted centre would be 25 mm off:
    # more than half of the 45 mm association window
    assert (0.0 + 20.0) / 2 - pred[0] == pytest.approx(25.0)
    # leaving on the right (view ends at 400 mm): only the back edge counts
    obs = Observed(np.array([[380.0, 0, 400.0, 10]]), np.array([False]), np.array([True]))
    assert comparable_residuals(obs, np.array([415.0]), half)[0, 0] == pytest.approx(0.0)
    obs = Observed(np.array([[100.0, 0, 170.0, 10]]), np.array([False]), np.array([False]))
    assert comparable_residuals(obs, np.array([131.0]), half)[0, 0] == pytest.approx(4.0)


def test_items_crossing_both_image_edges_keep_one_record_each():
    """Two items 110 mm apart ride through the whole view; association happens at both edges."""
    tr = BeltTracker(cfg(assoc_gate_mm=20.0))      # a tight window: raw centres of cut boxes would miss it
    for k in range(16):
        t = k / FPS
        xs = [-30 + V * t, -140 + V * t]
        d = dets_at(xs)
        tr.update(t, d, W_PX, [None] * len(d))
    assert len(tr.records) == 2
    a, b = sorted(tr.records.values(), key=lambda r: -r.x_mm)
    assert a.x_at(1.5, V) == pytest.approx(-30 + V * 1.5, abs=3.0)
    assert b.x_at(1.5, V) == pytest.approx(-140 + V * 1.5, abs=3.0)
    assert not (a.flags | b.flags) - {"track_gap"}


def test_a_ghost_from_a_stale_image_merges_into_its_twin_and_never_takes_an_outcome():
    tr = BeltTracker(cfg())
    x0 = -20.0
    for k in range(6):                                   # one item tracked for 6 frames
        t = k / FPS
        tr.update(t, dets_at([x0 + V * t]), W_PX, [None])
    (real,) = tr.records.values()
    real.state = "SCHEDULED"                              # already committed: it must survive
    # frame 6 carries the image of frame 4 (80 mm behind) with a fresh stamp, fed without the time guard
    tr.update(0.6, dets_at([x0 + V * 0.4]), W_PX, [None])
    ghost = [r for r in tr.records.values() if r is not real]
    assert len(ghost) == 1 and ghost[0].sightings == 1
    for k in (7, 8):
        t = k / FPS
        tr.update(t, dets_at([x0 + V * t]), W_PX, [None])
    merges = [e for k, e in tr.events if k == "merge"]
    assert len(merges) == 1 and merges[0]["record"] == ghost[0].rid and merges[0]["into"] == real.rid
    assert list(tr.records) == [real.rid] and real.state == "SCHEDULED"
    assert ghost[0].rid in real.absorbed


def test_two_committed_twins_are_reported_not_merged():
    tr = BeltTracker(cfg())
    tr.update(0.0, dets_at([100.0]), W_PX, [None])
    tr.update(0.1, dets_at([140.0]), W_PX, [None])
    a = next(iter(tr.records.values()))
    # a second record overlapping the first, never seen with it in one frame
    b = tr._new(0.1, 145.0, a.y_mm, 35.0)
    b.sightings, b.state, a.state = 1, "DEFAULT", "SCHEDULED"
    tr.update(0.2, dets_at([180.0]), W_PX, [None])
    assert a.rid in tr.records and b.rid in tr.records
    twins = [e for k, e in tr.events if k == "fault" and e["kind"] == "twin_records"]
    assert len(twins) == 1 and set(twins[0]["records"]) == {a.rid, b.rid}


def test_touching_items_seen_apart_are_not_merged():
    """Two records seen in the same frame are two objects, however close they come."""
    tr = BeltTracker(cfg())
    for k in range(4):
        t = k / FPS
        d = dets_at([60 + V * t, -20 + V * t])
        tr.update(t, d, W_PX, [None] * len(d))
    assert len(tr.records) == 2
    assert not [e for k, e in tr.events if k == "merge"]


# ------------------------------------------------------------------ frame time
def perception(t, xs, index, valid=True):
    d = dets_at(xs)
    return SimpleNamespace(frame=SimpleNamespace(t_capture=t, index=index, image=np.zeros((96, W_PX, 3), np.uint8)),
                           dets=d, results=[None] * len(d), valid=valid)


class Line:
    """Tracker + time guard, applying what the guard releases (as the runner does)."""

    def __init__(self, **kw):
        self.tr = BeltTracker(cfg(**kw))
        self.guard = FrameTimeGuard(self.tr, self.tr.cfg)
        self.faults, self.used = [], []

    def feed(self, p):
        v = self.guard.check(p)
        self.faults += v.faults
        for q, shift, ok in v.use:
            if shift is None:
                shift = self.guard.measure(q)[0]
            self.tr.update(q.frame.t_capture, q.dets, W_PX, q.results, valid=q.valid, shift_mm=shift, timing_ok=ok)
            self.used.append(q.frame.index)


def test_repeated_backward_and_off_grid_stamps_are_faults_and_unused():
    ln = Line()
    for k in range(5):
        ln.feed(perception(k / FPS, [20 + V * k / FPS], k))
    ln.feed(perception(0.4, [20 + V * 0.5], 5))               # repeated stamp
    ln.feed(perception(0.35, [20 + V * 0.6], 6))              # stepped back
    ln.feed(perception(0.74, [20 + V * 0.7], 7))              # 3.4 periods after the last: off the grid
    ln.feed(perception(0.8, [20 + V * 0.8], 8))
    causes = {f["frame"]: f["cause"] for f in ln.faults}
    assert causes[5] == "timestamp_repeated" and causes[6] == "timestamp_backwards"
    assert causes[7] == "timestamp_off_grid"
    assert ln.used == [0, 1, 2, 3, 4, 8]
    assert len(ln.tr.records) == 1


@pytest.mark.parametrize("lag", [1, 2, 3])
def test_a_stale_image_with_a_fresh_stamp_is_a_fault_and_makes_no_ghost(lag):
    ln = Line()
    for k in range(12):
        t = k / FPS
        shown = (k - lag) / FPS if k == 7 else t         # frame 7 shows the belt `lag` frames earlier
        ln.feed(perception(t, [10 + V * shown, -120 + V * shown], k))
    assert [f["frame"] for f in ln.faults] == [7]
    f = ln.faults[0]
    assert f["cause"] == "content_behind_stamp"
    assert f["offset_s"] == pytest.approx(-lag / FPS, abs=0.02)   # the image is `lag` periods old
    assert 7 not in ln.used and len(ln.used) == 11
    assert len(ln.tr.records) == 2


def test_a_speed_step_is_not_mistaken_for_a_stale_frame():
    ln = Line(measure_speed=True)
    x = 10.0
    xs = []
    for k in range(16):
        v = V if k <= 8 else 200.0                          # the belt halves its speed after frame 8
        x += (v / FPS) if k else 0.0
        xs.append(x)
        ln.feed(perception(k / FPS, [x], k))
    assert ln.faults == []
    assert ln.used == list(range(16))                       # the first slow frame was held, then both used
    assert len(ln.tr.records) == 1
    assert ln.tr.speed_mm_s == pytest.approx(200.0, rel=0.05)


def test_a_wrong_tracker_state_cannot_blind_the_line():
    ln = Line()
    for k in range(4):
        ln.feed(perception(k / FPS, [20 + V * k / FPS], k))
    rec = next(iter(ln.tr.records.values()))
    rec.x_mm += 70.0                                        # the tracker believes the item is 70 mm further
    for k in range(4, 9):
        ln.feed(perception(k / FPS, [20 + V * k / FPS], k))
    causes = [f["cause"] for f in ln.faults]
    assert causes.count("prediction_offset") == 1
    assert ln.used[-3:] == [6, 7, 8]                         # from the third agreeing frame on, frames are used


def test_the_stamp_grid_survives_many_mis_stamps_and_follows_a_wrong_fps_setting():
    # every other frame stepped back by 0.03-0.08 s: the clean ones stay usable, the period stays 0.1 s
    ln = Line()
    rng = np.random.default_rng(1)
    for k in range(40):
        t = k / FPS - (rng.uniform(0.03, 0.08) if k % 2 and k > 4 else 0.0)
        ln.feed(perception(t, [V * k / FPS % 400], k))
    assert ln.guard.period_s() == pytest.approx(0.1)
    assert [i for i in ln.used if i > 4] == list(range(6, 40, 2))
    # the camera really runs at 16 fps while the config says 10: once a few intervals are known the
    # grid is the camera's, not the config's, and frames are used again
    ln = Line()
    for k in range(30):
        ln.feed(perception(k / 16.0, [], k))
    assert ln.guard.period_s() == pytest.approx(1 / 16.0)
    assert ln.used[-20:] == list(range(10, 30))
