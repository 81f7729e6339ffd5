"""Conveyor events for video understanding: jams, items falling off, items rolling back, two items
stuck together, and normal flow, with exact labels and times, built on `fovea.synth.conveyor`.

`EventConveyor` is a `Conveyor` whose items may leave the free belt motion (x = B(t) - s):
- jam (t0, t1, x_mm): the item reaching x_mm first stops with its front edge there, the items
  behind queue up touching it; at t1 the queue is released and moves on (with its lag);
- fall (uid, t0, side): from t0 the item accelerates across the belt (side -1 top, +1 bottom) and
  leaves the image; the event ends when it is out of view. The clip and video generators only
  schedule falls the camera sees whole (`fall_in_view`): the item is fully in view when it starts
  to slide and has left over the belt's side edge before it would leave the view downstream (and,
  for a clip, before the clip ends). Before this rule, items up to 0.7 view lengths downstream were
  picked; most of them rode out of the image at the belt speed after a few frames of drift, so
  a "fall" clip often showed no item leaving the belt at all (falls were 38-45 % held-out accuracy,
  confused with normal flow);
- rollback (uid, t0, duration_s, speed_mm_s): the item moves upstream, then rides on again;
- stuck: `ConveyorConfig.p_touching` pairs (pressed together, as in the base generator), an event
  while both items of a pair are fully in view.
`events()` lists them as `ConveyorEvent(kind, t_start_s, t_end_s, uids)` from the physics, not
from any rendering. `make_event_clip` renders one labelled short clip (the classification set);
`make_event_video` a long video with scheduled events (the localization set); `write_mp4` encodes
frames with PyAV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fovea.errors import ConfigError
from fovea.synth.conveyor import Conveyor, ConveyorConfig

EVENT_CLASSES: tuple[str, ...] = ("normal", "jam", "fall", "rollback", "stuck")
FALL_ACCEL_MM_S2 = 600.0


@dataclass(frozen=True)
class ConveyorEvent:
    """One ground-truth event: kind in EVENT_CLASSES[1:], start and end in seconds, items involved."""

    kind: str
    t_start_s: float
    t_end_s: float
    uids: tuple[int, ...] = ()


@dataclass
class EventSchedule:
    """What happens on the belt: jams (t0, t1, x_mm), falls (uid, t0, side), rollbacks (uid, t0, dur_s, speed)."""

    jams: list[tuple[float, float, float]] = field(default_factory=list)
    falls: list[tuple[int, float, int]] = field(default_factory=list)
    rollbacks: list[tuple[int, float, float, float]] = field(default_factory=list)


class EventConveyor(Conveyor):
    """A Conveyor with jams, falls and roll-backs applied to the items' positions (vectorised)."""

    def __init__(self, config: ConveyorConfig | None = None, schedule: EventSchedule | None = None):
        super().__init__(config)
        self.schedule = schedule or EventSchedule()
        self._validate()
        self._y0 = np.array([it.y_mm for it in self.items])
        self.schedule.jams = sorted(self.schedule.jams)
        self._caps: list[np.ndarray] = []
        for t0, _, x_mm in self.schedule.jams:       # each queue forms behind the earlier jams' lags
            self._caps.append(self._queue_caps(t0, x_mm))
        self._cache_t: float | None = None

    def _validate(self) -> None:
        n = len(self.items)
        for t0, t1, x in self.schedule.jams:
            if not t1 > t0 >= 0:
                raise ConfigError(f"jam ({t0}, {t1}, {x}): need 0 <= t0 < t1")
        for ev in self.schedule.falls + [r[:2] for r in self.schedule.rollbacks]:
            if not 0 <= ev[0] < n:
                raise ConfigError(f"event for item {ev[0]}: the belt has items 0..{n - 1}")
        jams = sorted(self.schedule.jams)
        for a, b in zip(jams, jams[1:]):
            if b[0] < a[1]:
                raise ConfigError(f"jams {a} and {b} overlap; schedule them one after another")

    # ------------------------------------------------------------------ kinematics
    def _x_before_jam(self, t: float, upto: int) -> np.ndarray:
        """Item centres at t under free motion and the first `upto` jams."""
        x = self.belt_travel(t) - self._s
        for j in range(upto):
            t0, t1, _ = self.schedule.jams[j]
            if t < t0:
                break
            cap = self._caps[j]
            if t < t1:
                x = np.minimum(x, cap)
            else:
                x_rel = self._x_before_jam(t1, j)
                x = x - np.maximum(x_rel - cap, 0)
        return x

    def _queue_caps(self, t0: float, x_mm: float) -> np.ndarray:
        """Per-item stop positions of the queue behind x_mm (inf for items already past it at t0)."""
        x = self._x_before_jam(t0, len(self._caps))
        caps = np.full(len(self.items), np.inf)
        up = np.nonzero(x < x_mm)[0]
        pos = None
        for k, i in enumerate(up):
            pos = x_mm - self._half[i] if k == 0 else pos - self._half[up[k - 1]] - self._half[i] - 1.5
            caps[i] = pos
        return caps

    def positions(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(x_mm, y_mm) of every item's centre at time t (y leaves the belt for fallen items)."""
        if self._cache_t == t:
            return self._cache
        x = self._x_before_jam(t, len(self.schedule.jams)).copy()
        y = self._y0.copy()
        for uid, t0, dur, speed in self.schedule.rollbacks:
            if t >= t0:
                ref = self._x_before_jam(t0, len(self.schedule.jams))[uid]
                back = speed * min(t - t0, dur)
                if t < t0 + dur:
                    x[uid] = ref - back
                else:
                    x[uid] = x[uid] - (self._x_before_jam(t0 + dur, len(self.schedule.jams))[uid] - (ref - back))
        for uid, t0, side in self.schedule.falls:
            if t >= t0:
                dt = t - t0
                y[uid] = self._y0[uid] + side * 0.5 * FALL_ACCEL_MM_S2 * dt * dt
        self._cache_t, self._cache = t, (x, y)
        return x, y

    def x_mm(self, uid: int, t: float) -> float:
        return float(self.positions(t)[0][uid])

    def visible(self, t: float) -> list[int]:
        x, y = self.positions(t)
        c = self.config
        belt_w = c.height_px * c.mm_per_px
        half_w = np.array([it.half_wid_mm for it in self.items])
        hit = (x + self._half > 0) & (x - self._half < c.view_mm) & (y + half_w > 0) & (y - half_w < belt_w)
        return [int(i) for i in np.nonzero(hit)[0]]

    def render(self, t: float, label_map: np.ndarray | None = None):
        """As Conveyor.render, with fallen items drawn at their current lateral position."""
        _, y = self.positions(t)
        for uid, _, _ in self.schedule.falls:
            self.items[uid].y_mm = float(y[uid])
        try:
            return super().render(t, label_map)
        finally:
            for uid, _, _ in self.schedule.falls:
                self.items[uid].y_mm = float(self._y0[uid])

    # ------------------------------------------------------------------ ground truth
    def _out_of_view_time(self, uid: int, t0: float, side: int) -> float:
        c = self.config
        belt_w = c.height_px * c.mm_per_px
        edge = (belt_w + self.items[uid].half_wid_mm - self._y0[uid]) if side > 0 else \
            (self._y0[uid] + self.items[uid].half_wid_mm)
        return t0 + math.sqrt(2 * max(edge, 0) / FALL_ACCEL_MM_S2)

    def events(self, t_end_s: float | None = None) -> list[ConveyorEvent]:
        """Ground-truth events up to t_end_s, sorted by start time."""
        out = [ConveyorEvent("jam", t0, t1) for t0, t1, _ in self.schedule.jams]
        out += [ConveyorEvent("fall", t0, self._out_of_view_time(uid, t0, side), (uid,))
                for uid, t0, side in self.schedule.falls]
        out += [ConveyorEvent("rollback", t0, t0 + dur, (uid,)) for uid, t0, dur, _ in self.schedule.rollbacks]
        out += self._stuck_events(t_end_s if t_end_s is not None else self.duration_s())
        out = [e for e in out if t_end_s is None or e.t_start_s < t_end_s]
        return sorted(out, key=lambda e: (e.t_start_s, e.kind))

    def _stuck_events(self, t_end_s: float) -> list[ConveyorEvent]:
        """Touching pairs while both items are fully inside the view (sampled at the frame rate)."""
        out = []
        fps = self.config.fps
        view = self.config.view_mm
        n_frames = int(t_end_s * fps) + 1
        pairs = [it.uid for it in self.items if it.touching_prev]
        if not pairs:
            return out
        inside = {u: [] for u in pairs}
        for k in range(n_frames):
            x, _ = self.positions(k / fps)
            for u in pairs:
                a, b = u - 1, u
                lo = min(x[a] - self._half[a], x[b] - self._half[b])
                hi = max(x[a] + self._half[a], x[b] + self._half[b])
                if lo >= 0 and hi <= view:
                    inside[u].append(k)
        for u, ks in inside.items():
            if ks:
                out.append(ConveyorEvent("stuck", ks[0] / fps, ks[-1] / fps, (u - 1, u)))
        return out


def fall_in_view(conv: EventConveyor, uid: int, t0: float, side: int, t_last_s: float = math.inf) -> bool:
    """Whether the camera sees item uid fall off whole if it starts to slide to `side` at t0: fully in
    view along the belt at t0, over the side edge (event end) while still fully in view downstream, and
    by t_last_s. Positions come from `conv`'s schedule without this fall (jams, roll-backs included)."""
    t_out = conv._out_of_view_time(uid, t0, side)
    if t_out > t_last_s:
        return False
    half, view = conv._half[uid], conv.config.view_mm
    x0, x_out = conv.positions(t0)[0][uid], conv.positions(t_out)[0][uid]
    return bool(x0 - half >= 0 and x_out + half <= view)


def _pick_fall(conv: EventConveyor, rng: np.random.Generator, t0: float, t_last_s: float = math.inf,
               seen: str = "whole") -> tuple[int, int] | None:
    """A random (uid, side) among the falls `fall_in_view` accepts at t0 (seen="whole"), or among those
    it rejects whose item is fully in view at t0 (seen="partial"); None when there is none."""
    def ok(u: int, side: int) -> bool:
        if seen == "whole":
            return fall_in_view(conv, u, t0, side, t_last_s)
        x0, half = conv.positions(t0)[0][u], conv._half[u]
        return bool(x0 - half >= 0 and x0 + half <= conv.config.view_mm
                    and not fall_in_view(conv, u, t0, side, t_last_s))

    cand = [(u, side) for u in range(len(conv.items)) for side in (-1, 1) if ok(u, side)]
    return None if not cand else cand[int(rng.integers(len(cand)))]


def render_frames(conv: Conveyor, t_start_s: float, n_frames: int) -> np.ndarray:
    """(N, H, W, 3) uint8 frames at t_start_s + k / fps."""
    fps = conv.config.fps
    return np.stack([conv.render(t_start_s + k / fps)[0] for k in range(n_frames)])


def _clip_config(rng: np.random.Generator, seed: int, p_touching: float, **overrides) -> ConveyorConfig:
    kw = dict(n_objects=14, lead_in_mm=0.0, gap_mm=(40.0, 120.0), p_touching=p_touching, p_box=0.15,
              fps=10.0, seed=seed, noise_sigma=2.0)
    kw.update(overrides)
    return ConveyorConfig(**kw)


def make_event_clip(kind: str, seed: int, n_frames: int = 16, *, fall_seen: str = "whole", _attempt: int = 0,
                    **config_overrides) -> tuple[np.ndarray, list[ConveyorEvent], EventConveyor]:
    """One short clip of class `kind` (EVENT_CLASSES): frames (N, H, W, 3) uint8, the events that
    intersect it (times relative to the clip start), and its conveyor. Normal clips contain no event;
    a fall clip shows the whole fall (`fall_in_view`), from a seed further on when this one has none.
    fall_seen="partial" instead makes a fall the camera sees only in part (the item starts to slide in
    full view but leaves downstream or after the clip's end first): a stress test, not a training class."""
    if fall_seen not in ("whole", "partial"):
        raise ConfigError(f"make_event_clip fall_seen={fall_seen!r}; use 'whole' or 'partial'")
    if kind not in EVENT_CLASSES:
        raise ConfigError(f"unknown conveyor event {kind!r}; use one of {EVENT_CLASSES}")
    rng = np.random.default_rng([seed, 77])
    cfg = _clip_config(rng, seed, 0.6 if kind == "stuck" else 0.0, **config_overrides)
    probe = Conveyor(cfg)
    dur = n_frames / cfg.fps
    t_clip = float(rng.uniform(0.6, 1.6))
    schedule = EventSchedule()
    if kind == "jam":
        t0 = t_clip + float(rng.uniform(0.0, 0.35)) * dur
        schedule.jams.append((t0, t0 + 30.0, float(rng.uniform(0.45, 0.85)) * cfg.view_mm))
    elif kind == "fall":                 # one the camera sees whole, ending inside the clip
        t0 = t_clip + float(rng.uniform(0.1, 0.4)) * dur
        pick = _pick_fall(EventConveyor(cfg), rng, t0, t_last_s=t_clip + (n_frames - 1) / cfg.fps, seen=fall_seen)
        if pick is None:
            if _attempt >= 40:
                raise ConfigError(f"no fall the camera sees {fall_seen} fits a {n_frames}-frame clip at {cfg.fps} "
                                  f"fps (seed {seed}); a fall takes 0.6-0.9 s: use clips of at least 1.2 s")
            return make_event_clip(kind, seed + 100003, n_frames, fall_seen=fall_seen, _attempt=_attempt + 1,
                                   **config_overrides)
        schedule.falls.append((pick[0], t0, pick[1]))
    elif kind == "rollback":
        t0 = t_clip + float(rng.uniform(0.1, 0.4)) * dur
        x = probe.belt_travel(t0) - probe._s
        cand = np.nonzero((x > 0.2 * cfg.view_mm) & (x < 0.7 * cfg.view_mm))[0]
        if len(cand) == 0:
            return make_event_clip(kind, seed + 100003, n_frames, **config_overrides)
        uid = int(rng.choice(cand))
        schedule.rollbacks.append((uid, t0, float(rng.uniform(1.0, 1.6)), float(rng.uniform(200, 350))))
    conv = EventConveyor(cfg, schedule)
    events = [e for e in conv.events(t_clip + dur + 1) if e.t_start_s < t_clip + dur and e.t_end_s >= t_clip]
    if kind == "stuck" and not any(e.kind == "stuck" for e in events):
        return make_event_clip(kind, seed + 100003, n_frames, **config_overrides)
    frames = render_frames(conv, t_clip, n_frames)
    rel = [ConveyorEvent(e.kind, e.t_start_s - t_clip, e.t_end_s - t_clip, e.uids) for e in events]
    return frames, rel, conv


def make_event_video(duration_s: float, seed: int, events_per_minute: float = 6.0,
                     kinds: tuple[str, ...] = ("jam", "fall", "rollback"), **config_overrides
                     ) -> tuple[np.ndarray, list[ConveyorEvent], EventConveyor]:
    """A long video with randomly scheduled, non-overlapping events (>= 3 s apart) of `kinds`.
    Returns frames (N, H, W, 3) uint8, the ground-truth events and the conveyor."""
    fps = config_overrides.get("fps", 10.0)
    conv = event_video_conveyor(duration_s, seed, events_per_minute, kinds, **config_overrides)
    n_frames = int(duration_s * fps)
    return render_frames(conv, 0.0, n_frames), conv.events(duration_s), conv


def event_video_conveyor(duration_s: float, seed: int, events_per_minute: float = 6.0,
                         kinds: tuple[str, ...] = ("jam", "fall", "rollback"), **config_overrides) -> EventConveyor:
    """The conveyor of `make_event_video` (same schedule for the same arguments), without rendering:
    for streaming it frame by frame (e.g. through `fovea.line.sources.ConveyorSource`)."""
    config_overrides = dict(config_overrides)
    rng = np.random.default_rng([seed, 78])
    fps = config_overrides.pop("fps", 10.0)
    belt_speed = config_overrides.get("belt_speed_mm_s", 400.0)
    n_obj = int(duration_s * belt_speed / 120) + 10
    cfg = _clip_config(rng, seed, 0.0, n_objects=n_obj, fps=fps, **config_overrides)
    probe = Conveyor(cfg)
    schedule = EventSchedule()
    n_events = max(1, int(round(duration_s / 60 * events_per_minute)))
    slots = np.linspace(2.0, duration_s - 4.0, n_events + 1)
    for a, b in zip(slots[:-1], slots[1:]):
        kind = str(rng.choice(kinds))
        t0 = float(rng.uniform(a, max(a, b - 3.0)))
        if kind == "jam":
            schedule.jams.append((t0, t0 + float(rng.uniform(1.5, min(3.0, b - t0 - 0.5))),
                                  float(rng.uniform(0.5, 0.85)) * cfg.view_mm))
            continue
        conv_now = EventConveyor(cfg, EventSchedule(jams=list(schedule.jams)))
        if kind == "fall":                  # one the camera sees whole (fall_in_view), before the next slot
            for _ in range(20):             # a few start times in the slot until an item qualifies
                pick = _pick_fall(conv_now, rng, t0, t_last_s=b)
                if pick is not None:
                    schedule.falls.append((pick[0], t0, pick[1]))
                    break
                t0 = float(rng.uniform(a, max(a, b - 3.0)))
            continue
        x = conv_now.positions(t0)[0]
        cand = np.nonzero((x > 0.2 * cfg.view_mm) & (x < 0.7 * cfg.view_mm))[0]
        if len(cand) == 0:
            continue
        uid = int(rng.choice(cand))
        schedule.rollbacks.append((uid, t0, float(rng.uniform(1.0, 1.6)), float(rng.uniform(200, 350))))
    del probe
    return EventConveyor(cfg, schedule)


def write_mp4(path, frames: np.ndarray, fps: float = 10.0):
    """Encode (N, H, W, 3) uint8 RGB frames to H.264 MP4 with PyAV (see fovea.video.decode.write_video)."""
    import av
    from fractions import Fraction
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        out.mux(stream.encode())
    return path
