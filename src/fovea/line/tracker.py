"""Objects, not tracks: one `ObjectRecord` per physical item, tracked in belt coordinates.

Positions are dead-reckoned with the belt speed (x(t) = x + v (t - t_last), re-based every frame,
so a speed change bends the path instead of rewriting it) and associated on the prediction
(Hungarian on belt distance), so a detector dropout only leaves a record coasting.

Like with like at the image edges: a box cut by the image edge only knows its uncut edge (the
front edge of an item entering on the left, the back edge of one leaving on the right), so it is
compared with the predicted position of that same edge, never its raw centre with a predicted
centre. A frame whose content is shifted as a whole (a stale image, a wrong stamp) is measured by
`content_shift` and judged in `fovea.line.frametime` before it is applied.

Tracker ids from a producer are hints (aliases): an id that jumps to another record flags both
as `id_switch`. One detection covering two predicted records flags them `merged`; a blob too long
or too concave for one item flags `not_single`; missed sightings flag `track_gap`. Flags never
delete a record: it keeps blocking its neighbours and still gets exactly one outcome. The only
way a record disappears without an outcome is a merge into its twin (`merge` event): two records
never seen in the same frame that prove to be one object (overlapping on the belt, or a phantom
with fewer than `min_sightings` that vanished while in full view next to a record it could be a
time-shifted copy of). A record already committed keeps its outcome and absorbs the other.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from fovea.core import ClassResult, Detections
from fovea.line.config import LineConfig
from fovea.line.speed import BeltSpeedEstimator, SpeedTrust


@dataclass
class ObjectRecord:
    """Durable state of one physical object; `rid` is the key, tracker ids are only aliases.

    x_mm is the dead-reckoned centre at time t_last (re-based every frame); t_seen is the capture
    time of the last sighting.
    """

    rid: str
    t_first: float
    t_last: float
    x_mm: float                    # centre at t_last
    y_mm: float
    half_len_mm: float
    sightings: int = 1
    misses: int = 0                # consecutive missed frames while fully in view
    dark: int = 0                  # consecutive missed frames while its centre was in view
    max_misses: int = 0
    votes: list[ClassResult] = field(default_factory=list)
    vote_times: list[float] = field(default_factory=list)
    aliases: set[int] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    state: str = "TRACKED"         # TRACKED -> DECIDED -> (SCHEDULED) -> DONE | DEFAULT
    lane: str | None = None
    gate: int | None = None
    outcome: str | None = None
    outcome_reason: str = ""
    t_capture_last: float = 0.0
    truth: Counter = field(default_factory=Counter)   # ground-truth uids seen (audits only)
    t_seen: float = float("nan")
    track: deque = field(default_factory=lambda: deque(maxlen=12))   # (t, front|None, back|None, timing_ok)
    frames: set[int] = field(default_factory=set)     # frame serials it was seen in
    absorbed: list[str] = field(default_factory=list)  # rids of twins merged into it

    def x_at(self, t: float, v: float) -> float:
        return self.x_mm + v * (t - self.t_last)

    @property
    def final(self) -> bool:
        return self.outcome is not None


@dataclass
class Observed:
    """One frame's boxes in belt mm: (N, 4) x0, y0, x1, y1 and whether each is cut on the left/right."""

    boxes: np.ndarray
    cut_left: np.ndarray
    cut_right: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def comparable_residuals(obs: Observed, pred_x: np.ndarray, half: np.ndarray,
                         rec_front: np.ndarray | None = None, rec_back: np.ndarray | None = None) -> np.ndarray:
    """(N, M) detection-minus-prediction along the belt, compared on what both sides know exactly.

    A box cut on the left (entering) knows only its front edge x1, one cut on the right (leaving)
    only its back edge x0; a record whose last sighting was cut knows only that edge too
    (rec_front / rec_back, (M,) bool; default: both). Both edges known on both sides: centres;
    else the front edges, else the back edges; else (nothing in common) the centres.
    """
    M = len(pred_x)
    rf = np.ones(M, bool) if rec_front is None else rec_front
    rb = np.ones(M, bool) if rec_back is None else rec_back
    x0, x1 = obs.boxes[:, 0:1], obs.boxes[:, 2:3]
    df, db = ~obs.cut_right[:, None], ~obs.cut_left[:, None]
    both_f, both_b = df & rf[None, :], db & rb[None, :]
    centre = (x0 + x1) / 2 - pred_x[None, :]
    front = x1 - (pred_x + half)[None, :]
    back = x0 - (pred_x - half)[None, :]
    return np.where(both_f & both_b, centre, np.where(both_f, front, np.where(both_b, back, centre)))


