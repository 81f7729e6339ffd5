"""The host's picture of the MCU's ARMED / SAFE state, mixed into `actuators.ProtocolActuator`.

Every SAFE the MCU enters is logged once as `fault kind=mcu_safe reason=<why> source=<READY|STATE|PONG>`.
The MCU numbers its SAFE latches per boot (`latch=` on PONG and STATE SAFE, protocol v1.2), so a
latch the host never saw coming is logged too: e.g. the host re-arms after a latch, the MCU arms,
its STATE ARMED reply is lost as the link drops again past the 500 ms watchdog; READY after the
reconnect then says SAFE while the host never believed it armed, and the first PONG's `latch=` shows
one latch more than the log holds. READY carries no number (it must stay within the 63-character
line limit): a SAFE it reports is logged when the host believed the MCU armed.
"""

from __future__ import annotations

LATCH_REASONS = ("HB_TIMEOUT", "HOST")


def latch_no(msg) -> int | None:
    """The MCU's per-boot SAFE latch number (`latch=`), None from firmware that does not send it."""
    try:
        return int(msg.kv["latch"])
    except (KeyError, ValueError):
        return None


class SafeStateMixin:
    """Needs the ProtocolActuator's _armed_belief, _latches_seen, _unlogged_reason, mcu_state,
    _pending and _emit."""

    def _note_state(self, state: str, reason: str, source: str, now: float, latch: int | None = None) -> None:
        """Track ARMED/SAFE; log `mcu_safe` (with its reason) each time SAFE is entered. READY carries
        no latch number: a SAFE it reports is logged if the host believed the MCU armed."""
        if state == "SAFE":
            if latch is not None:
                self._count_latches(latch, reason, source, now)
            elif self._armed_belief:
                self._log_safe(reason, source, now)
                self._latches_seen += reason in LATCH_REASONS      # boot SAFE (BOOT/RESET) is no latch
            elif reason in LATCH_REASONS:
                self._unlogged_reason = reason
            self._armed_belief = False
        elif state == "ARMED":
            self._armed_belief = True
        self.mcu_state = state

    def _count_latches(self, latch: int, reason: str, source: str, now: float) -> bool:
        """The MCU numbers its SAFE latches per boot (`latch=` on PONG and STATE SAFE): log each number
        the host has not logged yet, e.g. a latch after an ARM whose STATE ARMED reply was lost with
        the link (the host never saw the MCU armed again). The host's own shutdown SAFE (HOST, sent
        while it no longer believed the MCU armed) is not a fault."""
        missed = latch - self._latches_seen
        if missed <= 0:
            return False
        self._latches_seen = latch
        if reason == "HOST" and not self._armed_belief:
            return False
        last = reason or self._unlogged_reason or "unknown"
        for k in range(missed):
            self._log_safe(last if k == missed - 1 else "unknown", source, now,
                           f"latch {latch - missed + 1 + k} of this boot, seen late" if not self._armed_belief else "")
        self._unlogged_reason = ""
        return True

    def _log_safe(self, reason: str, source: str, now: float, detail: str = "") -> None:
        self._emit(now, "fault", kind="mcu_safe", reason=reason or "unknown", source=source,
                   detail=detail or reason, records=sorted(p.cmd.record for p in self._pending.values()))
