"""The decide-and-actuate side of the line runner: commits, gate commands in flight, outcomes.

`OutcomeSide` is mixed into `fovea.line.runner.LineRunner` (which owns the perception side:
capture, perceive, frame-time checks, tracker updates, blind intervals, and the drivers). It
turns a tracked record into its one committed decision (`policy.decide`), submits the gate
command, re-checks commands in flight when the belt moves other than planned (speed changes,
frames whose content contradicts their time) and withdraws them (CANCEL) while their swing has
not begun, and turns each command's reported fate into the record's one outcome: its lane,
default, or unknown.

State it uses on the runner: cfg, clock, log/emit, tracker, actuator, time_guard, link_p99_s,
clock_simulated, _fires, _conflict_owners, _cancel_asked, _cancelled, _speed_from,
_frames_closed, n_outcomes.
"""

from __future__ import annotations

import math

from fovea.line.actuators import ActuatorEvent, FireCommand
from fovea.line.fates import LANE, UNKNOWN, swing_outcome
from fovea.line.inflight import (BeltNow, crossing_envelope, off_window, swing_conflicts,
                                 swings_met_on_default_route, unverified)
from fovea.line.policy import DEFAULT, POLICY_NAME, POLICY_VERSION, decide, deadline
from fovea.line.speed import SpeedTrust
from fovea.line.tracker import ObjectRecord


POLICY = f"{POLICY_NAME}-v{POLICY_VERSION}"     # the `policy` field of decision events


