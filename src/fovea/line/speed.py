"""Belt speed from tracked motion (or a belt encoder), with its own uncertainty and change points.

Model: the belt speed is piecewise constant; a ramp is a run of small steps. Every usable frame
brings samples `(dx_mm, dt_s)`: for each record seen in it, the displacement of a comparable
point (centre of an uncut box, or the uncut edge of a box cut by the image edge) since its oldest
sighting inside the current segment and the last `window_s`; with an encoder, the belt travel
between readings. The frame's estimate is the median of the samples' speeds, so one bad box
(a merged blob, a shadow) does not move it.

A frame estimate outside the tolerance of the current segment is held as a suspect; if the next
frame deviates the same way, a new segment starts at the suspect frame: a speed change
(`SpeedChange`, logged by the runner). A single deviating frame (a mis-stamped frame, a bad box)
is dropped, so it never moves the estimate. A segment is `settled` once its samples span
`settle_s`; until then, while a suspect frame is pending, and whenever the newest sample is older
than `max_age_s`, the speed is not trusted and the policy sends items whose deadline depends on
it to the default route. Samples implying a speed <= 0 or above `max_speed_mm_s` are not physical
and are ignored.

Acceleration (`accel_mm_s2`): least-squares slope of the frame estimates over the last
`accel_window_s`; a slow ramp never trips the change test, but an item's deadline a second away
still moves by a * T^2 / 2, so the policy counts it (see `fovea.line.policy`).

History (`history`, `speed_range`): every frame estimate, also those a segment restart or a
suspect frame did not keep, so that the speeds the belt ran at between two moments are known
even through a ramp that the piecewise-constant estimate only follows in steps.

Uncertainty (`rel_err`, relative, about one sigma): the larger of the quantization bound
`quant_mm / (baseline_s * v) / sqrt(n)` (`quant_mm` = one pixel in mm, or the encoder step) and
the robust spread of the samples `1.4826 MAD / v / sqrt(n)`. Tolerance for a change:
`max(change_rel, k_sigma * per-sample quantization bound)` of the segment speed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from fovea.errors import ConfigError


@dataclass
class SpeedChange:
    """A detected change of belt speed: seen at capture time `t`, previous settled speed -> new estimate."""

    t: float
    from_mm_s: float
    to_mm_s: float
    source: str                # "tracking" | "encoder" | "stale" (no sample for longer than max_age_s)


@dataclass
class SpeedTrust:
    """What the policy needs: the speed, whether it may be used, and how far it may be off."""

    speed_mm_s: float
    known: bool
    rel_err: float             # about one sigma, relative; inf when not known
    reason: str                # "" when known, else "speed_unsettled" | "speed_stale" | "speed_unmeasured"
    accel_mm_s2: float = 0.0   # recent trend of the speed (slow ramps)


class BeltSpeedEstimator:
    """Piecewise-constant belt speed from per-frame displacement samples; see the module docstring."""

    def __init__(self, nominal_mm_s: float, quant_mm: float, window_s: float = 0.3, settle_s: float = 0.2,
                 change_rel: float = 0.05, k_sigma: float = 3.0, max_age_s: float = 1.0, smooth_frames: int = 3,
                 max_speed_mm_s: float | None = None, accel_window_s: float = 1.0):
        if nominal_mm_s <= 0 or quant_mm <= 0 or window_s <= 0 or settle_s <= 0 or not 0 < change_rel < 1:
            raise ConfigError(f"BeltSpeedEstimator: nominal_mm_s={nominal_mm_s}, quant_mm={quant_mm}, "
                              f"window_s={window_s}, settle_s={settle_s} must be > 0 and change_rel={change_rel} "
                              "in (0, 1)")
        self.quant_mm, self.window_s, self.settle_s = quant_mm, window_s, settle_s
        self.change_rel, self.k_sigma, self.max_age_s = change_rel, k_sigma, max_age_s
        self.speed_mm_s = float(nominal_mm_s)
        self.settled_speed_mm_s: float | None = None    # last settled value (None: never measured)
        self.t_segment = -math.inf                    # start of the current constant-speed segment
        self.t_sample = -math.inf                     # capture time of the newest sample
        self.t_onset_lo = -math.inf                   # a change began after this (last sample on the old speed)
        self.settled = False
        self.rel_err = math.inf
        self._frames: deque[tuple[float, np.ndarray, np.ndarray]] = deque(maxlen=max(1, smooth_frames))
        self.n_changes = 0
        self.max_speed_mm_s = max_speed_mm_s if max_speed_mm_s is not None else 5 * nominal_mm_s
        self._suspect: tuple[float, float, float] | None = None   # (t, v_frame, previous sample t) of a deviating frame
        self.accel_window_s = accel_window_s
        self._trend: deque[tuple[float, float]] = deque()      # (t, v_frame) of recent frames
        self.accel_mm_s2 = 0.0
        self.history: deque[tuple[float, float]] = deque(maxlen=600)   # (t, v_frame) of every frame

    # ------------------------------------------------------------------ input
    def baseline_start(self, t: float) -> float:
        """Oldest sighting time a sample taken at t may start from (segment start and window)."""
        return max(self.t_segment, t - self.window_s)

    def update(self, t: float, samples: list[tuple[float, float]], quant_mm: float | None = None
               ) -> SpeedChange | None:
        """Fold one frame's samples [(dx_mm, dt_s), ...] taken at capture time t; a change or None."""
        q = self.quant_mm if quant_mm is None else quant_mm
        ok = [(dx, dt) for dx, dt in samples if dt > 1e-6 and 0 < dx / dt <= self.max_speed_mm_s]
        if not ok:
            return None
        dx = np.array([s[0] for s in ok], np.float64)
        dt = np.array([s[1] for s in ok], np.float64)
        v = dx / dt
        v_frame = float(np.median(v))
        if not self.history or t > self.history[-1][0]:
            self.history.append((t, v_frame))
        source = "tracking" if quant_mm is None else "encoder"
        prev = self.settled_speed_mm_s
        if prev is not None and t - self.t_sample > self.max_age_s:
            # nothing measured for too long: the speed may have changed unseen; start afresh
            self._restart(t, v_frame)
            if abs(v_frame - prev) > self._tolerance(prev, float(np.median(dt)), len(v), q):
                self.n_changes += 1
                return SpeedChange(t, prev, v_frame, "stale")
            return None
        t_before = self.t_sample
        self.t_sample = t
        ref = self.speed_mm_s
        if self._frames and abs(v_frame - ref) > self._tolerance(ref, float(np.median(dt)), len(v), q):
            sus = self._suspect
            if sus is None or (sus[1] - ref) * (v_frame - ref) <= 0:
                self._suspect = (t, v_frame, t_before)     # wait for the next frame before believing it
                return None
            # confirmed: the speed changed before the suspect frame; these samples straddle it and
            # only seed the new value
            was_settled = self.settled
            self._restart(sus[0], v_frame, onset_lo=sus[2])
            self.t_sample = t
            if was_settled:
                self.n_changes += 1
                return SpeedChange(t, prev if prev is not None else ref, v_frame, source)
            return None
        self._suspect = None
        self._fit_trend(t, v_frame)
        self._frames.append((t, v, dt))
        allv = np.concatenate([f[1] for f in self._frames])
        alldt = np.concatenate([f[2] for f in self._frames])
        self.speed_mm_s = float(np.median(allv))
        self.rel_err = self._rel_err(allv, alldt, q)
        if self.settled or float(np.max(dt)) >= self.settle_s - 1e-6:
            self.settled = True
            self.settled_speed_mm_s = self.speed_mm_s      # follows slow drift (wobble) while settled
        return None

    def _fit_trend(self, t: float, v_frame: float) -> None:
        """Slope of the recent frame estimates (mm/s^2); 0 until they span half the window."""
        self._trend.append((t, v_frame))
        while self._trend and self._trend[0][0] < t - self.accel_window_s:
            self._trend.popleft()
        ts = np.array([x[0] for x in self._trend])
        if len(ts) < 4 or ts[-1] - ts[0] < self.accel_window_s / 2:
            self.accel_mm_s2 = 0.0
            return
        vs = np.array([x[1] for x in self._trend])
        self.accel_mm_s2 = float(np.polyfit(ts - ts[-1], vs, 1)[0])

    def _restart(self, t: float, v_mm_s: float, onset_lo: float | None = None) -> None:
        self.t_onset_lo = self.t_sample if onset_lo is None else onset_lo
        self.t_segment = t
        self.t_sample = t
        self.settled = False
        self.speed_mm_s = v_mm_s
        self.rel_err = math.inf
        self._frames.clear()
        self._suspect = None
        self._trend.clear()
        self.accel_mm_s2 = 0.0

    def _tolerance(self, v: float, dt_s: float, n: int, q: float) -> float:
        per_sample = 2 * q / max(dt_s, 1e-6)               # both ends quantized to one step
        return max(self.change_rel * abs(v), self.k_sigma * per_sample / math.sqrt(max(n, 1)) / 2)

    def _rel_err(self, v: np.ndarray, dt: np.ndarray, q: float) -> float:
        s = abs(float(np.median(v))) or 1e-9
        n = len(v)
        quant = q / float(np.median(dt)) / s / math.sqrt(n)
        mad = 1.4826 * float(np.median(np.abs(v - np.median(v)))) / s / math.sqrt(n) if n > 1 else 0.0
        return max(quant, mad)

    # ------------------------------------------------------------------ output
    def speed_range(self, t_from: float, t_to: float) -> tuple[float, float]:
        """(lowest, highest) belt speed measured over [t_from, t_to] (mm/s): the frame estimates taken
        in that span and up to one baseline (window_s) after it (a frame's samples reach back that
        far), and the current estimate."""
        vs = [v for t, v in self.history if t_from <= t <= t_to + self.window_s]
        vs.append(self.speed_mm_s)
        return min(vs), max(vs)

    def trust(self, now: float) -> SpeedTrust:
        """Whether the current estimate may time a gate at `now` (see the module docstring)."""
        if self.settled_speed_mm_s is None and not self.settled:
            return SpeedTrust(self.speed_mm_s, False, math.inf, "speed_unmeasured")
        if not self.settled or self._suspect is not None:
            return SpeedTrust(self.speed_mm_s, False, math.inf, "speed_unsettled")
        if now - self.t_sample > self.max_age_s:
            return SpeedTrust(self.speed_mm_s, False, math.inf, "speed_stale")
        return SpeedTrust(self.speed_mm_s, True, self.rel_err, "", self.accel_mm_s2)
