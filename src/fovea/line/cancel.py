"""The host's half of CANCEL (protocol v1.2), mixed into `actuators.ProtocolActuator`.

`cancel(id)` withdraws a gate command: one not yet on the wire at once; one in flight by
`CANCEL <id> boot=<b>`, resent every `ack_timeout_s` (up to `max_resends`) until the MCU answers,
and only to the boot that has it (after a reset the fate journal answers instead, via STATUS).
`NAK <id> CANCELLED` resolves the command `lost` with the caller's reason (its gate never opened
for it; handled in `ProtocolActuator._on_fate`); `CANCEL <id> TOO_LATE` means the swing had begun:
nothing changes, the command's DONE / NAK ABORTED follows as usual.
"""

from __future__ import annotations

from fovea.line.protocol import cancel_line


class CancelMixin:
    """Needs the ProtocolActuator's _lock, clock, _outbox, _pending, cfg, port, boot_id, _emit,
    _wake, _resolve_cmd and _safe_write."""

    def cancel(self, cmd_id: int, reason: str = "cancelled") -> str:
        """Withdraw a command (thread-safe). Unsent: resolved `lost` (reason) at once -> "unsent".
        In flight: CANCEL is sent (resent until answered) -> "requested"; NAK CANCELLED resolves it
        `lost` (reason), a swing that had begun runs its course. Else "unknown" (already resolved)."""
        with self._lock:
            now = self.clock.now()
            for cmd in self._outbox:
                if cmd.cmd_id == cmd_id:
                    self._outbox.remove(cmd)
                    self._resolve_cmd(cmd, now, "lost", reason)
                    return "unsent"
            p = self._pending.get(cmd_id)
            if p is None:
                return "unknown"
            if not p.cancel:
                p.cancel, p.cancel_reason = "want", reason
                self._emit(now, "cancel", cmd=cmd_id, record=p.cmd.record, reason=reason)
        self._wake.set()
        return "requested"

    def _send_cancels(self, now: float) -> None:
        """CANCEL for each command the caller withdrew, on the boot that acked it; resent like FIRE."""
        for p in list(self._pending.values()):
            if (p.cancel == "want" and p.reset_window is None and p.state in ("sent", "acked")
                    and now - p.t_cancel >= self.cfg.ack_timeout_s and p.cancel_sends <= self.cfg.max_resends
                    and self.port is not None):
                p.t_cancel, p.cancel_sends = now, p.cancel_sends + 1
                if not self._safe_write(cancel_line(p.cmd.cmd_id, self.boot_id), now):
                    return

    def _on_cancel_reply(self, msg, now: float) -> None:
        """CANCEL <id> TOO_LATE: the swing had begun; the command ends as usual."""
        p = self._pending.get(msg.int_arg(0))
        if p is not None and p.cancel == "want":
            p.cancel = "refused"
            self._emit(now, "cancel_refused", cmd=p.cmd.cmd_id, record=p.cmd.record)
