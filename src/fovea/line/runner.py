"""The line runner: capture -> perceive -> decide -> actuate, joined by small bounded queues.

Stages: capture (grab, timestamp, black/frozen check) -> `frames` queue (drop_oldest by default)
-> perceive (staleness check against the gate deadline, localize, classify crops) -> `results`
queue -> decide (belt tracker, policy, deadlines, outcomes) -> actuator. A watchdog reports a
stage busy longer than `stall_timeout_s`. `run_threaded()` runs each stage in its own thread on
the real clock; `run_simulated()` drives the same stage code from a `SimClock` (capture at the
frame rate, decide/heartbeat ticks as timers, model latency as simulated time), deterministic and
as fast as the CPU allows. Every record gets exactly one `outcome` event.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fovea.core import ClassResult, Detections, Frame
from fovea.errors import LineError
from fovea.line.actuators import FireCommand
from fovea.line.blind import estimate_unseen
from fovea.line.clock import BoundedQueue, RealClock
from fovea.line.config import LineConfig
from fovea.line.events import EventLog
from fovea.line.frametime import FrameTimeGuard
from fovea.line.localize import BackgroundSubtractor, as_localizer, crop
from fovea.line.outcomes import OutcomeSide
from fovea.line.policy import DEFAULT
from fovea.line.tracker import BeltTracker, ObjectRecord


def match_truth(xyxy: np.ndarray, truth: list) -> list[int | None]:
    """Ground-truth uid of each pixel box by best IoU (>= 0.2), for audits and test doubles only."""
    out: list[int | None] = []
    for b in np.asarray(xyxy, float).reshape(-1, 4):
        best, best_iou = None, 0.2
        for it in truth:
            t = it.xyxy
            iw = min(b[2], t[2]) - max(b[0], t[0])
            ih = min(b[3], t[3]) - max(b[1], t[1])
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter)
            if iou > best_iou:
                best, best_iou = it.uid, iou
        out.append(best)
    return out


@dataclass
class Perception:
    """What the perceive stage hands to the decide stage for one frame."""

    frame: Frame
    dets: Detections
    results: list[ClassResult | None]
    t_infer_start: float
    t_done: float
    valid: bool = True
    truth_uids: list[int | None] | None = None


@dataclass
class StageBeat:
    busy_since: float | None = None
    stalled: bool = False
    last_done: float = 0.0


@dataclass
class RecordSummary:
    rid: str
    lane: str
    reason: str
    truth: dict[int, int] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


class LineRunner(OutcomeSide):
    """Wires a source, a localizer, a classifier and an actuator into one sorting line."""

    def __init__(self, source, predictor, actuator, config: LineConfig | None = None, localizer=None,
                 clock=None, log: EventLog | None = None, annotator=None):
        self.cfg = cfg = config or LineConfig()
        self.source, self.predictor, self.actuator = source, predictor, actuator
        self.clock = clock or RealClock()
        self.log = log or EventLog()
        self.localizer = as_localizer(localizer) if localizer is not None else BackgroundSubtractor(
            threshold=cfg.bg_threshold, min_area_px=cfg.min_area_px, warmup_frames=cfg.warmup_frames)
        self.tracker = BeltTracker(cfg)
        self.time_guard = FrameTimeGuard(self.tracker, cfg)
        self.q_frames = BoundedQueue("frames", cfg.frames_queue, cfg.frames_policy)
        self.q_results = BoundedQueue("results", cfg.results_queue,
                                      "drop_newest" if self.clock_simulated and cfg.results_policy == "block"
                                      else cfg.results_policy)
        self.beats = {s: StageBeat() for s in ("capture", "perceive", "decide")}
        self.health = "RUNNING"
        self.finished: list[RecordSummary] = []
        self.source_done = False
        self.annotator = annotator
        self._prev_img: np.ndarray | None = None
        self._lock = threading.RLock()
        self._read_failures = 0
        self._last_seen_capture: float | None = None
        self._fires: dict[str, FireCommand] = {}     # record -> its gate command (actuator side)
        self._conflict_owners: dict[str, set[str]] = {}   # record -> records whose swing it may meet
        self._cancel_asked: set[str] = set()      # records whose command the runner withdrew (CANCEL)
        self._cancelled: set[str] = set()         # ... and the MCU confirmed it never opened for them
        self._t_source_done: float | None = None
        self.n_outcomes = 0
        self.n_unseen_est = 0.0
        self._capture_span: tuple[float, float] | None = None    # first and last t_capture read
        self._frames_closed = False
        self._covered_mm = 0.0                    # belt length seen in usable frames (for pitch_mm)
        self._speed_from: float | None = None     # speed before a change that has not settled yet

    @property
    def clock_simulated(self) -> bool:
        return getattr(self.clock, "simulated", False)

    def emit(self, type: str, **kw: Any) -> None:
        self.log.emit(self.clock.now(), type, **kw)

    @property
    def link_p99_s(self) -> float:
        return getattr(self.actuator, "link_p99_s", self.cfg.link_floor_s)

    # ================================================================== capture
    def capture_once(self) -> bool:
        """Grab one frame into the `frames` queue; False when the source is exhausted."""
        if self.source_done:
            return False
        beat = self.beats["capture"]
        try:
            frame = self.source.read()
        except LineError as exc:
            self._read_failures += 1
            self.emit("fault", kind="read_failed", detail=str(exc))
            if self._read_failures > 30:
                self.emit("fault", kind="source_lost", detail="30 consecutive failed reads")
                self.source_done = True
            return not self.source_done
        if frame is None:
            self.source_done = True
            return False
        self._read_failures = 0
        beat.last_done = self.clock.now()
        self._capture_span = (self._capture_span[0] if self._capture_span else frame.t_capture, frame.t_capture)
        self.emit("frame", frame=frame.index, t_capture=frame.t_capture,
                  **({"t_exposure": frame.meta["t_exposure"]} if "t_exposure" in frame.meta else {}))
        img = frame.image
        reason = None
        if float(img[::4, ::4].mean()) < self.cfg.black_level:
            reason = "black_frame"
        elif self._prev_img is not None and np.array_equal(img, self._prev_img):
            reason = "frozen_frame"
        self._prev_img = img
        if reason:
            self.emit("fault", kind=reason, frame=frame.index)
            frame.meta["invalid"] = reason
        dropped = self.q_frames.put(frame, timeout=None if not self.clock_simulated else 0)
        if dropped is not None:
            self.emit("frame_dropped", frame=dropped.index, cause=f"queue_{self.q_frames.policy}")
        return True

    # ================================================================== perceive
    def perceive(self, frame: Frame) -> Perception | None:
        """Localize and classify one frame, unless it is too old to matter (dropped, counted)."""
        now = self.clock.now()
        budget = self.cfg.staleness_budget_s(self.link_p99_s, self.tracker.speed_mm_s)
        if now - frame.t_capture > budget:
            self.emit("frame_dropped", frame=frame.index, cause="stale", age_s=round(now - frame.t_capture, 4))
            return None
        beat = self.beats["perceive"]
        beat.busy_since = now
        invalid = frame.meta.get("invalid")
        if invalid:
            dets, results, truth_uids = Detections.empty(), [], None
        else:
            dets = self.localizer.localize(frame)
            truth = frame.meta.get("truth")
            truth_uids = match_truth(dets.xyxy, truth) if truth is not None else None
            W = frame.image.shape[1]
            crops, idx = [], []
            for i, b in enumerate(dets.xyxy):
                if b[0] <= 0 or b[2] >= W:          # cut by the image edge: position only, no vote
                    continue
                meta = {"frame_index": frame.index, "box": b.tolist()}
                if truth_uids is not None and truth_uids[i] is not None:
                    meta["truth_uid"] = truth_uids[i]
                    meta["truth_class"] = next(t.class_name for t in truth if t.uid == truth_uids[i])
                crops.append(Frame(crop(frame.image, b, self.cfg.crop_pad_px), t_capture=frame.t_capture,
                                   source_id=frame.source_id, index=frame.index, meta=meta))
                idx.append(i)
            results: list[ClassResult | None] = [None] * len(dets)
            if crops:
                out = self.predictor.predict(crops)
                for i, r in zip(idx, out):
                    results[i] = r
        t_done = self.clock.now()
        beat.busy_since = None
        beat.last_done = t_done
        self.emit("frame_done", frame=frame.index, t_capture=frame.t_capture, t_infer_start=now, n=len(dets))
        return Perception(frame, dets, results, now, t_done, valid=not invalid, truth_uids=truth_uids)

    # ================================================================== decide
    def decide_step(self) -> None:
        """Drain results and actuator replies, commit due decisions, default-route late records."""
        with self._lock:
            beat = self.beats["decide"]
            beat.busy_since = self.clock.now()
            while True:
                p = self.q_results.get(0)
                if p is None:
                    break
                self._on_perception(p)
            if (self.source_done and not self._frames_closed and len(self.q_frames) == 0
                    and len(self.q_results) == 0 and self.beats["perceive"].busy_since is None):
                self._end_of_frames()
            if not self._unverified_crossings():
                self._drain_actuator()
            self._deadline_tick()
            for rec in self.tracker.retire(self.clock.now()):
                self.finished.append(RecordSummary(rec.rid, rec.outcome, rec.outcome_reason, dict(rec.truth),
                                                   tuple(sorted(rec.flags))))
            beat.busy_since = None
            beat.last_done = self.clock.now()

    def _on_perception(self, p: Perception) -> None:
        """Check a frame's time (stamp and content), then fold the frames it releases into the tracker."""
        now = self.clock.now()
        budget = self.cfg.staleness_budget_s(self.link_p99_s, self.tracker.speed_mm_s)
        if now - p.frame.t_capture > budget:
            self.emit("frame_dropped", frame=p.frame.index, cause="late_result",
                      age_s=round(now - p.frame.t_capture, 4))
            return
        verdict = self.time_guard.check(p)
        for f in verdict.faults:
            self.emit("fault", **f)
        for q, shift, timing_ok in verdict.use:
            if shift is None:
                shift = self.time_guard.measure(q)[0] if q.valid else 0.0
            self._apply_perception(q, shift, timing_ok)
        for f in verdict.faults:
            if f["cause"] == "prediction_offset":
                self._offset_in_flight(abs(f["shift_mm"]))

    def _apply_perception(self, p: Perception, shift_mm: float, timing_ok: bool = True) -> None:
        """Fold one checked frame into the tracker: blind-interval count, records, speed, commits."""
        t = p.frame.t_capture
        last = self._last_seen_capture
        before = set(self.tracker.records) if p.valid else set()
        up = (min(self.tracker.records.values(), key=lambda r: r.x_at(t, self.tracker.speed_mm_s))
              if before else None)
        gap_before = last is not None and t - last > 1.5 / self.cfg.fps
        seen = self.tracker.update(t, p.dets, p.frame.image.shape[1], p.results,
                                   valid=p.valid, truth_uids=p.truth_uids, shift_mm=shift_mm,
                                   timing_ok=timing_ok, pitch_ok=not gap_before,
                                   belt_mm=p.frame.meta.get("belt_mm") if timing_ok else None)
        if p.valid:
            # belt on which an item's centre could lie and be seen: the view plus an item length
            # (an item is detected once a few pixels of it are in view)
            reach = self.tracker.view_mm[1] - self.tracker.view_mm[0] + 2 * self._half_len_mm()
            self._covered_mm += reach if last is None else min(max(t - last, 0.0) * self.tracker.speed_mm_s, reach)
            if last is not None and t - last > 1.5 / self.cfg.fps:
                self._blind_interval(last, t, up, [r for r in seen if r.rid not in before])
            self._last_seen_capture = max(t, last or t)
        self._emit_tracker_events()
        if len(seen):
            objs = []
            for d, rec in enumerate(seen):
                r = p.results[d] if d < len(p.results) else None
                objs.append([rec.rid, round(rec.x_mm, 1), round(rec.y_mm, 1),
                             r.class_name if r is not None else None,
                             round(r.confidence, 3) if r is not None else None])
            self.emit("detection", frame=p.frame.index, objects=objs)
        if self.annotator is not None:
            self.annotator.add(p, seen if p.valid else [])
        for rec in seen:
            # a record with fewer than min_sightings waits for more (or for its deadline): a ghost must
            # be able to merge into its twin before it holds an outcome of its own
            if (self.cfg.commit_lead_s is None and rec.state == "TRACKED" and rec.x_mm >= self.cfg.decision_x_mm
                    and rec.rid in self.tracker.records and rec.sightings >= self.cfg.min_sightings):
                self._commit(rec, p.t_done, p.frame.t_capture)

    def _end_of_frames(self) -> None:
        """The source ended and every frame was judged: drop a frame still held, and log the blind
        interval that lasted until the last frame (it has no usable frame after it to close it)."""
        self._frames_closed = True
        for f in self.time_guard.flush().faults:
            self.emit("fault", **f)
        if self._capture_span is None:
            return
        last = self._last_seen_capture if self._last_seen_capture is not None else self._capture_span[0]
        t_end = self._capture_span[1]
        if t_end - last > 1.5 / self.cfg.fps:
            self._blind_interval(last, t_end, None, [])

    def _half_len_mm(self) -> float:
        """Typical half length of an item along the belt, less what the localizer needs to see of it."""
        halves = [r.half_len_mm for r in self.tracker.records.values() if r.sightings >= 3]
        h = float(np.median(halves)) if halves else self.cfg.max_object_len_mm / 3
        return max(h - 2 * self.cfg.mm_per_px, 0.0)

    def pitch_mm(self) -> float:
        """Belt length per item: belt the camera covered with usable frames / records that arrived on it
        (unbiased by blind intervals, unlike gaps between consecutive arrivals); before 5 arrivals the
        median arrival gap, or max_object_len + gap as a last resort."""
        n = self.tracker.n_arrivals
        if n >= 5 and self._covered_mm > 0:
            return self._covered_mm / n
        return self.tracker.mean_pitch_mm() or (self.cfg.max_object_len_mm + self.cfg.gap_mm)

    def _blind_interval(self, t_from: float, t_to: float, up: ObjectRecord | None, new: list[ObjectRecord]) -> None:
        """Log a stretch of time without a usable frame with the number of objects that passed unseen."""
        tr, v = self.tracker, self.tracker.speed_mm_s
        lo, hi = tr.view_mm
        travel = (t_to - t_from) * v
        pitch = self.pitch_mm()
        min_pitch = min(tr.pitches_mm) if tr.pitches_mm else pitch / 2
        gap = None
        if up is not None and new and up.rid in tr.records:
            gap = up.x_at(t_to, v) - max(r.x_mm for r in new)
        est = estimate_unseen(travel, hi - lo + 2 * self._half_len_mm(), pitch, min_pitch, gap)
        self.n_unseen_est += est.unseen_est
        self.emit("fault", kind="blind_interval", t_from=t_from, t_to=t_to, belt_mm=round(travel, 1),
                  unseen_mm=round(est.unseen_mm, 1), unseen_est=round(est.unseen_est, 2),
                  unseen_max=est.unseen_max, method=est.method, pitch_mm=round(pitch, 1),
                  detail="no usable frame: objects passing unseen take the default route")

    def _emit_tracker_events(self) -> None:
        """Log what the tracker found (speed changes, merges, twin faults); re-check commands in flight."""
        events, self.tracker.events = self.tracker.events, []
        settled = False
        for kind, fields in events:
            self.emit(kind, **fields)
            if kind == "speed_change":
                self._speed_from = fields["from_mm_s"]
            elif kind == "speed_settled" and self._speed_from is not None:
                settled = True
        self._check_in_flight(correct=settled)
        if settled:
            self._speed_from = None

    def flush(self) -> None:
        """End of run: every record still open gets its one outcome."""
        with self._lock:
            self.decide_step()
            for rec in list(self.tracker.records.values()):
                if rec.state == "TRACKED":
                    self._commit(rec, self.clock.now(), rec.t_last)
            self.actuator.close()
            self._drain_actuator()
            for rec in list(self.tracker.records.values()):
                if not rec.final:
                    self._finalize(rec, DEFAULT, "shutdown")
                self.finished.append(RecordSummary(rec.rid, rec.outcome, rec.outcome_reason, dict(rec.truth),
                                                   tuple(sorted(rec.flags))))
            self.tracker.records.clear()
            if self.annotator is not None:
                self.annotator.close()

    # ================================================================== watchdog
    def watchdog(self) -> None:
        """Flag a stage busy for longer than stall_timeout_s (once per stall); health follows."""
        now = self.clock.now()
        any_stalled = False
        for name, b in self.beats.items():
            if b.busy_since is not None and now - b.busy_since > self.cfg.stall_timeout_s:
                if not b.stalled:
                    b.stalled = True
                    self.emit("fault", kind="stage_stalled", stage=name, busy_s=round(now - b.busy_since, 3))
                any_stalled = True
            elif b.stalled:
                b.stalled = False
                self.emit("fault", kind="stage_recovered", stage=name)
        health = "DEGRADED" if any_stalled else "RUNNING"
        if health != self.health:
            self.health = health
            self.emit("health", state=health)

    def _settled(self) -> bool:
        return (self.source_done and len(self.q_frames) == 0 and len(self.q_results) == 0
                and all(r.final for r in self.tracker.records.values()) and self.actuator.in_flight() == 0)

    def _settle_overdue(self) -> bool:
        """The source ended long ago and the line still has not settled: log it once; the run must end.

        Bound: the last item's travel to the farthest gate at the current belt speed, plus the
        actuator's dead-link allowance, plus 5 s. Every command resolves within that by design, so
        reaching it means a bug, reported as `settle_timeout` with what was left.
        """
        if not self.source_done:
            return False
        now = self.clock.now()
        if self._t_source_done is None:
            self._t_source_done = now
        gate_mm = max(self.cfg.gate_distance_mm.values())
        limit = gate_mm / max(self.tracker.speed_mm_s, 50.0) + getattr(getattr(self.actuator, "cfg", None),
                                                                       "dead_after_s", 3.0) + 5.0
        if now - self._t_source_done <= limit:
            return False
        open_recs = sorted(r.rid for r in self.tracker.records.values() if not r.final)
        self.emit("fault", kind="settle_timeout", detail=f"not settled {limit:.1f} s after the source ended",
                  records=open_recs[:20], in_flight=self.actuator.in_flight())
        return True

    # ================================================================== drivers
    def run_simulated(self, max_time_s: float | None = None) -> None:
        """Drive every stage from the SimClock; returns when all records are settled."""
        clock = self.clock
        if not self.clock_simulated:
            raise LineError("run_simulated needs a SimClock; use run_threaded on the real clock")
        fps = getattr(self.source, "fps", self.cfg.fps)
        start = clock.now()
        clock.call_every(1.0 / fps, lambda: self.capture_once(), start=start)
        clock.call_every(self.cfg.tick_s, self.decide_step, start=start)
        clock.call_every(self.cfg.tick_s, self.actuator.poll, start=start)
        clock.call_every(self.cfg.stall_timeout_s / 4, self.watchdog, start=start)
        tail = 0.0
        while True:
            frame = self.q_frames.get(0)
            if frame is not None:
                p = self.perceive(frame)
                if p is not None:
                    dropped = self.q_results.put(p)
                    if dropped is not None:
                        self.emit("frame_dropped", frame=dropped.frame.index, cause="results_queue_full")
                    self.decide_step()
                continue
            if self._settled():
                tail = tail or clock.now()
                if clock.now() - tail > 0.5:     # let the last DONE replies and retirements land
                    break
            if max_time_s is not None and clock.now() - start > max_time_s:
                self.emit("fault", kind="run_time_limit", detail=f"{max_time_s} s")
                break
            if self._settle_overdue():
                break
            clock.advance_to(clock.next_timer())
        self.flush()

    def run_naive(self, max_time_s: float | None = None) -> None:
        """Baseline for benchmarks: read, infer, decide and send in one loop, as in a typical script.

        Same stage code, no queues between stages and no concurrency: while the model runs,
        nobody drains the camera, decides deadlines or answers the link.
        """
        t0 = self.clock.now()
        while self.capture_once():
            frame = self.q_frames.get(0)
            if frame is not None:
                p = self.perceive(frame)
                if p is not None:
                    self.q_results.put(p)
            self.decide_step()
            self.actuator.poll()
            if max_time_s is not None and self.clock.now() - t0 > max_time_s:
                break
        t_end = self.clock.now() + 3.0
        while not self._settled() and self.clock.now() < t_end:
            self.decide_step()
            self.actuator.poll()
            self.clock.sleep(0.005)
        self.flush()

    def run_threaded(self, max_time_s: float | None = None) -> None:
        """Run stages in threads on the real clock until the source ends and all records settle."""
        stop = threading.Event()
        perceive_done = threading.Event()

        def capture():
            while not stop.is_set() and self.capture_once():
                pass

        def perceive():
            while not stop.is_set():
                frame = self.q_frames.get(timeout=0.05)
                if frame is None:
                    if self.source_done:
                        break
                    continue
                p = self.perceive(frame)
                if p is not None:
                    dropped = self.q_results.put(p, timeout=self.cfg.stall_timeout_s)
                    if dropped is not None:
                        self.emit("frame_dropped", frame=p.frame.index, cause="results_queue_full")
            perceive_done.set()

        def decide_loop():
            while not stop.is_set():
                p = self.q_results.get(timeout=self.cfg.tick_s)
                if p is not None:
                    with self._lock:
                        self._on_perception(p)
                self.decide_step()
                if perceive_done.is_set() and (self._settled() or self._settle_overdue()):
                    break

        def watchdog():
            while not stop.wait(self.cfg.stall_timeout_s / 4):
                self.watchdog()

        t0 = self.clock.now()
        threads = [threading.Thread(target=f, name=f"line-{f.__name__}", daemon=True)
                   for f in (capture, perceive, decide_loop, watchdog)]
        act = threading.Thread(target=self.actuator.run_forever, args=(stop,), name="line-actuator", daemon=True)
        for th in threads + [act]:
            th.start()
        while threads[2].is_alive():
            threads[2].join(0.1)
            if max_time_s is not None and self.clock.now() - t0 > max_time_s:
                self.emit("fault", kind="run_time_limit", detail=f"{max_time_s} s")
                break
        stop.set()
        for th in threads + [act]:
            th.join(2.0)
        self.flush()
