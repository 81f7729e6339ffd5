"""Test doubles for line runs: an oracle classifier and fault-injecting localizers, sources and links.

These stand in for real models so 10,000-object runs finish in minutes; they read the
synthetic conveyor's ground truth that the runner forwards in crop metadata
(`meta["truth_class"]`). Never use them as a model on a real line.

Fault injection (used by `fovea.line.fuzz`):
- `OraclePredictor(slow_every=k, slow_s=...)`: every k-th inference call takes `slow_s` longer;
  `stalls=[(t, s)]`: one call at or after t hangs for s seconds.
- `FaultySource`: frames whose image is older than their timestamp (stale frame, fresh stamp), a
  timestamp shifted (stepped back) or repeated from the previous frame.
- `FaultyLink`: a pyserial-like wrapper around any port that loses or delays chosen lines in
  either direction (host -> MCU `tx`, MCU -> host `rx`), matched by verb and time window.
"""

from __future__ import annotations

import numpy as np

from fovea.core import ClassResult, Detections, Frame
from fovea.errors import ConfigError, ProtocolError
from fovea.line.clock import RealClock
from fovea.line.protocol import parse_line


class OraclePredictor:
    """TEST DOUBLE: labels crops from ground truth with a controllable error rate and latency.

    A wrong label (probability `error_rate` per crop) picks another class uniformly. The top
    probability is drawn from U(conf_low, 0.99). `latency_s` (+ `per_crop_s` each) passes on the
    line clock; `stalls` = [(t, seconds), ...] makes the first call at or after clock time t
    hang for that long (a model stall). `slow_every=k` makes every k-th call (k, 2k, ...) take
    `slow_s` seconds longer (an inference that regularly overruns its budget).
    """

    def __init__(self, class_names=("good", "damaged", "box"), error_rate: float = 0.0, conf_low: float = 0.85,
                 latency_s: float = 0.0, per_crop_s: float = 0.0, clock=None, stalls=(), seed: int = 0,
                 slow_every: int = 0, slow_s: float = 0.0):
        if not 0 <= error_rate <= 1 or not 0 < conf_low <= 0.99:
            raise ConfigError(f"OraclePredictor: error_rate={error_rate} must be in [0, 1], conf_low={conf_low} in (0, 0.99]")
        if slow_every < 0 or slow_s < 0:
            raise ConfigError(f"OraclePredictor: slow_every={slow_every} and slow_s={slow_s} must be >= 0")
        self.slow_every, self.slow_s = int(slow_every), float(slow_s)
        self.class_names = tuple(class_names)
        self.error_rate, self.conf_low = error_rate, conf_low
        self.latency_s, self.per_crop_s = latency_s, per_crop_s
        self.clock = clock or RealClock()
        self.stalls = sorted(stalls)
        self.seed = seed
        self.calls = 0

    def predict(self, frames) -> list[ClassResult]:
        self.calls += 1
        now = self.clock.now()
        delay = self.latency_s + self.per_crop_s * len(frames)
        if self.slow_every and self.calls % self.slow_every == 0:
            delay += self.slow_s
        while self.stalls and now >= self.stalls[0][0]:
            delay += self.stalls.pop(0)[1]
        if delay > 0:
            self.clock.sleep(delay)
        return [self._one(f) for f in frames]

    def _one(self, f) -> ClassResult:
        meta = f.meta if isinstance(f, Frame) else {}
        C = len(self.class_names)
        truth = meta.get("truth_class")
        key = [self.seed, int(meta.get("frame_index", 0)), int(meta.get("truth_uid", -1)) + 1]
        rng = np.random.default_rng(key)
        if truth in self.class_names:
            k = self.class_names.index(truth)
            if rng.random() < self.error_rate:
                k = int(rng.choice([j for j in range(C) if j != k]))
            top = rng.uniform(self.conf_low, 0.99)
        else:
            k, top = int(rng.integers(C)), 1.0 / C + 0.01
        rest = rng.random(C - 1) + 1e-3
        rest = rest / rest.sum() * (1 - top)
        probs = np.empty(C, np.float32)
        probs[k] = top
        probs[np.arange(C) != k] = rest
        return ClassResult(probs=probs, class_names=self.class_names)


