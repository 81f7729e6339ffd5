"""Objects, not tracks: one `ObjectRecord` per physical item, tracked in belt coordinates.

Positions are predicted with the belt speed (x(t) = x + v (t - t_last)) and associated on the
prediction (Hungarian on belt distance), so a detector dropout only leaves a record coasting.
Tracker ids from a producer are hints (aliases): an id that jumps to another record flags both
as `id_switch`. One detection covering two predicted records flags them `merged`; a blob too long
or too concave for one item flags `not_single`; missed sightings flag `track_gap`. Flags never
delete a record: it keeps blocking its neighbours and still gets exactly one outcome.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from fovea.core import ClassResult, Detections
from fovea.line.config import LineConfig


@dataclass
class ObjectRecord:
    """Durable state of one physical object; `rid` is the key, tracker ids are only aliases."""

    rid: str
    t_first: float
    t_last: float
    x_mm: float                    # centre at t_last
    y_mm: float
    half_len_mm: float
    sightings: int = 1
    misses: int = 0                # consecutive missed frames while fully in view
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
    anchor: tuple[float, float] | None = None         # first uncut sighting (t, x), for speed

    def x_at(self, t: float, v: float) -> float:
        return self.x_mm + v * (t - self.t_last)

    @property
    def final(self) -> bool:
        return self.outcome is not None


class BeltTracker:
    """Associates per-frame detections (pixel boxes) with object records in belt coordinates."""

    def __init__(self, config: LineConfig):
        self.cfg = config
        self.records: dict[str, ObjectRecord] = {}
        self.alias_owner: dict[int, str] = {}
        self._ids = itertools.count()
        self.speed_mm_s = config.belt_speed_mm_s
        self._speed_samples: list[float] = []
        self.view_mm = None

    # ------------------------------------------------------------------ geometry
    def to_belt(self, xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) pixel boxes -> (N, 4) belt boxes in mm (x0, y0, x1, y1)."""
        return xyxy.astype(np.float64) * self.cfg.mm_per_px + np.array([self.cfg.x0_mm, 0, self.cfg.x0_mm, 0])

    @property
    def speed_known(self) -> bool:
        """True unless the speed is to be measured and fewer than 8 samples arrived yet."""
        return not self.cfg.measure_speed or len(self._speed_samples) >= 8

    def active(self) -> list[ObjectRecord]:
        return list(self.records.values())

    # ------------------------------------------------------------------ update
    def update(self, t: float, dets: Detections, image_width_px: int, results: list[ClassResult | None],
               valid: bool = True, truth_uids: list[int | None] | None = None) -> list[ObjectRecord]:
        """Fold one processed frame (capture time t) into the records; returns records seen in it.

        valid=False marks a frame that could not be used (black, frozen): nobody is seen, and
        every record fully in view counts a miss.
        """
        cfg, v = self.cfg, self.speed_mm_s
        self.view_mm = (cfg.x0_mm, cfg.x0_mm + image_width_px * cfg.mm_per_px)
        lo, hi = self.view_mm
        n = len(dets) if valid else 0
        boxes = self.to_belt(dets.xyxy) if n else np.zeros((0, 4))
        recs = [r for r in self.records.values()]
        pred = np.array([r.x_at(t, v) for r in recs]) if recs else np.zeros(0)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 if n else np.zeros(0)
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 if n else np.zeros(0)
        matched_rec: dict[int, int] = {}
        if n and recs:
            ry = np.array([r.y_mm for r in recs])
            cost = np.abs(cx[:, None] - pred[None, :]) + 0.5 * np.abs(cy[:, None] - ry[None, :])
            gate = (np.abs(cx[:, None] - pred[None, :]) < cfg.assoc_gate_mm) & (np.abs(cy[:, None] - ry[None, :]) < cfg.assoc_gate_mm)
            big = 1e6
            di, ri = linear_sum_assignment(np.where(gate, cost, big))
            for d, r in zip(di, ri):
                if gate[d, r]:
                    matched_rec[d] = r
        seen: list[ObjectRecord] = []
        used = set(matched_rec.values())
        solidity = dets.data.get("solidity") if n else None
        for d in range(n):
            x0, y0, x1, y1 = boxes[d]
            at_edge = x0 <= lo + 1e-6 or x1 >= hi - 1e-6
            # a detection whose extent holds the predicted centres of several records: a merge
            inside = [i for i, p in enumerate(pred) if x0 - 1 <= p <= x1 + 1 and abs(recs[i].y_mm - cy[d]) < (y1 - y0) / 2 + 1]
            if d in matched_rec:
                rec = recs[matched_rec[d]]
            else:
                free = [i for i in inside if i not in used]
                if free:
                    rec = recs[free[0]]
                    used.add(free[0])
                else:
                    rec = self._new(t, cx[d], cy[d], (x1 - x0) / 2)
                    recs.append(rec)
                    pred = np.append(pred, cx[d])
            if len(inside) > 1:
                for i in inside:
                    recs[i].flags.add("merged")
                rec.flags.add("merged")
            length = x1 - x0
            if not at_edge and (length > cfg.max_object_len_mm or (solidity is not None and solidity[d] < cfg.min_solidity)):
                rec.flags.add("not_single")
            self._observe(rec, t, x0, x1, cy[d], x0 <= lo + 1e-6, x1 >= hi - 1e-6)
            if dets.tracker_id is not None:
                self._alias(rec, int(dets.tracker_id[d]))
            res = results[d] if d < len(results) else None
            if res is not None and not at_edge:
                rec.votes.append(res)
                rec.vote_times.append(t)
            if truth_uids is not None and truth_uids[d] is not None:
                rec.truth[truth_uids[d]] += 1
            seen.append(rec)
        seen_ids = {id(r) for r in seen}
        for rec in self.records.values():
            if id(rec) in seen_ids or rec.final:
                continue
            x = rec.x_at(t, v)
            if lo + rec.half_len_mm < x < hi - rec.half_len_mm:     # fully in view, yet not seen
                rec.misses += 1
                rec.max_misses = max(rec.max_misses, rec.misses)
                if rec.misses > cfg.max_missed_frames:
                    rec.flags.add("track_gap")
        return seen

    def _new(self, t: float, x: float, y: float, half_len: float) -> ObjectRecord:
        rid = f"o{next(self._ids):06d}"
        rec = ObjectRecord(rid=rid, t_first=t, t_last=t, x_mm=float(x), y_mm=float(y), half_len_mm=float(half_len),
                           sightings=0)
        self.records[rid] = rec
        return rec

    def _observe(self, rec: ObjectRecord, t: float, x0: float, x1: float, y: float, cut_left: bool,
                 cut_right: bool) -> None:
        """Update a record from one box; a box cut by the image edge only tells its uncut edge."""
        half = (x1 - x0) / 2
        rec.half_len_mm = max(rec.half_len_mm, half) if rec.sightings else half
        if cut_left and not cut_right:
            x = x1 - rec.half_len_mm          # front edge is exact, the back is still outside
        elif cut_right and not cut_left:
            x = x0 + rec.half_len_mm          # back edge is exact, the front already left
        else:
            x = (x0 + x1) / 2
        if self.cfg.measure_speed and not (cut_left or cut_right):
            # displacement over a long baseline (>= 0.25 s) beats pixel quantization frame to frame
            if rec.anchor is None:
                rec.anchor = (t, x)
            elif t - rec.anchor[0] >= 0.25:
                self._speed_samples.append((x - rec.anchor[1]) / (t - rec.anchor[0]))
                if len(self._speed_samples) >= 8:
                    self._speed_samples = self._speed_samples[-64:]
                    self.speed_mm_s = float(np.median(self._speed_samples))
        rec.misses = 0
        rec.t_last, rec.x_mm, rec.y_mm = t, float(x), float(y)
        rec.sightings += 1

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