class OutcomeSide:
    """Commits, commands in flight and outcomes of `LineRunner` (see the module docstring)."""

    def _check_in_flight(self, correct: bool) -> None:
        """Flag commands in flight that a speed change (or a blind interval) may have put off their
        item (`fovea.line.inflight`): `speed_change_in_flight` (outcome unknown), and
        `swing_conflict` for items another item's swing will meet. correct=True (a new speed just
        settled): the dead-reckoned positions are re-placed from the change's onset."""
        tr = self.tracker
        if not self.cfg.measure_speed:
            return
        now, v = self.clock.now(), tr.speed_mm_s
        changing = self._speed_from is not None
        v_old = self._speed_from if changing else v
        t_onset = tr.speed.t_segment if changing else now
        trust = tr.speed_trust(now)
        onsets = (t_onset, max(tr.speed.t_onset_lo, t_onset - 10.0)) if changing else (now,)
        belt = BeltNow(now, v, v_old, onsets, trust.rel_err if trust.known else abs(v - v_old) / v,
                       tr.speed.accel_mm_s2)
        hit = off_window(tr, self._fires, self.cfg, belt)
        for rid in hit:
            tr.records[rid].flags.add("speed_change_in_flight")
        if hit:
            self.emit("fault", kind="speed_change_in_flight", records=hit, from_mm_s=v_old, to_mm_s=round(v, 1),
                      detail="gate timed with another speed than the belt's now: the item may miss its window")
        met = []
        if changing or correct:
            met = swing_conflicts(tr, self._fires, self.cfg, belt)
            for rid, _, _ in met:
                rec = tr.records[rid]
                rec.flags.add("swing_conflict")
                if rec.state == "SCHEDULED":       # its own DONE would claim its lane: unknown instead
                    rec.flags.add("speed_change_in_flight")
            if met:
                self.emit("fault", kind="swing_conflict", records=met,
                          detail="after the speed change this item meets a swing timed for another item")
        self._cancel_in_flight(hit, met, now)
        if correct:
            tr.correct_after_change(now, t_onset, v)

    def _cancel_in_flight(self, hit: list[str], met: list, now: float,
                          hit_reason: str = "cancelled_speed_change") -> None:
        """Withdraw queued commands a speed change made wrong (protocol v1.2 CANCEL) before their swing
        begins: the item's own command when it may miss its window (`cancelled_speed_change`), and the
        command whose swing will meet another item (`cancelled_swing_conflict`). A confirmed cancel
        sends the item to the default route; one the MCU refused (swing begun) changes nothing."""
        for rid, owner, _ in met:
            self._conflict_owners.setdefault(rid, set()).add(owner)
        cancel = getattr(self.actuator, "cancel", None)
        why = {owner: "cancelled_swing_conflict" for _, owner, _ in met}
        why.update({rid: hit_reason for rid in hit})
        for rid, reason in why.items():
            cmd, rec = self._fires.get(rid), self.tracker.records.get(rid)
            if (cancel is None or cmd is None or rec is None or rec.final or rid in self._cancel_asked
                    or cmd.t_open <= now):
                continue
            self._cancel_asked.add(rid)
            cancel(cmd.cmd_id, reason)
            if self.clock_simulated:
                self.actuator.poll()

    def _unverified_crossings(self) -> bool:
        """True while an item crosses its gate on a belt speed not measured for longer than
        speed_max_age_s, or after frames began to contradict the predictions (the frame-time
        guard's doubt; `inflight.unverified`): the commands' replies then wait (outcomes not yet
        logged) until a usable frame measures the speed, or the doubt ends, and `_check_in_flight`
        has judged them. At the end of the frames, or 5 s into the wait (the doubt), they are
        flagged `speed_change_in_flight` (`position_in_doubt`): their outcome is unknown."""
        if not self.cfg.measure_speed:
            return False
        now, t_sample = self.clock.now(), self.tracker.speed.t_sample
        guard = self.time_guard
        stale = unverified(self.tracker, self._fires, self.cfg, now)
        waiting = unverified(self.tracker, self._fires, self.cfg, now, guard.doubt_from)
        if not waiting:
            return False
        limit = self.cfg.speed_max_age_s + 5.0
        doubt_over = guard.in_doubt and now - guard.doubt_from > limit
        if self._frames_closed or now - t_sample > limit or doubt_over:
            for rec in waiting:
                rec.flags.add("speed_change_in_flight" if rec in stale else "position_in_doubt")
            self.emit("fault", kind="speed_unverified_in_flight", records=[r.rid for r in waiting],
                      t_speed_sample=t_sample, t_doubt_from=guard.doubt_from,
                      detail="no belt speed measured (or frames contradict the belt) since before the items crossed")
            return False
        return True

    def _offset_in_flight(self, shift_mm: float) -> None:
        """The frame-time guard's safety net re-anchored the tracker by shift_mm: either the commands
        in flight were timed on positions that far off, or the frames now used are. Commands whose
        window that shift leaves are flagged `position_in_doubt` (a DONE cannot claim their lane)
        and withdrawn while their swing has not begun (`cancelled_position_in_doubt`)."""
        v, act = self.tracker.speed_mm_s, self.cfg.actuation_s
        hit = [rid for rid, cmd in self._fires.items()
               if (rec := self.tracker.records.get(rid)) is not None and rec.state == "SCHEDULED" and not rec.final
               and shift_mm / v >= 0.9 * (cmd.hold_s - act) / 2]
        for rid in hit:
            self.tracker.records[rid].flags.add("position_in_doubt")
        if hit:
            self.emit("fault", kind="position_in_doubt", records=hit, shift_mm=round(shift_mm, 1),
                      detail="the tracker was re-anchored by this much: the gate may be timed off the item")
            self._cancel_in_flight(hit, [], self.clock.now(), "cancelled_position_in_doubt")

    def _commit(self, rec: ObjectRecord, t_evidence: float, t_capture: float) -> None:
        now = self.clock.now()
        v = self.tracker.speed_mm_s
        too_close = self.tracker.neighbours_too_close(rec, now)
        trust = self.tracker.speed_trust(now) if self.cfg.measure_speed else self.tracker.configured_speed_check(now)
        if self.time_guard.in_doubt:          # frames contradict the belt: where the item is is not known
            trust = SpeedTrust(v, False, math.inf, "frame_time_doubt")
        d = decide(rec, too_close, now, v, self.cfg, self.link_p99_s, trust)
        rec.state = "DECIDED"
        rec.lane, rec.gate = d.lane, d.gate
        self.emit("decision", record=rec.rid, lane=d.lane, gate=d.gate, reason=d.reason, t_commit=d.t_commit,
                  class_name=d.class_name, confidence=d.confidence, margin=d.margin, votes=d.votes,
                  t_evidence=t_evidence, flags=sorted(rec.flags), too_close=too_close[:4],
                  policy=POLICY)
        if d.lane == DEFAULT:
            if "swing_conflict" in rec.flags:      # a swing for another item will take it somewhere
                self._finalize(rec, UNKNOWN, "swing_conflict")
                return
            self._finalize(rec, DEFAULT, d.reason)
            return
        rec.state = "SCHEDULED"
        cmd = FireCommand(rec.rid, d.gate, d.t_open, d.hold_s, t_decision=now, t_capture=t_capture)
        self._fires[rec.rid] = cmd
        self.actuator.submit(cmd)
        if self.clock_simulated:
            self.actuator.poll()

    def _drain_actuator(self) -> None:
        """Turn each command's reported fate into the record's one outcome: its lane, default, or unknown.

        `done` / `cut` carry the gate's actual open interval; the item's centre was planned to
        cross the gate mid-window (t_open + (actuation + hold) / 2, +- margin_s), so
        `fates.swing_outcome` tells whether it passed the open gate (lane), met a closed one
        (default) or a moving one / cannot be told (unknown, reason partial_swing).
        """
        q = self.actuator.events
        while not q.empty():
            ev: ActuatorEvent = q.get()
            rec = self.tracker.records.get(ev.record)
            if rec is None or rec.final:
                if ev.kind != "ack":
                    self.emit("fault", kind="orphan_reply", record=ev.record, cmd=ev.cmd_id, detail=ev.kind)
                continue
            if ev.kind in ("done", "cut"):
                lane, reason = self._swing_fate(rec, ev)
                self._finalize(rec, lane, reason)
            elif ev.kind == "lost" and ev.reason.startswith("cancelled"):
                self._cancelled.add(rec.rid)           # no swing of its own; another's may still meet it
                met = self._conflict_owners.get(rec.rid, set()) - self._cancelled
                met = met or swings_met_on_default_route(self.tracker, rec, self._fires, self.cfg,
                                                         self.clock.now(), skip=self._cancelled)
                self._finalize(rec, *((UNKNOWN, "swing_conflict") if met else (DEFAULT, ev.reason)))
            elif ev.kind == "lost":
                self._finalize(rec, DEFAULT, ev.reason)
            elif ev.kind == "unknown":
                self._finalize(rec, UNKNOWN, ev.reason)

    def _swing_fate(self, rec: ObjectRecord, ev: ActuatorEvent) -> tuple[str, str]:
        cmd = self._fires.get(rec.rid)
        if cmd is None:                                  # not ours: trust the MCU's word
            return (rec.lane, "done") if ev.kind == "done" else (UNKNOWN, "partial_swing")
        t_from = cmd.t_open if ev.t_from is None else ev.t_from
        t_to = cmd.t_open + cmd.hold_s if ev.t_to is None else ev.t_to
        act = self.cfg.actuation_s
        lo, hi = crossing_envelope(self.tracker, rec, self.cfg.gate_distance_mm[cmd.gate], self.clock.now())
        where = swing_outcome((lo + hi) / 2, (hi - lo) / 2 + self.cfg.margin_s, t_from, t_to, act)
        for flag in ("speed_change_in_flight", "position_in_doubt"):
            if where == LANE and flag in rec.flags:
                return UNKNOWN, flag                     # the crossing time rests on an old belt
        if where == LANE:
            return rec.lane, "done" if ev.kind == "done" else "cut_after_pass"
        if where == DEFAULT:
            return DEFAULT, "swing_missed_item" if ev.kind == "done" else "cut_before_pass"
        return UNKNOWN, "partial_swing"

    def _deadline_tick(self) -> None:
        now = self.clock.now()
        v = self.tracker.speed_mm_s
        guard = max(2 * self.cfg.tick_s, self.cfg.commit_lead_s or 0.0)
        for rec in list(self.tracker.records.values()):
            if rec.state == "TRACKED" and now >= deadline(rec, v, self.cfg, self.link_p99_s) - guard:
                self._commit(rec, now, rec.t_last)

    def _finalize(self, rec: ObjectRecord, lane: str, reason: str) -> None:
        if rec.final:
            self.emit("fault", kind="duplicate_outcome", record=rec.rid, detail=f"{rec.outcome} then {lane}")
            return
        rec.outcome, rec.outcome_reason = lane, reason
        rec.state = {DEFAULT: "DEFAULT", UNKNOWN: "UNKNOWN"}.get(lane, "DONE")
        self.n_outcomes += 1
        self.emit("outcome", record=rec.rid, lane=lane, reason=reason, flags=sorted(rec.flags),
                  truth=sorted(rec.truth))