class FaultyLocalizer:
    """Wraps a localizer: blanks its output on `dropout_frames`, and optionally adds tracker ids.

    With `tracker_ids=True` each detection gets the ground-truth uid of its best-matching item as
    `tracker_id` (a perfect external tracker); `swap_ids_at=(frame, uid_a, uid_b)` swaps two of
    them from that frame on (an ID switch).
    """

    def __init__(self, inner, dropout_frames=(), tracker_ids: bool = False, swap_ids_at=None):
        self.inner = inner
        self.dropout = set(dropout_frames)
        self.tracker_ids = tracker_ids
        self.swap = swap_ids_at

    def localize(self, frame: Frame) -> Detections:
        dets = self.inner.localize(frame)
        if frame.index in self.dropout:
            return Detections.empty()
        if self.tracker_ids and len(dets):
            from fovea.line.runner import match_truth

            uids = match_truth(dets.xyxy, frame.meta.get("truth", []))
            ids = np.array([-1 if u is None else u for u in uids], np.int64)
            if self.swap is not None and frame.index >= self.swap[0]:
                a, b = self.swap[1], self.swap[2]
                ids = np.where(ids == a, -2, ids)
                ids = np.where(ids == b, a, ids)
                ids = np.where(ids == -2, b, ids)
            dets.tracker_id = ids
        return dets


class FaultySource:
    """TEST DOUBLE: wraps a `ConveyorSource` and falsifies chosen frames by exposure index.

    stale: {k: lag} frame k shows the belt as it was `lag` frames earlier but keeps its fresh
        timestamp (a driver that hands out an old buffer); its ground truth is the old one, so
        audits stay physical.
    stamp_shift_s: {k: dt} frame k's `t_capture` is shifted by dt (negative: stepped back).
    stamp_repeat: frame k carries the previous frame's `t_capture` (a repeated timestamp).
    Every falsified frame is marked `meta["injected"]` (for audits; the runner must not read it).
    Other attributes are the wrapped source's.
    """

    def __init__(self, inner, stale: dict[int, int] | None = None, stamp_shift_s: dict[int, float] | None = None,
                 stamp_repeat=()):
        self.inner = inner
        self.stale = dict(stale or {})
        self.stamp_shift_s = dict(stamp_shift_s or {})
        self.stamp_repeat = set(stamp_repeat)
        if any(lag < 1 for lag in self.stale.values()):
            raise ConfigError(f"FaultySource: stale lags {self.stale} must be >= 1 frame")
        self._last_t: float | None = None
        self.injected: dict[int, str] = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self) -> Frame | None:
        f = self.inner.read()
        if f is None:
            return None
        k = f.index
        if k in self.stale and k - self.stale[k] >= 0:
            conv, fps = self.inner.conveyor, self.inner.fps
            t_exp = (k - self.stale[k]) / fps
            img, truth = conv.render(t_exp)
            f = Frame(img, t_capture=f.t_capture, source_id=f.source_id, index=k,
                      meta={**f.meta, "t_exposure": self.inner.t0 + t_exp, "truth": truth})
            self.injected[k] = f"stale_{self.stale[k]}"
        if k in self.stamp_shift_s:
            f.t_capture += self.stamp_shift_s[k]
            self.injected[k] = f"stamp_shift_{self.stamp_shift_s[k]:+.3f}"
        elif k in self.stamp_repeat and self._last_t is not None:
            f.t_capture = self._last_t
            self.injected[k] = "stamp_repeat"
        if k in self.injected:
            f.meta["injected"] = self.injected[k]
        self._last_t = f.t_capture
        return f


class LineFault:
    """One rule for `FaultyLink`: lose or delay up to `count` lines whose verb matches, in [t_from, t_to).

    direction: "tx" (host -> MCU) or "rx" (MCU -> host); verb: e.g. "DONE", "ACK", "FIRE", "PING",
    "PONG", "READY", "STATE" or None for any line; action: "drop" or "delay" (by delay_s).
    """

    def __init__(self, direction: str, verb: str | None, t_from: float, t_to: float = float("inf"),
                 action: str = "drop", delay_s: float = 0.0, count: int = 1):
        if direction not in ("tx", "rx") or action not in ("drop", "delay") or count < 1 or delay_s < 0:
            raise ConfigError(f"LineFault({direction!r}, {verb!r}, action={action!r}, count={count}, "
                              f"delay_s={delay_s}): direction tx|rx, action drop|delay, count >= 1, delay_s >= 0")
        self.direction, self.verb, self.t_from, self.t_to = direction, verb, t_from, t_to
        self.action, self.delay_s, self.left = action, delay_s, count
        self.hits: list[tuple[float, str]] = []

    def __repr__(self) -> str:
        return (f"LineFault({self.direction}, {self.verb}, {self.action}"
                f"{f' {self.delay_s:.3f}s' if self.action == 'delay' else ''}, t={self.t_from:.2f}, left={self.left})")

    def applies(self, line: str, t: float) -> bool:
        if self.left <= 0 or not self.t_from <= t < self.t_to:
            return False
        if self.verb is not None:
            try:
                if parse_line(line).verb != self.verb:
                    return False
            except ProtocolError:
                return False
        self.left -= 1
        self.hits.append((t, line))
        return True


