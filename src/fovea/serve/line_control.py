"""The server's sorting line: start / stop / arm / disarm a run, live view and event stream.

A run is `fovea.line.runner.LineRunner.run_threaded` on the real clock in a background thread,
by default on the synthetic conveyor with the simulated actuator (the firmware emulator), with
the oracle classifier or any served model (through `fovea.line.adapters.AdaptedPredictor`).
The server hooks in only through the runner's public seams: the event log (a `LiveLog` that also
feeds the live counters), the annotator (`StreamAnnotator`: draws and JPEG-encodes each frame
ONCE into a `FrameHub` that every MJPEG client reads), and the source (`StoppableSource`: stop
makes it end, so the runner settles every record and gives each its one outcome, as at the end
of any run). Arm / disarm send ARM / SAFE to the MCU (see `set_armed`).

Line state: STOPPED (no run), RUNNING, DEGRADED (a stage stalled: runner health), SAFE (the MCU
is disarmed or latched safe: no gate moves, items take the default lane).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

from fovea.errors import ConfigError, LineError
from fovea.line.annotate import LineAnnotator
from fovea.line.events import EventLog
from fovea.serve.render import encode

def finite(x: Any) -> Any:
    """x with NaN/inf floats as None, recursively (browsers' JSON.parse refuses NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, np.generic):
        return finite(x.item())
    return x


LIVE_TYPES = ("decision", "outcome", "fault", "health", "run_start", "run_end", "line")
SPARK_N = 60


class FrameHub:
    """The latest annotated frame as JPEG bytes (encoded once), read by every stream client."""

    def __init__(self):
        self.seq = 0
        self.jpeg: bytes | None = None
        self.closed = False
        self.clients = 0          # open /stream.mjpg responses (changed on the event loop only)
        self._lock = threading.Lock()

    def publish(self, jpeg: bytes) -> None:
        with self._lock:
            self.jpeg, self.seq = jpeg, self.seq + 1

    def latest(self) -> tuple[int, bytes | None]:
        with self._lock:
            return self.seq, self.jpeg


class EventHub:
    """A ring of the last `maxlen` live events, numbered, for any number of stream readers."""

    def __init__(self, maxlen: int = 1000):
        self._ring: deque[tuple[int, dict]] = deque(maxlen=maxlen)
        self.seq = 0
        self._lock = threading.Lock()

    def push(self, ev: dict) -> None:
        with self._lock:
            self.seq += 1
            self._ring.append((self.seq, ev))

    def since(self, seq: int) -> list[tuple[int, dict]]:
        with self._lock:
            return [(s, e) for s, e in self._ring if s > seq]


class LiveLog(EventLog):
    """An EventLog that also hands each event to `on_event` (live counters, event stream)."""

    def __init__(self, on_event, **kw):
        super().__init__(**kw)
        self.on_event = on_event

    def emit(self, t: float, type: str, **fields: Any) -> dict[str, Any]:
        ev = super().emit(t, type, **fields)
        try:
            self.on_event(ev)
        except Exception:   # a dashboard bug must never stop the line
            pass
        return ev


class StoppableSource:
    """Wraps a line source; after `stop()` a read returns None (the source's end), so the run settles."""

    def __init__(self, inner):
        self.inner = inner
        self.stopped = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self):
        return None if self.stopped.is_set() else self.inner.read()


class StreamAnnotator(LineAnnotator):
    """Draws boxes, record ids and lanes (LineAnnotator.annotate) and publishes JPEGs to a FrameHub,
    at most `max_fps` per second (frames in between are not encoded at all)."""

    def __init__(self, hub: FrameHub, max_fps: float, scale: int, **kw):
        super().__init__("", **kw)
        self.hub, self.min_dt, self.scale = hub, 1.0 / max(max_fps, 0.1), scale
        self._t_last = -1e9

    def add(self, perception, records) -> None:
        now = time.monotonic()
        if now - self._t_last < self.min_dt:
            return
        self._t_last = now
        img = self.annotate(perception.frame.image, perception.dets, records)
        if self.scale > 1:
            img = np.repeat(np.repeat(img, self.scale, 0), self.scale, 1)
        self.hub.publish(encode(img, ".jpg"))
        self.frames += 1

    def close(self) -> None:
        pass


