"""Frame time checked: a frame is used only if its stamp increases and its content agrees with it.

Two checks, both before a frame touches the tracker:
1. Stamp: `t_capture` must increase over the last frame used (`timestamp_repeated` when equal,
   `timestamp_backwards` when smaller).
2. Content: the frame's boxes, compared edge-for-edge with the tracked records' predictions
   (`BeltTracker.content_shift`), share one shift s. |s| <= tol (tol = max(3 px, time_tol_s * v))
   means the image shows the belt where its stamp says. Otherwise the frame is HELD, not used,
   because a real speed change looks the same in its first frame. The next frame decides:
   - it agrees with the predictions: the held frame was stale or mis-stamped (`content_behind_stamp`
     for s < 0, `content_ahead_of_stamp` for s > 0) and is dropped as a fault;
   - it continues the held frame's motion (the shift grows linearly, s(t) = (v' - v)(t - tau) with
     tau between the last used frame and the held one, and v' > 0): a speed change, both are used;
   - neither: the held frame is a fault and the new one is held in its place.
A frame with nothing to compare (empty belt, only new items) passes. Faults are logged by the
runner as `fault` events with kind `frame_time`, the cause, and the implied time offset s / v.

3. Grid: a camera exposes on a fixed period (the median of recent stamp intervals; 1 / fps at the
   start). A frame whose stamp falls off that grid by more than a quarter period is mis-stamped
   (`timestamp_off_grid`, a stamp error too small for the content check) and is not used: its
   positions would sit at the wrong time and bend every prediction after it.
Safety net: if three frames in a row agree with each other but not with the predictions, the
predictions are what is wrong (`prediction_offset` fault) and the third frame is used, so a bad
tracker state can never blind the line for good.

Doubt: from the first frame whose content contradicts the predictions (held, dropped, or taken by
the safety net) until `DOUBT_CLEAR_FRAMES` frames in a row agree with them again, the host does not
know where the items are on the belt: either the frames or the predictions are off, and a frame
that agrees now and then between wrong ones proves nothing. One contradicting frame alone (a
jittered stamp) followed by an agreeing one ends the doubt at once: that frame was never used, and
the next one confirms the predictions. `doubt_from` is then the capture time
of the last frame that agreed before the episode (the belt may have moved other than predicted
since), `max_offset_mm` the largest shift the safety net applied. Stamp-only faults (repeated,
backwards, off the grid) and unusable frames neither start nor end an episode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fovea.line.config import LineConfig

DOUBT_CLEAR_FRAMES = 3      # frames in a row agreeing with the predictions that end a doubt episode


@dataclass
class Held:
    p: Any                 # the runner's Perception
    shift_mm: float
    t_ref: float           # capture time of the last used frame when it was held
    grid_ok: bool = True
    agree: int = 0         # earlier held frames in a row with the same shift


@dataclass
class TimeVerdict:
    """Frames to fold into the tracker now, in capture order, as (perception, shift_mm or None:
    measure again right before use, timing_ok: on the camera's grid), and the fault events to log."""

    use: list[tuple[Any, float | None, bool]] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)