class FaultyLink:
    """TEST DOUBLE: a pyserial-like port wrapper that loses or delays lines by `LineFault` rules.

    A serial line is a FIFO: a delayed line holds back every line behind it. Delayed host lines
    reach the MCU at their due time (exactly, through `clock.call_at` when the clock has timers;
    else at the next port call); delayed MCU lines are released to the host's reads once due. A
    line due while the cable is cut is lost. Everything else (`set_down`, `emulator`, `is_open`,
    ...) is the wrapped port's.
    """

    def __init__(self, inner, clock, rules: list[LineFault] = ()):
        self.inner, self.clock = inner, clock
        self.rules = list(rules)
        self._rx: list[tuple[float, bytes]] = []     # (due, line) FIFO towards the host
        self._tx: list[tuple[float, bytes]] = []     # (due, line) FIFO towards the MCU
        self.lost: list[tuple[float, str, str]] = []     # (t, direction, line)
        self.delayed: list[tuple[float, str, str, float]] = []   # (t, direction, line, delay_s)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _rule(self, direction: str, line: str, t: float) -> LineFault | None:
        for r in self.rules:
            if r.direction == direction and r.applies(line, t):
                return r
        return None

    def write(self, data: bytes) -> int:
        now = self.clock.now()
        self._deliver_tx(now)
        if self.inner.down or not self.inner.is_open:       # a cut cable fails loudly
            return self.inner.write(data)
        line = data.decode("ascii", "replace").strip()
        r = self._rule("tx", line, now)
        if r is not None and r.action == "drop":
            self.lost.append((now, "tx", line))
            return len(data)
        delay = r.delay_s if r is not None else 0.0
        if delay == 0 and not self._tx:
            return self.inner.write(data)
        due = max([now + delay] + [d for d, _ in self._tx[-1:]])
        if delay:
            self.delayed.append((now, "tx", line, delay))
        self._tx.append((due, data))
        if hasattr(self.clock, "call_at"):
            self.clock.call_at(due, lambda: self._deliver_tx(self.clock.now()))
        return len(data)

    def _deliver_tx(self, now: float) -> None:
        while self._tx and self._tx[0][0] <= now:
            _, data = self._tx.pop(0)
            if self.inner.down:
                self.lost.append((now, "tx", data.decode("ascii", "replace").strip()))
            else:
                self.inner.emulator.feed(data, now)

    def _pull(self) -> None:
        now = self.clock.now()
        self._deliver_tx(now)
        while self.inner.in_waiting > 0:
            raw = self.inner.readline()
            if not raw:
                break
            line = raw.decode("ascii", "replace").strip()
            r = self._rule("rx", line, now)
            if r is not None and r.action == "drop":
                self.lost.append((now, "rx", line))
                continue
            delay = r.delay_s if r is not None else 0.0
            if delay:
                self.delayed.append((now, "rx", line, delay))
            self._rx.append((max([now + delay] + [d for d, _ in self._rx[-1:]]), raw))

    @property
    def in_waiting(self) -> int:
        self._pull()
        now = self.clock.now()
        return sum(len(raw) for due, raw in self._rx if due <= now)

    def readline(self) -> bytes:
        if not self._rx:
            self._pull()
        if self._rx and self._rx[0][0] <= self.clock.now():
            return self._rx.pop(0)[1]
        return b""

    def set_down(self, down: bool) -> None:
        if down:
            now = self.clock.now()
            for direction, q in (("rx", self._rx), ("tx", self._tx)):
                self.lost.extend((now, direction, raw.decode("ascii", "replace").strip()) for _, raw in q)
                q.clear()
        self.inner.set_down(down)

    def advance(self) -> None:
        self._deliver_tx(self.clock.now())
        self.inner.advance()