def set_armed(actuator, armed: bool) -> None:
    """Send ARM or SAFE to the MCU and set the host's re-arm policy to match (`ProtocolActuator.set_armed`)."""
    actuator.set_armed(armed, who="dashboard")


class LineController:
    """Owns at most one line run at a time and what the dashboard shows of it."""

    def __init__(self, registry=None, stream_fps: float = 15.0, frame_scale: int = 3):
        self.registry = registry
        self.frames = FrameHub()
        self.events = EventHub()
        self.stream_fps, self.frame_scale = stream_fps, frame_scale
        self.closed = False
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._runner = self._source = self._actuator = None
        self.run_id = 0
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.lanes: Counter = Counter()
        self.n_decisions = self.n_faults = self.n_frames = 0
        self.recent_decisions: deque[dict] = deque(maxlen=25)
        self.recent_faults: deque[dict] = deque(maxlen=10)
        self.latency_ms: dict[str, deque] = {k: deque(maxlen=SPARK_N)
                                             for k in ("queue", "infer", "decide", "send", "ack", "done")}
        self._cmd_t: dict[Any, float] = {}
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> str:
        if not self.running or self._runner is None:
            return "STOPPED"
        act = self._actuator
        if act is not None and (getattr(act, "mcu_state", "") == "SAFE" or not act.cfg.auto_arm):
            return "SAFE"
        return self._runner.health

    def status(self) -> dict[str, Any]:
        """What the dashboard shows: state, counters per lane, recent decisions and faults, latencies."""
        with self._lock:
            return finite({"state": self.state, "run_id": self.run_id, "running": self.running, "frames": self.n_frames,
                    "lanes": dict(self.lanes), "outcomes": sum(self.lanes.values()), "decisions": self.n_decisions,
                    "faults": self.n_faults, "recent_decisions": list(self.recent_decisions)[::-1],
                    "recent_faults": list(self.recent_faults)[::-1],
                    "latency_ms": {k: [round(v, 2) for v in d] for k, d in self.latency_ms.items()},
                    "armed": bool(self._actuator is not None and self._actuator.cfg.auto_arm), "info": self.info})

    # ------------------------------------------------------------------ events
    def on_event(self, ev: dict) -> None:
        """Update the live counters from one line event (called from the runner's threads)."""
        t = ev["type"]
        with self._lock:
            if t == "frame_done":
                self.n_frames += 1
                self._sample("queue", ev["t_infer_start"] - ev["t_capture"])
                self._sample("infer", ev["t"] - ev["t_infer_start"])
            elif t == "decision":
                self.n_decisions += 1
                if "t_evidence" in ev:
                    self._sample("decide", ev["t"] - ev["t_evidence"])
                self.recent_decisions.append({k: ev.get(k) for k in ("t", "record", "lane", "class_name",
                                                                      "confidence", "reason")})
            elif t == "outcome":
                self.lanes[ev["lane"]] += 1
            elif t == "fault":
                self.n_faults += 1
                self.recent_faults.append({k: v for k, v in ev.items() if k in ("t", "kind", "detail", "reason")})
            elif t == "command":
                self._cmd_t[ev.get("cmd")] = ev["t"]
                if len(self._cmd_t) > 1000:
                    self._cmd_t.pop(next(iter(self._cmd_t)))
                if "t_decision" in ev:
                    self._sample("send", ev["t"] - ev["t_decision"])
            elif t in ("ack", "done") and ev.get("cmd") in self._cmd_t:
                self._sample(t, ev["t"] - self._cmd_t[ev["cmd"]])
        if t in LIVE_TYPES:
            self.events.push(finite(ev))

    def _sample(self, stage: str, seconds: float) -> None:
        self.latency_ms[stage].append(seconds * 1e3)

    # ------------------------------------------------------------------ control
    def start(self, n_objects: int = 60, seed: int = 0, model: str = "oracle", max_seconds: float = 600.0,
              belt_speed_mm_s: float = 400.0) -> dict[str, Any]:
        """Start a run on the synthetic conveyor (real clock); LineError when one is running."""
        from fovea.line.actuators import SimulatedActuator
        from fovea.line.clock import RealClock
        from fovea.line.runner import LineRunner
        from fovea.line.sim import line_config_for
        from fovea.line.sources import ConveyorSource
        from fovea.synth.conveyor import Conveyor, ConveyorConfig

        if not 1 <= int(n_objects) <= 100_000 or not 50 <= belt_speed_mm_s <= 2000 or max_seconds <= 0:
            raise ConfigError(f"line start: n_objects={n_objects} must be 1..100000, belt_speed_mm_s="
                              f"{belt_speed_mm_s} 50..2000, max_seconds={max_seconds} > 0")
        with self._lock:
            if self.closed:
                raise LineError("the server is shutting down")
            if self.running:
                raise LineError(f"run {self.run_id} is still running. Fix: POST /api/line/stop first")
            clock = RealClock()
            conv = Conveyor(ConveyorConfig(n_objects=int(n_objects), seed=int(seed), appearance="realistic",
                                           belt_speed_mm_s=float(belt_speed_mm_s)))
            cfg = line_config_for(conv.config)
            predictor = self._line_predictor(model, clock, seed, cfg)
            self._reset_stats()
            self.run_id += 1
            self.info = {"model": model, "n_objects": int(n_objects), "seed": int(seed),
                         "belt_speed_mm_s": float(belt_speed_mm_s), "t_start_wall": time.time()}
            log = LiveLog(self.on_event, keep=False)
            self._source = StoppableSource(ConveyorSource(conv, clock=clock,
                                                          x_end_mm=max(cfg.gate_distance_mm.values()) + 200))
            self._actuator = SimulatedActuator(clock=clock, emit=log.emit)
            ann = StreamAnnotator(self.frames, self.stream_fps, self.frame_scale, fps=conv.config.fps,
                                  mm_per_px=cfg.mm_per_px, decision_x_mm=cfg.decision_x_mm, x0_mm=cfg.x0_mm)
            self._runner = LineRunner(self._source, predictor, self._actuator, cfg, clock=clock, log=log,
                                      annotator=ann)
            log.emit(clock.now(), "run_start", run=self.run_id, **self.info)
            self._thread = threading.Thread(target=self._run, args=(self._runner, log, max_seconds),
                                            name=f"serve-line-{self.run_id}", daemon=True)
            self._thread.start()
            return self.status()

    def _line_predictor(self, model: str, clock, seed: int, cfg):
        if model == "oracle":
            from fovea.line.doubles import OraclePredictor

            return OraclePredictor(clock=clock, seed=seed, latency_s=0.005)
        if self.registry is None or model not in self.registry.slots:
            known = sorted(self.registry.slots) if self.registry else []
            raise ConfigError(f"line start: model {model!r} is not served; use 'oracle' or one of {known}")
        from fovea.line.adapters import AdaptedPredictor

        predictor = AdaptedPredictor(self.registry.slots[model].predictor)
        if hasattr(predictor, "check_lanes"):
            predictor.check_lanes(cfg.lanes)
        return predictor

    def _run(self, runner, log: LiveLog, max_seconds: float) -> None:
        try:
            runner.run_threaded(max_time_s=max_seconds)
        except Exception as exc:
            log.emit(runner.clock.now(), "fault", kind="run_crashed", detail=f"{type(exc).__name__}: {exc}")
        finally:
            log.emit(runner.clock.now(), "run_end", run=self.run_id, outcomes=sum(self.lanes.values()))
            log.close()

    def stop(self, wait_s: float = 0.0) -> dict[str, Any]:
        """End the run: the source ends, records settle (each gets its one outcome). Waits up to wait_s."""
        src, th = self._source, self._thread
        if src is not None:
            src.stopped.set()
        if th is not None and wait_s > 0:
            th.join(wait_s)
        return self.status()

    def set_armed(self, armed: bool) -> dict[str, Any]:
        """ARM / SAFE the MCU of the running line (LineError when no line runs)."""
        if not self.running or self._actuator is None:
            raise LineError("no line is running. Fix: POST /api/line/start first")
        set_armed(self._actuator, armed)
        self.on_event({"type": "line", "t": self._actuator.clock.now(), "armed": armed,
                       "detail": "armed by the operator" if armed else "disarmed (SAFE) by the operator"})
        return self.status()

    def close_streams(self) -> None:
        """Make every live stream end (server shutdown), before connections are waited for."""
        self.closed = True
        self.frames.closed = True

    def close(self, wait_s: float = 10.0) -> None:
        self.close_streams()
        self.stop(wait_s)