class FrameTimeGuard:
    """Stamp and content checks of frames before they reach the tracker (see the module docstring)."""

    def __init__(self, tracker, config: LineConfig):
        self.tracker, self.cfg = tracker, config
        self.t_used: float | None = None
        self.held: Held | None = None
        self._intervals: deque[float] = deque(maxlen=50)
        self._t_grid: float | None = None          # last stamp that sat on the camera grid
        self._t_prev: float | None = None
        self.t_agreed: float | None = None         # capture time of the last frame that agreed
        self.doubt_from: float | None = None       # see the module docstring; None: no doubt
        self.max_offset_mm = 0.0
        self._agree_run = 0
        self._n_disagree = 0                       # contradicting frames in the current episode

    @property
    def in_doubt(self) -> bool:
        """True while frame content and predictions disagree (see the module docstring)."""
        return self.doubt_from is not None

    def _disagree(self, t: float) -> None:
        if self.doubt_from is None:
            self.doubt_from = self.t_agreed if self.t_agreed is not None else t
            self.max_offset_mm = 0.0
            self._n_disagree = 0
        self._n_disagree += 1
        self._agree_run = 0

    def _agree(self, t: float) -> None:
        self.t_agreed = t
        self._agree_run += 1
        if self._agree_run >= DOUBT_CLEAR_FRAMES or self._n_disagree <= 1:
            self.doubt_from = None

    def period_s(self) -> float:
        """The camera's frame period: the most common recent stamp interval (intervals within 5 % of
        one another count together), so mis-stamped frames, however many, spread out and cannot
        move it; 1 / fps until 5 intervals are known."""
        if len(self._intervals) < 5:
            return 1.0 / self.cfg.fps
        iv = np.asarray(self._intervals)
        close = np.abs(iv[:, None] - iv[None, :]) <= 0.05 * iv[None, :]
        best = int(np.argmax(close.sum(axis=0)))
        return float(np.median(iv[close[:, best]]))

    def on_grid(self, t: float) -> bool:
        """True when t lies a whole number (>= 1) of frame periods after the last on-grid stamp."""
        if self._t_grid is None:
            return True
        k = (t - self._t_grid) / self.period_s()
        return round(k) >= 1 and abs(k - round(k)) <= 0.25

    def _stamp_seen(self, t: float) -> bool:
        """Record a stamp that passed the order check; returns whether it is on the grid.

        Period samples: every raw stamp interval (so a wrong configured fps is learnt) and the
        interval between on-grid stamps per elapsed period (so a grid survives stamps that are
        wrong every other frame)."""
        ok = self.on_grid(t)
        if self._t_prev is not None and t > self._t_prev:
            self._intervals.append(t - self._t_prev)
        if ok and self._t_grid is not None:
            # the period as seen between on-grid stamps: exact even when the stamps between are not
            k = max(round((t - self._t_grid) / self.period_s()), 1)
            self._intervals.append((t - self._t_grid) / k)
        self._t_prev = t
        if ok:
            self._t_grid = t
        return ok

    def tolerances(self, t: float | None = None) -> tuple[float, float]:
        """(tol_mm, max_shift_mm) for a frame captured at t: the stamp tolerance at the current belt
        speed, plus how far the predictions may have drifted since the last used frame on a speed
        known to rel_err (a quarter of the speed when it is not trusted: after a change or a long
        blind interval, motion alone cannot date a frame)."""
        v = self.tracker.speed_mm_s
        tol = max(3 * self.cfg.mm_per_px, self.cfg.time_tol_s * v)
        if t is not None and self.t_used is not None and t > self.t_used:
            trust = self.tracker.speed_trust(t)
            unc = trust.rel_err if trust.known else 0.25
            tol += unc * v * (t - self.t_used)
        return tol, max(2 * self.cfg.assoc_gate_mm, 0.35 * v, tol)

    def measure(self, p) -> tuple[float, int]:
        """(shift_mm, support) of a perception against the tracker's current predictions."""
        obs = self.tracker.observe(p.dets, p.frame.image.shape[1])
        tol, max_shift = self.tolerances(p.frame.t_capture)
        return self.tracker.content_shift(p.frame.t_capture, obs, tol, max_shift)

    def check(self, p) -> TimeVerdict:
        """Judge one perception (valid or not); see the module docstring."""
        out = TimeVerdict()
        t = p.frame.t_capture
        last = self.t_used
        if last is not None and t <= last + 1e-9:
            cause = "timestamp_repeated" if abs(t - last) <= 1e-9 else "timestamp_backwards"
            out.faults.append(self._fault(p, cause, t_last_used=last))
            return out
        if self.held is not None and t <= self.held.p.frame.t_capture + 1e-9:
            # the two disagree about time; the held frame was the suspect one
            out.faults.append(self._held_fault())
            self.held = None
        grid_ok = self._stamp_seen(t)
        if not grid_ok:
            out.faults.append(self._fault(p, "timestamp_off_grid", period_s=round(self.period_s(), 4),
                                          t_grid=self._t_grid))
            return out
        if not p.valid:
            if self.held is not None:
                out.faults.append(self._held_fault(detail="unconfirmed: the next frame was unusable"))
                self.held = None
            out.use.append((p, 0.0, grid_ok))
            self.t_used = t
            return out
        shift, support = self.measure(p)
        tol, _ = self.tolerances(t)
        if support == 0 or abs(shift) <= tol:
            if self.held is not None:
                out.faults.append(self._held_fault())
                self.held = None
            if support:
                self._agree(t)
            out.use.append((p, shift if support else 0.0, grid_ok))
            self.t_used = t
            return out
        self._disagree(t)
        if self.held is None:
            self.held = Held(p, shift, last if last is not None else t, grid_ok)
            return out
        h = self.held
        if self._continues(h, t, shift):
            out.use.append((h.p, h.shift_mm, h.grid_ok))
            out.use.append((p, None, grid_ok))
            self.held = None
            self.t_used = t
            return out
        out.faults.append(self._held_fault())
        tol, _ = self.tolerances(t)
        agree = h.agree + 1 if abs(shift - h.shift_mm) <= tol else 0
        if agree >= 2:
            out.faults.append(self._fault(p, "prediction_offset", shift_mm=round(shift, 1),
                                          detail="three frames agree with each other, not with the tracker"))
            self.max_offset_mm = max(self.max_offset_mm, abs(shift))
            out.use.append((p, shift, grid_ok))
            self.held = None
            self.t_used = t
            return out
        self.held = Held(p, shift, last if last is not None else t, grid_ok, agree)
        return out

    def _continues(self, h: Held, t: float, shift: float) -> bool:
        """True when the held frame and this one show one speed change (see the module docstring)."""
        t_h = h.p.frame.t_capture
        if t - t_h <= 1e-9:
            return False
        a = (shift - h.shift_mm) / (t - t_h)            # v' - v
        v_new = self.tracker.speed_mm_s + a
        if v_new <= 0.1 * self.tracker.speed_mm_s or abs(a) < 1e-9:
            return False
        since_change = h.shift_mm / a                     # t_h - tau
        tol_t = self.cfg.time_tol_s
        return -tol_t <= since_change <= (t_h - h.t_ref) + tol_t

    def flush(self) -> TimeVerdict:
        """End of run: a frame still held is dropped (nothing can confirm it)."""
        out = TimeVerdict()
        if self.held is not None:
            out.faults.append(self._held_fault(detail="unconfirmed at the end of the run"))
            self.held = None
        return out

    def _held_fault(self, detail: str = "") -> dict:
        h = self.held
        cause = "content_behind_stamp" if h.shift_mm < 0 else "content_ahead_of_stamp"
        v = self.tracker.speed_mm_s
        return self._fault(h.p, cause, shift_mm=round(h.shift_mm, 1), offset_s=round(h.shift_mm / v, 4),
                           **({"detail": detail} if detail else {}))

    @staticmethod
    def _fault(p, cause: str, **kw) -> dict:
        return dict(kind="frame_time", cause=cause, frame=p.frame.index, t_capture=p.frame.t_capture,
                    n=len(p.dets), **kw)
