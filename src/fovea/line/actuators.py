"""Actuators that speak the sorter protocol: `SerialActuator` (pyserial) and `SimulatedActuator`.

Both are the same `ProtocolActuator` client over a different port: the simulated one talks to
the in-process firmware emulator, so simulated runs put the same bytes on the "wire" as a real
line. The client opens its port once, sets a write timeout, waits for READY (never sleeps a
fixed boot delay), re-arms explicitly, sends PING heartbeats (which also estimate the MCU clock,
`fates.ClockSync`), schedules each FIRE at an absolute MCU time bound to the MCU's boot id (a
delayed line fires on time or is refused, never late), resends unacknowledged commands by id
(idempotent on the MCU), and reconnects with a back-off capped well below the MCU's watchdog
while a drop is young.

Every command's fate is reported exactly once on `events` (`ActuatorEvent.kind`):
`done` (hold ran its course) and `cut` (swing cut short) carry the gate's actual open interval
in host time, so the caller can tell whether its item passed the open gate; `lost` means the gate
never opened for it (NAK, never sent, a reset before it started, the watchdog latched before it
was due); `unknown` means nobody can tell (the MCU lost its journal in a power loss, or the link
stayed dead). An acked command has a deadline (due + hold + `done_grace_s`) after which the host
asks `STATUS <id>`; after an MCU reset every command in flight is asked for (the firmware's fate
journal survives resets that keep RAM). `cancel(id)` (`line/cancel.py`, protocol v1.2 CANCEL)
withdraws a command whose swing has not begun: `lost` with the caller's reason. A link dead for
`dead_after_s` resolves what is left.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fovea.errors import ConfigError, ProtocolError
from fovea.line.clock import RealClock
from fovea.line.cancel import CancelMixin
from fovea.line.safe_state import SafeStateMixin, latch_no
from fovea.line.emulator import EmulatorLink, FirmwareEmulator
from fovea.line.fates import ClockSync, LinkConfig  # noqa: F401  (LinkConfig is part of this API)
from fovea.line.protocol import fire_line, open_interval_s, parse_line, status_line

INF = float("inf")


@dataclass
class FireCommand:
    """Open `gate` at host time t_open for hold_s seconds, on behalf of object `record`."""

    record: str
    gate: int
    t_open: float
    hold_s: float
    t_decision: float = 0.0
    t_capture: float = 0.0
    cmd_id: int = 0


@dataclass
class ActuatorEvent:
    """A command's fate reported back to the decision stage.

    kind: 'ack' | 'done' | 'cut' | 'lost' | 'unknown'; t_from/t_to: the gate's actual open
    interval in host seconds (done and cut only).
    """

    kind: str
    cmd_id: int
    record: str
    t: float
    reason: str = ""
    t_from: float | None = None
    t_to: float | None = None


@dataclass
class _Pending:
    cmd: FireCommand
    state: str = "sent"          # sent (FIRE written, no answer yet) | acked | query (after an MCU reset)
    t_sent: float = 0.0
    sends: int = 0
    acked: bool = False
    t_query: float = INF         # when to ask STATUS next
    queries: int = 0
    reset_window: tuple[float, float] | None = None    # (last line of the old boot, READY of the new one)
    cancel: str = ""             # "" | want (CANCEL to send / resend) | refused (the swing had begun)
    cancel_reason: str = ""
    t_cancel: float = -INF
    cancel_sends: int = 0

    @property
    def deadline(self) -> float:
        return self.cmd.t_open + self.cmd.hold_s


class ProtocolActuator(CancelMixin, SafeStateMixin):
    """Host side of the sorter protocol over any pyserial-like port (write, readline, open, close)."""

    def __init__(self, port_factory: Callable[[], Any], clock=None, emit: Callable[..., Any] | None = None,
                 config: LinkConfig | None = None):
        self.port_factory = port_factory
        self.clock = clock or RealClock()
        self._emit = emit or (lambda t, type, **kw: None)
        self.cfg = config or LinkConfig()
        self.port = None
        self.link = "down"           # down -> handshake -> ready (READY seen; armed when mcu_state ARMED)
        self.boot_id: str | None = None
        self.mcu_state = "UNKNOWN"
        self.events: queue.Queue[ActuatorEvent] = queue.Queue()
        self.sync = ClockSync()
        self._pending: dict[int, _Pending] = {}
        self._outbox: deque[FireCommand] = deque()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._next_id = 1
        self._ping_seq = 0
        self._pings: dict[int, float] = {}
        self._rtts: deque[float] = deque(maxlen=200)
        self._rtt_p99 = 0.0
        self._last_pong = 0.0
        self._last_ping = -1e9
        self._next_attempt = 0.0
        self._backoff = self.cfg.backoff_s[0]
        self._t_hello = -1e9
        self._t_arm = -1e9
        self._t_open = 0.0
        self._t_down: float | None = None      # start of the current outage
        self._t_last_rx = 0.0                  # last line from the MCU
        self._t_last_write = -1e9              # last line the host put on the wire
        self._armed_belief = False             # the MCU was ARMED when last heard of
        self._latches_seen = 0                 # SAFE latches of this boot the host has logged (latch=)
        self._unlogged_reason = ""             # why the MCU said it is SAFE, when that was not logged
        self._presumed_safe = False
        self._dead_logged = False
        self.n_reconnects = 0

    # ------------------------------------------------------------------ public
    @property
    def ready(self) -> bool:
        """Commands can be sent: READY seen, MCU ARMED, its clock estimated on this boot."""
        return self.link == "ready" and self.mcu_state == "ARMED" and self.sync.known

    @property
    def link_p99_s(self) -> float:
        """Link latency budget: max(configured floor, p99 of recent PING round trips / 2)."""
        return max(self.cfg.link_p99_floor_s, self._rtt_p99 / 2)

    def submit(self, cmd: FireCommand) -> int:
        """Queue a command (thread-safe); returns its wire id. Its fate arrives on `events`."""
        with self._lock:
            cmd.cmd_id = self._next_id
            self._next_id += 1
            self._outbox.append(cmd)
        self._wake.set()
        return cmd.cmd_id

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._outbox)

    def set_armed(self, armed: bool, who: str = "operator") -> None:
        """Operator arm/disarm: send ARM or SAFE now and make the host's re-arm policy (`auto_arm`) match, so
        a disarmed line stays SAFE across MCU resets. Logged as a fault-stream event naming `who`."""
        with self._lock:
            now = self.clock.now()
            self.cfg.auto_arm = bool(armed)
            self._emit(now, "fault", kind="arm" if armed else "disarm", detail=f"{who} {'arms' if armed else 'disarms'}")
            self._safe_write("ARM" if armed else "SAFE", now)

    def poll(self) -> None:
        """One round of link work: (re)connect, read replies, heartbeat, ask, send, time out."""
        with self._lock:
            now = self.clock.now()
            if self.port is None or self.link == "down":
                self._try_connect(now)
            if self.port is not None:
                self._read(now)
            if self.port is not None:
                self._heartbeat(now)
            if self.port is not None and self.link == "ready":
                self._query(now)
                self._send_cancels(now)
            if self.ready:
                self._send_outbox(now)
                self._resend_unacked(now)
            self._expire_outbox(now)
            self._judge_silence(now)

    def run_forever(self, stop: threading.Event) -> None:
        """Thread body for real-time use: poll until `stop` is set; a submit wakes it at once."""
        while not stop.is_set():
            self.poll()
            self._wake.wait(0.002)
            self._wake.clear()

    def close(self, wait_s: float = 2.0) -> None:
        """End of run: every command in flight gets its fate, then SAFE and the port is closed.

        While the link lives, commands run their course (polling up to wait_s); then SAFE is sent,
        which NAKs what has not started, and the replies are read. Unsent commands are `lost`
        (unsent_at_shutdown: no gate moved). Only a command the link could not report is left; it
        is resolved as with a dead link (`_give_up`, reason link_dead_at_shutdown, or
        no_answer_at_shutdown when the link was up but its answer never came).
        """
        in_timer = getattr(self.clock, "_running_timer", False)     # a SimClock timer cannot wait

        def wait(seconds: float) -> None:
            t_end = self.clock.now() + seconds
            while (not in_timer and (self._pending or self._outbox) and self.clock.now() < t_end
                   and self.link != "down"):
                self.poll()
                self.clock.sleep(0.005)

        wait(wait_s)
        safe_sent = False
        with self._lock:
            now = self.clock.now()
            while self._outbox:
                self._resolve_cmd(self._outbox.popleft(), now, "lost", "unsent_at_shutdown")
            if self.port is not None and self.link == "ready" and self._pending:
                self._armed_belief = False                  # the host latches it: not a fault
                safe_sent = self._safe_write("SAFE", now)
        wait(0.3)
        with self._lock:
            now = self.clock.now()
            why = "link_dead_at_shutdown" if self.link != "ready" else "no_answer_at_shutdown"
            for p in list(self._pending.values()):
                self._give_up(p, now, why)
            if self.port is not None:
                if not safe_sent:
                    try:
                        self._write("SAFE", now)
                    except Exception:
                        pass
                self._close_port()

    # ------------------------------------------------------------------ connection
    def _try_connect(self, now: float) -> None:
        if self.port is not None and self.link == "handshake":
            return
        if now < self._next_attempt:
            return
        try:
            self.port = self.port_factory()
            if not self.port.is_open:
                self.port.open()
        except Exception as exc:      # serial.SerialException, OSError
            self.port = None
            self._fail(now, f"open failed: {exc}")
            return
        self.link = "handshake"
        self._t_open = now
        self._t_hello = -1e9
        self._emit(now, "fault", kind="link_connect", detail="port opened, waiting for READY")

    def _fail(self, now: float, why: str) -> None:
        """Schedule the next open: exponential back-off, capped well below the watchdog while young."""
        if self._t_down is None:
            self._t_down = now
        young = now - self._t_down < self.cfg.young_drop_s
        wait = min(self._backoff, self.cfg.young_backoff_cap_s) if young else self._backoff
        self._next_attempt = now + wait
        self._backoff = min(self._backoff * 2, self.cfg.backoff_s[1])
        self._emit(now, "fault", kind="link_down", detail=why, retry_in_s=round(wait, 3))

    def _link_lost(self, now: float, why: str) -> None:
        self._close_port()
        self.link = "down"
        self.mcu_state = "UNKNOWN"
        self.n_reconnects += 1
        for p in self._pending.values():      # in doubt: FIRE resent by id / STATUS asked after READY
            if p.state == "sent":
                p.sends = 0
        self._fail(now, why)

    def _close_port(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except Exception:
                pass
        self.port = None

    def _write(self, line: str, now: float) -> None:
        self.port.write((line + "\n").encode("ascii"))
        self._t_last_write = now

    def _safe_write(self, line: str, now: float) -> bool:
        try:
            self._write(line, now)
            return True
        except Exception as exc:       # SerialTimeoutException, SerialException, OSError
            self._link_lost(now, f"write failed: {exc}")
            return False

    # ------------------------------------------------------------------ reading
    def _read(self, now: float) -> None:
        if self.link == "handshake":
            if now - self._t_open > self.cfg.ready_timeout_s:
                self._link_lost(now, f"no READY within {self.cfg.ready_timeout_s} s")
                return
            if now - self._t_hello >= self.cfg.hello_every_s:
                self._t_hello = now
                if not self._safe_write("HELLO", now):
                    return
        for _ in range(256):
            try:
                if getattr(self.port, "in_waiting", 1) <= 0:     # never block the loop on an idle link
                    return
                raw = self.port.readline()
            except Exception as exc:
                self._link_lost(now, f"read failed: {exc}")
                return
            if not raw:
                return
            try:
                msg = parse_line(raw)
                t = self.clock.now()
                self._handle(msg, t)
                self._t_last_rx = t
            except ProtocolError as exc:
                self._emit(now, "fault", kind="protocol", detail=str(exc))
                continue
            if self.port is None:
                return

    def _handle(self, msg, now: float) -> None:
        v = msg.verb
        if v == "READY":
            self._on_ready(msg, now)
        elif v == "STATE":
            state = msg.args[0] if msg.args else "SAFE"
            self._note_state(state, msg.kv.get("reason", ""), "STATE", now, latch_no(msg))
            if state == "ARMED":
                self._t_arm = -1e9
            if state == "SAFE" and self.cfg.auto_arm and self.link == "ready":
                self._arm(now)
        elif v == "PONG":
            self._on_pong(msg, now)
        elif v == "CANCEL":
            self._on_cancel_reply(msg, now)
        elif v in ("ACK", "NAK", "DONE", "UNKNOWN"):
            p = self._pending.get(msg.int_arg(0))
            if p is not None:
                self._on_fate(v, msg, p, now)
        elif v == "ERR":
            self._emit(now, "fault", kind="protocol", detail=" ".join(msg.args))

    def _on_ready(self, msg, now: float) -> None:
        boot = msg.kv.get("boot")
        state, reason = msg.kv.get("state", "SAFE"), msg.kv.get("reason", "")
        if boot != self.boot_id:
            self._latches_seen, self._unlogged_reason = 0, ""
        if self.boot_id is not None and boot != self.boot_id:
            affected = sorted(p.cmd.record for p in self._pending.values())
            self._emit(now, "fault", kind="mcu_reset", detail=f"boot {self.boot_id} -> {boot}",
                       journal="kept" if reason == "RESET" else "lost", records=affected)
            self.sync.reset()
            self._pings.clear()
            for p in self._pending.values():          # resolved from the MCU's journal, never re-fired
                p.state, p.t_query, p.queries = "query", now, 0
                p.reset_window = p.reset_window or (self._t_last_rx, now)
        self.boot_id = boot
        self.link = "ready"
        self._backoff = self.cfg.backoff_s[0]
        self._t_down = None
        self._presumed_safe = False
        self._dead_logged = False
        self._last_pong = now
        self._last_ping = -1e9                         # PING at once: the clock estimate needs it
        self._note_state(state, reason, "READY", now)
        if state != "ARMED" and self.cfg.auto_arm:
            self._arm(now)
        for p in self._pending.values():
            if p.state == "sent":
                p.t_sent = -1e9                        # resend by id at once
            elif p.state == "acked":
                p.t_query = now                        # its DONE may have been lost with the link

    def _on_pong(self, msg, now: float) -> None:
        seq = msg.int_arg(0)
        t0 = self._pings.pop(seq, None)
        if t0 is not None:
            self._rtts.append(now - t0)
            if len(self._rtts) >= 5 and len(self._rtts) % 5 == 0:   # refresh the p99 now and then
                self._rtt_p99 = float(np.percentile(np.fromiter(self._rtts, float), 99))
            if "t" in msg.kv:
                self.sync.add(t0, now, msg.int_kv("t") / 1000.0)
        self._last_pong = now
        state = msg.kv.get("state", self.mcu_state)
        latch = latch_no(msg)
        logged = latch is not None and self._count_latches(latch, "", "PONG", now)
        if state == "SAFE" and self._armed_belief:
            if logged:
                self._armed_belief, self.mcu_state = False, "SAFE"
            else:                                  # SAFE with no new latch: a reset whose READY was lost?
                self._note_state("SAFE", "", "PONG", now)
            if now - self._t_hello >= self.cfg.hello_every_s:     # a reset whose READY was lost?
                self._t_hello = now
                self._safe_write("HELLO", now)
            if self.cfg.auto_arm and self.port is not None:
                self._arm(now)
        elif state != self.mcu_state:
            self._note_state(state, "", "PONG", now)

    # ------------------------------------------------------------------ fates
    def _on_fate(self, verb: str, msg, p: _Pending, now: float) -> None:
        cmd = p.cmd
        if verb == "ACK":
            if p.state == "query":
                p.t_query = now + self.cfg.status_every_s
                return
            p.state = "acked"
            if not p.acked:
                p.acked = True
                self._emit(now, "ack", cmd=cmd.cmd_id, record=cmd.record)
                self.events.put(ActuatorEvent("ack", cmd.cmd_id, cmd.record, now))
            p.t_query = max(p.deadline + self.cfg.done_grace_s, now + self.cfg.status_every_s)
            p.queries = 0
        elif verb == "DONE":
            f, t = open_interval_s(msg) or (0.0, cmd.hold_s)
            self._emit(now, "done", cmd=cmd.cmd_id, record=cmd.record, mcu_t_ms=msg.kv.get("t"),
                       t_from=round(cmd.t_open + f, 6), t_to=round(cmd.t_open + t, 6))
            self._resolve(p, now, "done", "done", (cmd.t_open + f, cmd.t_open + t))
        elif verb == "UNKNOWN":
            self._on_unknown(p, now)
        else:
            reason = msg.args[1] if len(msg.args) > 1 else "NAK"
            self._emit(now, "nak", cmd=cmd.cmd_id, record=cmd.record, reason=reason)
            if reason == "ABORTED":
                f, t = open_interval_s(msg) or (0.0, 0.0)
                self._resolve(p, now, "cut", "nak_aborted", (cmd.t_open + f, cmd.t_open + t))
            elif reason == "BOOT":                     # that copy reached another boot: no news of the old one
                if p.reset_window is not None:
                    self._deduce_after_reset(p, now)
                else:
                    p.state, p.t_query = "query", now + self.cfg.status_every_s
                    p.reset_window = (self._t_last_rx, now)
                    self._t_hello = now
                    self._safe_write("HELLO", now)     # learn the new boot
            elif reason == "CANCELLED":                # withdrawn before its swing began: no gate moved
                self._resolve(p, now, "lost", p.cancel_reason or "cancelled")
            else:
                self._resolve(p, now, "lost", "mcu_reset" if reason == "RESET" else f"nak_{reason.lower()}")

    def _on_unknown(self, p: _Pending, now: float) -> None:
        """The MCU has no record of the id."""
        if p.reset_window is not None:
            self._deduce_after_reset(p, now)
        elif p.acked:
            self._resolve(p, now, "unknown", "journal_evicted")
        elif now >= p.cmd.t_open + self.link_p99_s + 0.01:
            self._resolve(p, now, "lost", "never_received")       # any copy still on the wire is refused LATE
        elif p.cmd.t_open - now > self.link_p99_s:
            p.state, p.t_sent = "sent", -1e9                      # never arrived: send it again
        else:
            p.t_query = p.cmd.t_open + self.link_p99_s + 0.02

    def _deduce_after_reset(self, p: _Pending, now: float) -> None:
        """No journal entry from the boot that had it: only timing can tell."""
        t_lo, t_hi = p.reset_window
        if p.cmd.t_open >= t_hi:
            self._resolve(p, now, "lost", "mcu_reset")            # due after the reset: it never started
        else:
            self._resolve(p, now, "unknown", "mcu_reset_journal_lost")

    def _give_up(self, p: _Pending, now: float, reason: str) -> None:
        """The link cannot tell: a command due after the watchdog latched never started, else unknown."""
        latch_by = self._t_last_write + self.cfg.mcu_watchdog_s + self.link_p99_s + 0.02
        if p.cmd.t_open >= latch_by and self.link != "ready":
            self._resolve(p, now, "lost", "mcu_safe_watchdog")
        else:
            self._resolve(p, now, "unknown", reason)

    def _judge_silence(self, now: float) -> None:
        """While the host cannot write, the MCU latches SAFE within its watchdog: say so at once."""
        if self.link == "ready" and self.port is not None:
            return
        latch_by = self._t_last_write + self.cfg.mcu_watchdog_s + self.link_p99_s + 0.02
        if self._armed_belief and not self._presumed_safe and now >= latch_by:
            self._presumed_safe = True
            doomed = [p for p in self._pending.values() if p.cmd.t_open >= latch_by]
            self._emit(now, "fault", kind="mcu_safe_presumed", reason="HB_TIMEOUT",
                       detail=f"host silent since {self._t_last_write:.3f}: the MCU latched SAFE by {latch_by:.3f}",
                       records=sorted(p.cmd.record for p in self._pending.values()))
            for p in doomed:
                self._resolve(p, now, "lost", "mcu_safe_watchdog")
        if self._t_down is not None and now - self._t_down >= self.cfg.dead_after_s:
            due = [p for p in self._pending.values() if now >= p.deadline + self.cfg.done_grace_s]
            if due and not self._dead_logged:
                self._dead_logged = True
                self._emit(now, "fault", kind="link_dead", detail=f"link down for {now - self._t_down:.2f} s",
                           records=sorted(p.cmd.record for p in due))
            for p in due:
                self._give_up(p, now, "link_dead")

    def _resolve(self, p: _Pending, now: float, kind: str, reason: str,
                 interval: tuple[float, float] | None = None) -> None:
        self._pending.pop(p.cmd.cmd_id, None)
        self._resolve_cmd(p.cmd, now, kind, reason, interval)

    def _resolve_cmd(self, cmd: FireCommand, now: float, kind: str, reason: str,
                     interval: tuple[float, float] | None = None) -> None:
        if kind == "lost":
            self._emit(now, "fault", kind="command_lost", cmd=cmd.cmd_id, record=cmd.record, reason=reason)
        elif kind == "unknown":
            self._emit(now, "fault", kind="command_unknown", cmd=cmd.cmd_id, record=cmd.record, reason=reason)
        t_from, t_to = interval if interval is not None else (None, None)
        self.events.put(ActuatorEvent(kind, cmd.cmd_id, cmd.record, now, reason, t_from, t_to))

    # ------------------------------------------------------------------ writing
    def _arm(self, now: float) -> None:
        """Explicit ARM after READY/SAFE (host policy `auto_arm`); one outstanding ARM at a time."""
        if now - self._t_arm < self.cfg.ack_timeout_s:
            return
        self._t_arm = now
        self._emit(now, "fault", kind="arm", detail=f"host re-arms MCU boot {self.boot_id}")
        self._safe_write("ARM", now)

    def _heartbeat(self, now: float) -> None:
        if self.link != "ready":
            return
        if now - self._last_pong > self.cfg.heartbeat_s * self.cfg.heartbeat_misses:
            self._link_lost(now, f"no PONG for {now - self._last_pong:.3f} s")
            return
        if now - self._last_ping >= self.cfg.heartbeat_s:
            self._ping_seq += 1
            self._pings[self._ping_seq] = now
            if len(self._pings) > 64:
                self._pings.pop(min(self._pings))
            self._last_ping = now
            self._safe_write(f"PING {self._ping_seq}", now)

    def _query(self, now: float) -> None:
        """STATUS for acked commands past their deadline and for commands in doubt after a reset."""
        for p in list(self._pending.values()):
            if p.state == "sent" or now < p.t_query or self.port is None:
                continue
            if p.queries >= self.cfg.max_queries:
                self._link_lost(now, f"STATUS {p.cmd.cmd_id} unanswered {p.queries} times")
                return
            p.queries += 1
            p.t_query = now + self.cfg.status_every_s
            if not self._safe_write(status_line(p.cmd.cmd_id), now):
                return

    def _send_outbox(self, now: float) -> None:
        while self._outbox and self.port is not None:
            cmd = self._outbox.popleft()
            if cmd.t_open < now:
                self._resolve_cmd(cmd, now, "lost", "late_at_send")
                continue
            p = _Pending(cmd)
            self._pending[cmd.cmd_id] = p
            self._emit(now, "command", cmd=cmd.cmd_id, record=cmd.record, gate=cmd.gate,
                       at_ms=int(round((cmd.t_open - now) * 1000)), hold_ms=int(round(cmd.hold_s * 1000)),
                       t_decision=cmd.t_decision, t_capture=cmd.t_capture)
            self._send(p, now)

    def _send(self, p: _Pending, now: float) -> None:
        cmd = p.cmd
        line = fire_line(cmd.cmd_id, cmd.gate, int(round(cmd.hold_s * 1000)),
                         due_ms=max(self.sync.to_mcu_ms(cmd.t_open), 0), boot=self.boot_id)
        p.t_sent = now
        p.sends += 1
        self._safe_write(line, now)

    def _resend_unacked(self, now: float) -> None:
        for p in list(self._pending.values()):
            if p.state == "sent" and now - p.t_sent >= self.cfg.ack_timeout_s and self.port is not None:
                if p.sends > self.cfg.max_resends:
                    self._link_lost(now, f"command {p.cmd.cmd_id} unacknowledged after {p.sends} sends")
                    return
                self._send(p, now)

    def _expire_outbox(self, now: float) -> None:
        keep = deque()
        while self._outbox:
            cmd = self._outbox.popleft()
            if cmd.t_open < now:
                self._resolve_cmd(cmd, now, "lost", "link_not_ready" if not self.ready else "late_at_send")
            else:
                keep.append(cmd)
        self._outbox = keep


class SerialActuator(ProtocolActuator):
    """The protocol over a pyserial port or URL (COM3, /dev/ttyACM0, socket://host:port, loop://).

    The port object is created once with `timeout` and `write_timeout`; after a fault it is
    re-opened with exponential backoff, and the client waits for READY rather than sleeping.
    """

    def __init__(self, port: str, baudrate: int = 115200, clock=None, emit=None, config: LinkConfig | None = None,
                 read_timeout_s: float = 0.01, write_timeout_s: float = 0.05):
        import serial

        if not port:
            raise ConfigError("SerialActuator needs a port, e.g. /dev/ttyACM0, COM3 or socket://127.0.0.1:7000")
        self.url = port

        def factory():
            return serial.serial_for_url(port, baudrate=baudrate, timeout=read_timeout_s,
                                         write_timeout=write_timeout_s)

        super().__init__(factory, clock=clock, emit=emit, config=config)


class SimulatedActuator(ProtocolActuator):
    """The protocol against the in-process firmware emulator, timed by `clock` (real or simulated).

    `link.set_down(True/False)` cuts and restores the cable; `emulator.reset(t)` power-cycles it;
    `emulator.swings` is the gate timeline for physical audits.
    """

    def __init__(self, clock=None, emit=None, config: LinkConfig | None = None, n_gates: int = 2,
                 watchdog_ms: int = 500, seed: int = 0):
        clock = clock or RealClock()
        self.emulator = FirmwareEmulator(n_gates=n_gates, watchdog_ms=watchdog_ms, seed=seed,
                                         t0=clock.now())
        self.link_port = EmulatorLink(self.emulator, clock.now)
        super().__init__(lambda: self.link_port, clock=clock, emit=emit, config=config)

    def poll(self) -> None:
        self.link_port.advance()
        super().poll()