def _known_edges(recs: list) -> tuple[np.ndarray, np.ndarray]:
    """(front_known, back_known) (M,) bool from each record's last sighting."""
    f = np.array([not r.track or r.track[-1][1] is not None for r in recs], bool)
    b = np.array([not r.track or r.track[-1][2] is not None for r in recs], bool)
    return f, b


class BeltTracker:
    """Associates per-frame detections (pixel boxes) with object records in belt coordinates."""

    def __init__(self, config: LineConfig):
        self.cfg = config
        self.records: dict[str, ObjectRecord] = {}
        self.alias_owner: dict[int, str] = {}
        self._ids = itertools.count()
        self.speed = BeltSpeedEstimator(config.belt_speed_mm_s, quant_mm=config.mm_per_px,
                                        window_s=config.speed_window_s, settle_s=config.speed_settle_s,
                                        change_rel=config.speed_change_rel, max_age_s=config.speed_max_age_s)
        self.view_mm: tuple[float, float] | None = None
        self.events: list[tuple[str, dict]] = []       # (type, fields) for the runner's log
        self.pitches_mm: deque[float] = deque(maxlen=200)   # centre-to-centre spacing of arrivals
        self._frame_no = 0
        self.n_arrivals = 0                            # records created, less ghosts merged away
        self.odo: deque[tuple[float, float]] = deque(maxlen=256)   # (t, belt mm travelled by the speeds used)
        self.encoder: deque[tuple[float, float]] = deque(maxlen=64)  # (t, belt_mm) encoder readings
        self._twins_reported: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ geometry and speed
    def to_belt(self, xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) pixel boxes -> (N, 4) belt boxes in mm (x0, y0, x1, y1)."""
        return xyxy.astype(np.float64) * self.cfg.mm_per_px + np.array([self.cfg.x0_mm, 0, self.cfg.x0_mm, 0])

    def observe(self, dets: Detections, image_width_px: int) -> Observed:
        """Belt boxes of a frame's detections with their edge cuts."""
        cfg = self.cfg
        self.view_mm = lo, hi = (cfg.x0_mm, cfg.x0_mm + image_width_px * cfg.mm_per_px)
        boxes = self.to_belt(dets.xyxy) if len(dets) else np.zeros((0, 4))
        return Observed(boxes, boxes[:, 0] <= lo + 1e-6, boxes[:, 2] >= hi - 1e-6)

    @property
    def speed_mm_s(self) -> float:
        return self.speed.speed_mm_s if self.cfg.measure_speed else self.cfg.belt_speed_mm_s

    def speed_trust(self, now: float) -> SpeedTrust:
        """The speed and whether gate timing may rest on it (always trusted when not measured)."""
        if not self.cfg.measure_speed:
            return SpeedTrust(self.cfg.belt_speed_mm_s, True, 0.0, "")
        return self.speed.trust(now)

    def configured_speed_check(self, now: float) -> SpeedTrust:
        """measure_speed=False: the configured speed, trusted, with rel_err = how far the belt's
        measured speed (the estimator's latest value, if a sample is younger than speed_max_age_s)
        is from it, so the policy sends items to the default route while the belt visibly runs at
        another speed than the gates are timed for (`speed_uncertain`) instead of guessing."""
        v = self.cfg.belt_speed_mm_s
        est = self.speed
        if est.settled_speed_mm_s is None and not est.settled or now - est.t_sample > self.cfg.speed_max_age_s:
            return SpeedTrust(v, True, 0.0, "")
        return SpeedTrust(v, True, abs(est.speed_mm_s - v) / v, "")

    @property
    def speed_known(self) -> bool:
        """True unless the speed is measured and not (yet, or no longer) trusted."""
        return not self.cfg.measure_speed or self.speed.trust(self.speed.t_sample).known

    def active(self) -> list[ObjectRecord]:
        return list(self.records.values())

    def in_view(self, t: float, margin_mm: float = 0.0) -> list[ObjectRecord]:
        """Records whose predicted centre lies inside the camera view (widened by margin_mm) at time t."""
        if self.view_mm is None:
            return []
        lo, hi = self.view_mm
        v = self.speed_mm_s
        return [r for r in self.records.values() if lo - margin_mm <= r.x_at(t, v) <= hi + margin_mm]

    def content_shift(self, t: float, obs: Observed, tol_mm: float, max_shift_mm: float) -> tuple[float, int]:
        """(shift_mm, support): the common displacement of this frame's boxes from the predictions.

        Each detection/record pair near in y proposes a shift (edge-comparable residual); the shift
        agreed by most detections (ties: the smallest) is refined as the median of its supporters.
        Records predicted with their centre in view or just past it (within max_shift_mm) take part:
        a stale image still shows an item that has left. (0, 0) when nothing compares.
        """
        recs = self.in_view(t, max_shift_mm)
        if not len(obs) or not recs:
            return 0.0, 0
        v = self.speed_mm_s
        pred = np.array([r.x_at(t, v) for r in recs])
        half = np.array([r.half_len_mm for r in recs])
        res = comparable_residuals(obs, pred, half, *_known_edges(recs))
        cy = (obs.boxes[:, 1] + obs.boxes[:, 3]) / 2
        dy = np.abs(cy[:, None] - np.array([r.y_mm for r in recs])[None, :])
        ok = (dy < self.cfg.assoc_gate_mm) & (np.abs(res) <= max_shift_mm)
        cands = np.unique(np.round(res[ok], 3))
        if cands.size == 0:
            return 0.0, 0
        best, best_key = 0.0, None
        for c in cands:
            near = np.where(ok, np.abs(res - c), np.inf).min(axis=1)
            support = int(np.sum(near <= tol_mm))
            key = (support, -abs(c))
            if best_key is None or key > best_key:
                best, best_key = float(c), key
        near_idx = np.where(ok, np.abs(res - best), np.inf)
        sel = near_idx.min(axis=1) <= tol_mm
        vals = res[np.arange(len(obs)), near_idx.argmin(axis=1)][sel]
        return float(np.median(vals)), int(best_key[0])

    # ------------------------------------------------------------------ update
    def update(self, t: float, dets: Detections, image_width_px: int, results: list[ClassResult | None],
               valid: bool = True, truth_uids: list[int | None] | None = None,
               shift_mm: float = 0.0, timing_ok: bool = True, pitch_ok: bool = True,
               belt_mm: float | None = None) -> list[ObjectRecord]:
        """Fold one processed frame (capture time t) into the records; returns records seen in it.

        valid=False marks a frame that could not be used (black, frozen): nobody is seen, and
        every record fully in view counts a miss. shift_mm: the frame's measured common shift
        (`content_shift`), so association survives a speed change the estimate has not caught up with.
        timing_ok=False (a stamp off the camera's grid): tracked, but no speed sample starts or ends here.
        pitch_ok=False (the first frame after a blind interval): a new item's upstream neighbour may
        not be the item before it, so no spacing sample.
        belt_mm: the belt encoder's travel latched with this frame; when given, the speed comes from
        the encoder (travel over the estimator's baseline) instead of tracked motion.
        """
        cfg, v = self.cfg, self.speed_mm_s
        self._frame_no += 1
        if not self.odo or t > self.odo[-1][0]:
            self.odo.append((t, self.travel_used_to(t)))
        obs = self.observe(dets, image_width_px) if valid else Observed(np.zeros((0, 4)), np.zeros(0, bool),
                                                                        np.zeros(0, bool))
        if self.view_mm is None:
            self.view_mm = (cfg.x0_mm, cfg.x0_mm + image_width_px * cfg.mm_per_px)
        lo, hi = self.view_mm
        n = len(obs)
        boxes = obs.boxes
        recs = list(self.records.values())
        pred = np.array([r.x_at(t, v) for r in recs]) if recs else np.zeros(0)
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 if n else np.zeros(0)
        matched_rec: dict[int, int] = {}
        if n and recs:
            half = np.array([r.half_len_mm for r in recs])
            res = comparable_residuals(obs, pred, half, *_known_edges(recs)) - shift_mm
            ry = np.array([r.y_mm for r in recs])
            dy = np.abs(cy[:, None] - ry[None, :])
            gate = (np.abs(res) < cfg.assoc_gate_mm) & (dy < cfg.assoc_gate_mm)
            di, ri = linear_sum_assignment(np.where(gate, np.abs(res) + 0.5 * dy, 1e6))
            for d, r in zip(di, ri):
                if gate[d, r]:
                    matched_rec[d] = r
        up = min(recs, key=lambda r: r.x_at(t, v)) if recs else None
        seen: list[ObjectRecord] = []
        used = set(matched_rec.values())
        solidity = dets.data.get("solidity") if n else None
        for d in range(n):
            x0, y0, x1, y1 = boxes[d]
            cut_l, cut_r = bool(obs.cut_left[d]), bool(obs.cut_right[d])
            at_edge = cut_l or cut_r
            # a detection whose extent holds the predicted centres of several records: a merge
            inside = [i for i, p in enumerate(pred) if x0 - 1 <= p + shift_mm <= x1 + 1
                      and abs(recs[i].y_mm - cy[d]) < (y1 - y0) / 2 + 1]
            if d in matched_rec:
                rec = recs[matched_rec[d]]
            else:
                free = [i for i in inside if i not in used]
                if free:
                    rec = recs[free[0]]
                    used.add(free[0])
                else:
                    rec = self._new(t, (x0 + x1) / 2, cy[d], (x1 - x0) / 2)
                    if up is not None and pitch_ok:
                        x_up = up.x_at(t, v) + shift_mm
                        pitch = (x_up + up.half_len_mm - x1) if cut_l else (x_up - (x0 + x1) / 2)
                        if pitch > 0:
                            self.pitches_mm.append(float(pitch))
                    recs.append(rec)
                    pred = np.append(pred, (x0 + x1) / 2 - shift_mm)
            if len(inside) > 1:
                for i in inside:
                    recs[i].flags.add("merged")
                rec.flags.add("merged")
            if not at_edge and (x1 - x0 > cfg.max_object_len_mm or
                                (solidity is not None and solidity[d] < cfg.min_solidity)):
                rec.flags.add("not_single")
            self._observe(rec, t, x0, x1, cy[d], cut_l, cut_r, timing_ok)
            if dets.tracker_id is not None:
                self._alias(rec, int(dets.tracker_id[d]))
            res_d = results[d] if d < len(results) else None
            if res_d is not None and not at_edge:
                rec.votes.append(res_d)
                rec.vote_times.append(t)
            if truth_uids is not None and truth_uids[d] is not None:
                rec.truth[truth_uids[d]] += 1
            seen.append(rec)
        if belt_mm is not None:
            self._update_speed_encoder(t, float(belt_mm))
        else:
            self._update_speed(t, seen if timing_ok else [])
        seen_ids = {id(r) for r in seen}
        for rec in self.records.values():
            if id(rec) in seen_ids:
                continue
            rec.x_mm, rec.t_last = rec.x_at(t, v), t       # re-base on the speed used so far
            if valid and lo <= rec.x_mm <= hi:
                rec.dark += 1
            if rec.final:
                continue
            if lo + rec.half_len_mm < rec.x_mm < hi - rec.half_len_mm:     # fully in view, yet not seen
                rec.misses += 1
                rec.max_misses = max(rec.max_misses, rec.misses)
                if rec.misses > cfg.max_missed_frames:
                    rec.flags.add("track_gap")
        self._merge_twins(t)
        return seen

    def _new(self, t: float, x: float, y: float, half_len: float) -> ObjectRecord:
        self.n_arrivals += 1
        rid = f"o{next(self._ids):06d}"
        rec = ObjectRecord(rid=rid, t_first=t, t_last=t, x_mm=float(x), y_mm=float(y), half_len_mm=float(half_len),
                           sightings=0)
        self.records[rid] = rec
        return rec

    def _observe(self, rec: ObjectRecord, t: float, x0: float, x1: float, y: float, cut_left: bool,
                 cut_right: bool, timing_ok: bool = True) -> None:
        """Update a record from one box; a box cut by the image edge only tells its uncut edge."""
        half = (x1 - x0) / 2
        rec.half_len_mm = max(rec.half_len_mm, half) if rec.sightings else half
        if cut_left and not cut_right:
            x = x1 - rec.half_len_mm          # front edge is exact, the back is still outside
        elif cut_right and not cut_left:
            x = x0 + rec.half_len_mm          # back edge is exact, the front already left
        else:
            x = (x0 + x1) / 2
        rec.track.append((t, None if cut_right else float(x1), None if cut_left else float(x0), timing_ok))
        rec.misses = rec.dark = 0
        rec.t_last, rec.t_seen, rec.x_mm, rec.y_mm = t, t, float(x), float(y)
        rec.sightings += 1
        rec.frames.add(self._frame_no)

    def _update_speed(self, t: float, seen: list[ObjectRecord]) -> None:
        """One displacement sample per record seen now and earlier in the estimator's baseline.

        The estimator also runs with measure_speed=False: gates are then timed on the configured
        speed, and the measurement only checks it (`configured_speed_check`)."""
        t_from = self.speed.baseline_start(t) - 1e-9
        min_dt = 0.5 / self.cfg.fps                      # a falsified stamp must not make a dt of ~0
        samples = []
        for rec in seen:
            now = rec.track[-1]
            for old in rec.track:
                if old[0] > t - min_dt:
                    break
                if old[0] < t_from or not old[3]:
                    continue
                dx = _displacement(old, now)
                if dx is not None:
                    samples.append((dx, now[0] - old[0]))
                    break
        self._fold_speed(t, samples)

    def _fold_speed(self, t: float, samples: list[tuple[float, float]], quant_mm: float | None = None) -> None:
        was_settled = self.speed.settled
        change = self.speed.update(t, samples, quant_mm)
        if change is not None:
            self.events.append(("speed_change", dict(t_capture=t, from_mm_s=round(change.from_mm_s, 1),
                                                     to_mm_s=round(change.to_mm_s, 1), source=change.source)))
        if self.speed.settled and not was_settled:
            self.events.append(("speed_settled", dict(t_capture=t, speed_mm_s=round(self.speed.speed_mm_s, 1),
                                                      rel_err=round(self.speed.rel_err, 4))))

    def _update_speed_encoder(self, t: float, belt_mm: float) -> None:
        """One sample per frame from the encoder: travel since the oldest reading in the baseline."""
        self.encoder.append((t, belt_mm))
        t_from = self.speed.baseline_start(t) - 1e-9
        old = next((e for e in self.encoder if t_from <= e[0] <= t - 0.5 / self.cfg.fps), None)
        samples = [(belt_mm - old[1], t - old[0])] if old is not None else []
        self._fold_speed(t, samples, quant_mm=self.cfg.encoder_mm_per_count or self.cfg.mm_per_px)

    def _alias(self, rec: ObjectRecord, tid: int) -> None:
        if tid < 0:
            return
        owner = self.alias_owner.get(tid)
        if owner is not None and owner != rec.rid and owner in self.records:
            rec.flags.add("id_switch")
            self.records[owner].flags.add("id_switch")
        if rec.aliases and tid not in rec.aliases:
            rec.flags.add("id_switch")
        self.alias_owner[tid] = rec.rid
        rec.aliases.add(tid)

    # ------------------------------------------------------------------ twins
    def _merge_twins(self, t: float) -> None:
        """Merge records that prove to be one object (see the module docstring)."""
        v = self.speed_mm_s
        recs = sorted(self.records.values(), key=lambda r: r.rid)
        reach = v * self.cfg.twin_window_s
        done: set[str] = set()
        for a, b in itertools.combinations(recs, 2):
            if a.rid in done or b.rid in done or a.frames & b.frames:
                continue
            if abs(a.y_mm - b.y_mm) >= self.cfg.assoc_gate_mm:
                continue
            dx = abs(a.x_at(t, v) - b.x_at(t, v))
            cause = None
            if dx < min(a.half_len_mm, b.half_len_mm):
                cause = "overlap"
            else:
                for p in (a, b):
                    if p.sightings < self.cfg.min_sightings and p.dark >= 1 and dx <= reach:
                        cause = "phantom"
            if cause is None:
                continue
            survivor, ghost = self._pick_survivor(a, b)
            if survivor is None:
                key = (a.rid, b.rid)
                if key not in self._twins_reported:
                    self._twins_reported.add(key)
                    self.events.append(("fault", dict(kind="twin_records", records=[a.rid, b.rid], cause=cause,
                                                      detail="both already committed: cannot merge")))
                continue
            self._absorb(survivor, ghost, cause, dx)
            done.add(ghost.rid)

    @staticmethod
    def _pick_survivor(a: ObjectRecord, b: ObjectRecord):
        """(survivor, ghost): a committed record survives; else the better seen one; (None, None) if both committed."""
        ca, cb = a.state != "TRACKED", b.state != "TRACKED"
        if ca and cb:
            return None, None
        if ca or cb:
            return (a, b) if ca else (b, a)
        return (a, b) if (a.sightings, -a.t_first) >= (b.sightings, -b.t_first) else (b, a)

    def _absorb(self, survivor: ObjectRecord, ghost: ObjectRecord, cause: str, dx: float) -> None:
        survivor.truth.update(ghost.truth)
        survivor.absorbed.append(ghost.rid)
        survivor.frames |= ghost.frames
        for a in ghost.aliases:
            self.alias_owner[a] = survivor.rid
            survivor.aliases.add(a)
        del self.records[ghost.rid]
        self.n_arrivals -= 1
        self.events.append(("merge", dict(record=ghost.rid, into=survivor.rid, cause=cause, dx_mm=round(dx, 1),
                                          sightings=ghost.sightings)))

    # ------------------------------------------------------------------ neighbours and retirement
    def neighbours_too_close(self, rec: ObjectRecord, t: float) -> list[str]:
        """rids of other records whose edge-to-edge gap to `rec` at time t is below the minimum gap."""
        v, gap = self.speed_mm_s, self.cfg.gap_mm
        x = rec.x_at(t, v)
        out = []
        for o in self.records.values():
            if o is rec:
                continue
            d = abs(o.x_at(t, v) - x) - o.half_len_mm - rec.half_len_mm
            if d < gap:
                out.append(o.rid)
        return out

    def retire(self, t: float) -> list[ObjectRecord]:
        """Remove final records that are past the last gate (they can no longer block anyone)."""
        end = max(self.cfg.gate_distance_mm.values()) + 100.0
        gone = [r for r in self.records.values() if r.final and r.x_at(t, self.speed_mm_s) - r.half_len_mm > end]
        for r in gone:
            del self.records[r.rid]
            for a in r.aliases:
                if self.alias_owner.get(a) == r.rid:
                    del self.alias_owner[a]
        return gone

    def travel_used_to(self, t: float) -> float:
        """Odometer of the speeds the tracker used: belt mm dead-reckoned up to time t."""
        if not self.odo:
            return 0.0
        ts = [o[0] for o in self.odo]
        i = int(np.searchsorted(ts, t, side="right")) - 1
        if i < 0:
            return self.odo[0][1] - self.speed_mm_s * (self.odo[0][0] - t)
        if i + 1 < len(self.odo):
            (t0, b0), (t1, b1) = self.odo[i], self.odo[i + 1]
            return b0 + (b1 - b0) * (t - t0) / (t1 - t0)
        return self.odo[-1][1] + self.speed_mm_s * (t - self.odo[-1][0])

    def position_after_change(self, rec: ObjectRecord, now: float, t_onset: float, v_new: float
                              ) -> tuple[float, float]:
        """(t_anchor, x_anchor): where `rec` really was when the new speed began to apply to it.

        Dead reckoning ran on the old (or a provisional) speed after the change began at t_onset;
        undo that travel back to the later of t_onset and the record's last sighting.
        """
        anchor = t_onset if not rec.t_seen == rec.t_seen else max(rec.t_seen, t_onset)   # t_seen may be nan
        x_now = rec.x_at(now, self.speed_mm_s)
        return anchor, x_now - (self.travel_used_to(now) - self.travel_used_to(anchor))

    def correct_after_change(self, now: float, t_onset: float, v_new: float) -> None:
        """Re-place every record not seen since t_onset as if the belt had run at v_new since then."""
        for rec in self.records.values():
            anchor, x_anchor = self.position_after_change(rec, now, t_onset, v_new)
            rec.x_mm, rec.t_last = x_anchor + v_new * (now - anchor), now

    def mean_pitch_mm(self) -> float | None:
        """Median centre-to-centre spacing of arriving items so far (None before two arrived)."""
        return float(np.median(self.pitches_mm)) if self.pitches_mm else None


def _displacement(old: tuple, now: tuple) -> float | None:
    """Belt displacement between two sightings (t, front|None, back|None) from the edges both know."""
    f0, b0 = old[1], old[2]
    f1, b1 = now[1], now[2]
    if f0 is not None and f1 is not None and b0 is not None and b1 is not None:
        return ((f1 + b1) - (f0 + b0)) / 2
    if f0 is not None and f1 is not None:
        return f1 - f0
    if b0 is not None and b1 is not None:
        return b1 - b0
    return None
