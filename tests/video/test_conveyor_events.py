"""Conveyor events follow their closed-form kinematics; clip labels follow the physics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fovea.errors import ConfigError
from fovea.synth.conveyor import ConveyorConfig
from fovea.synth.conveyor_events import (EVENT_CLASSES, FALL_ACCEL_MM_S2, EventConveyor, EventSchedule,
                                         make_event_clip)

CFG = dict(n_objects=30, lead_in_mm=0.0, gap_mm=(40.0, 120.0), appearance="simple", noise_sigma=0.0, seed=3)


def test_jam_queues_items_touching_behind_the_jam_point_and_releases_them():
    t0, t1, xj = 2.0, 5.0, 300.0
    conv = EventConveyor(ConveyorConfig(**CFG), EventSchedule(jams=[(t0, t1, xj)]))
    free = conv.belt_travel(4.9) - conv._s
    x = conv.positions(4.9)[0]
    queued = [i for i in range(30) if x[i] < free[i] - 1e-9]
    assert queued, "some items reached the queue"
    first = queued[0]
    half = [it.half_len_mm for it in conv.items]
    assert x[first] + half[first] == pytest.approx(xj)                       # front edge at the jam point
    for a, b in zip(queued, queued[1:]):
        assert (x[a] - half[a]) - (x[b] + half[b]) == pytest.approx(1.5)   # touching, 1.5 mm pressed gap
    x_later = conv.positions(4.95)[0]
    assert np.allclose(x_later[queued], x[queued])                           # standing still
    before, after = conv.positions(5.5)[0], conv.positions(5.6)[0]
    assert np.allclose((after - before) / 0.1, conv.config.belt_speed_mm_s)   # all move again after release
    assert conv.events()[0].kind == "jam" and conv.events()[0].t_start_s == t0


def test_fall_follows_constant_acceleration_and_ends_out_of_view():
    conv = EventConveyor(ConveyorConfig(**CFG), EventSchedule(falls=[(4, 2.0, 1)]))
    y0 = conv.items[4].y_mm
    for dt in (0.1, 0.3):
        assert conv.positions(2.0 + dt)[1][4] == pytest.approx(y0 + 0.5 * FALL_ACCEL_MM_S2 * dt * dt)
    ev = [e for e in conv.events() if e.kind == "fall"][0]
    belt_w = conv.config.height_px * conv.config.mm_per_px
    edge = belt_w + conv.items[4].half_wid_mm - y0
    assert ev.t_end_s == pytest.approx(2.0 + math.sqrt(2 * edge / FALL_ACCEL_MM_S2))
    t_mid = (ev.t_start_s + ev.t_end_s) / 2
    x_mid = conv.positions(t_mid)[0][4]
    if 0 < x_mid < conv.config.view_mm:
        assert 4 in conv.visible(t_mid)
    assert 4 not in conv.visible(ev.t_end_s + 0.01)


def test_rollback_moves_upstream_then_rides_on():
    conv = EventConveyor(ConveyorConfig(**CFG), EventSchedule(rollbacks=[(5, 3.0, 1.0, 300.0)]))
    x = lambda t: conv.positions(t)[0][5]   # noqa: E731
    assert (x(3.5) - x(3.4)) / 0.1 == pytest.approx(-300.0)
    assert (x(4.6) - x(4.5)) / 0.1 == pytest.approx(conv.config.belt_speed_mm_s)
    assert x(4.0) == pytest.approx(x(3.0) - 300.0)


def test_schedule_errors():
    with pytest.raises(ConfigError, match="overlap"):
        EventConveyor(ConveyorConfig(**CFG), EventSchedule(jams=[(1, 4, 100), (3, 5, 100)]))
    with pytest.raises(ConfigError, match="items 0..29"):
        EventConveyor(ConveyorConfig(**CFG), EventSchedule(falls=[(99, 1.0, 1)]))


@pytest.mark.parametrize("kind", EVENT_CLASSES)
def test_clip_labels_follow_the_physics(kind):
    frames, events, conv = make_event_clip(kind, seed=11, n_frames=12, appearance="simple", noise_sigma=0.0)
    assert frames.shape == (12, 96, 160, 3) and frames.dtype == np.uint8
    kinds = {e.kind for e in events}
    if kind == "normal":
        assert not kinds
    else:
        assert kind in kinds
        ev = next(e for e in events if e.kind == kind)
        assert ev.t_start_s < 12 / conv.config.fps and ev.t_end_s >= 0
    if kind == "jam":                                   # the image stops changing once the queue stands
        diffs = np.abs(np.diff(frames[-4:].astype(int), axis=0)).mean()
        normal = make_event_clip("normal", 11, 12, appearance="simple", noise_sigma=0.0)[0]
        moving = np.abs(np.diff(normal[-4:].astype(int), axis=0)).mean()
        assert diffs < 0.2 * moving


def _fall_boxes(conv, t_clip: float, uid: int, n_frames: int):
    """The rendered pixel box of item uid in each frame (None when not drawn)."""
    out = []
    for k in range(n_frames):
        truths = conv.render(t_clip + k / conv.config.fps)[1]
        out.append(next((tr.xyxy for tr in truths if tr.uid == uid), None))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_fall_clips_show_the_item_leave_over_the_belt_side(seed):
    """Checked on the rendered boxes, not the kinematics: the falling item is drawn whole along the belt
    when it starts to slide, its last drawn box is cut by the top or bottom image edge (not the right
    one), and it is gone before the clip ends."""
    n = 16
    frames, events, conv = make_event_clip("fall", seed, n, appearance="simple", noise_sigma=0.0)
    ev = next(e for e in events if e.kind == "fall")
    uid, t0_abs, side = conv.schedule.falls[0]
    t_clip = t0_abs - ev.t_start_s
    H, W = frames.shape[1:3]
    boxes = _fall_boxes(conv, t_clip, uid, n)
    k_start = math.ceil(ev.t_start_s * conv.config.fps)
    x0, _, x1, _ = boxes[k_start]
    w_px = 2 * conv.items[uid].half_len_mm / conv.config.mm_per_px
    assert x0 > 0 and x1 < W and x1 - x0 >= w_px - 2            # whole along the belt at the start
    drawn = [k for k, b in enumerate(boxes) if b is not None]
    last = boxes[drawn[-1]]
    assert drawn[-1] < n - 1, "the item has left the image before the clip ends"
    assert last[2] < W                                            # not leaving downstream
    assert (last[1] == 0) if side < 0 else (last[3] == H)         # cut by the side it falls to


def test_fall_clip_too_short_for_a_whole_fall_is_a_clear_error():
    with pytest.raises(ConfigError, match="at least 1.2 s"):
        make_event_clip("fall", 0, n_frames=4, appearance="simple", noise_sigma=0.0)


def test_video_falls_are_seen_whole():
    from fovea.synth.conveyor_events import make_event_video

    frames, events, conv = make_event_video(30.0, seed=4, events_per_minute=12, kinds=("fall",),
                                            appearance="simple", noise_sigma=0.0)
    falls = [e for e in events if e.kind == "fall"]
    assert len(falls) >= 4
    H, W = frames.shape[1:3]
    fps = conv.config.fps
    for ev in falls:
        uid, side = ev.uids[0], next(s for u, _, s in conv.schedule.falls if u == ev.uids[0])
        ks = range(math.ceil(ev.t_start_s * fps), math.ceil(ev.t_end_s * fps) + 1)
        boxes = [(k, next((tr.xyxy for tr in conv.render(k / fps)[1] if tr.uid == uid), None)) for k in ks]
        drawn = [(k, b) for k, b in boxes if b is not None]
        assert drawn and drawn[0][1][0] > 0 and drawn[0][1][2] < W
        last = drawn[-1][1]
        assert last[2] < W and ((last[1] == 0) if side < 0 else (last[3] == H))
        assert boxes[-1][1] is None                               # gone at the event's end


def test_partial_fall_clips_lose_the_item_downstream_or_keep_it_to_the_end():
    """fall_seen='partial' (a stress test): checked on the rendered boxes, the item never leaves over
    the belt's side inside the clip while fully in view downstream: one frame's belt travel after its
    last drawn box it would be cut by the right image edge, or it is still drawn in the clip's last frame."""
    for seed in range(4):
        frames, events, conv = make_event_clip("fall", seed, 16, fall_seen="partial", appearance="simple",
                                               noise_sigma=0.0)
        ev = next(e for e in events if e.kind == "fall")
        uid, t0_abs, _ = conv.schedule.falls[0]
        boxes = _fall_boxes(conv, t0_abs - ev.t_start_s, uid, 16)
        drawn = [k for k, b in enumerate(boxes) if b is not None]
        step_px = conv.config.belt_speed_mm_s / conv.config.fps / conv.config.mm_per_px
        assert boxes[drawn[-1]][2] + step_px > frames.shape[2] or drawn[-1] == 15
    with pytest.raises(ConfigError, match="fall_seen"):
        make_event_clip("fall", 0, fall_seen="some")
