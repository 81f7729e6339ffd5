"""Actuators that speak the sorter protocol: `SerialActuator` (pyserial) and `SimulatedActuator`.

Both are the same `ProtocolActuator` client over a different port: the simulated one talks to
the in-process firmware emulator, so simulated runs put the same bytes on the "wire" as a real
line. The client opens its port once, sets a write timeout, waits for READY (never sleeps a
fixed boot delay), re-arms explicitly, sends PING heartbeats, resends unacknowledged commands by
id (idempotent on the MCU), reconnects with exponential backoff, and reports every command's
fate exactly once: `done` (the gate fired) or `lost` with a reason (NAK, MCU reset, link).
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
from fovea.line.emulator import EmulatorLink, FirmwareEmulator
from fovea.line.protocol import fire_line, parse_line


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
    """A command's fate (kind 'ack' | 'done' | 'lost') reported back to the decision stage."""

    kind: str
    cmd_id: int
    record: str
    t: float
    reason: str = ""


@dataclass
class _Pending:
    cmd: FireCommand
    state: str = "queued"      # queued -> sent -> acked
    t_sent: float = 0.0
    sends: int = 0
    acked: bool = False


@dataclass
class LinkConfig:
    """Timing of the host side of the link (seconds)."""

    heartbeat_s: float = 0.1
    heartbeat_misses: int = 4
    ack_timeout_s: float = 0.05
    max_resends: int = 3
    ready_timeout_s: float = 2.0
    hello_every_s: float = 0.5
    backoff_s: tuple[float, float] = (0.05, 1.0)
    link_p99_floor_s: float = 0.01
    auto_arm: bool = True


class ProtocolActuator:
    """Host side of the sorter protocol over any pyserial-like port (write, readline, open, close)."""

    def __init__(self, port_factory: Callable[[], Any], clock=None, emit: Callable[..., Any] | None = None,
                 config: LinkConfig | None = None):
        self.port_factory = port_factory
        self.clock = clock or RealClock()
        self._emit = emit or (lambda t, type, **kw: None)
        self.cfg = config or LinkConfig()
        self.port = None
        self.link = "down"           # down -> handshake -> ready (armed)
        self.boot_id: str | None = None
        self.mcu_state = "UNKNOWN"
        self.events: queue.Queue[ActuatorEvent] = queue.Queue()
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
        self.n_reconnects = 0

    # ------------------------------------------------------------------ public
    @property
    def ready(self) -> bool:
        return self.link == "ready" and self.mcu_state == "ARMED"

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

    def poll(self) -> None:
        """One round of link work: (re)connect, read replies, heartbeat, send, time out."""
        with self._lock:
            now = self.clock.now()
            if self.port is None or self.link == "down":
                self._try_connect(now)
            if self.port is not None:
                self._read(now)
            if self.port is not None:
                self._heartbeat(now)
            if self.ready:
                self._send_outbox(now)
                self._resend_unacked(now)
            self._expire_outbox(now)

    def run_forever(self, stop: threading.Event) -> None:
        """Thread body for real-time use: poll until `stop` is set; a submit wakes it at once."""
        while not stop.is_set():
            self.poll()
            self._wake.wait(0.002)
            self._wake.clear()

    def close(self) -> None:
        """Give up on everything still in flight (reported as lost) and close the port."""
        with self._lock:
            now = self.clock.now()
            for p in list(self._pending.values()):
                self._lose(p.cmd, now, "unresolved_at_shutdown")
            while self._outbox:
                self._lose(self._outbox.popleft(), now, "unsent_at_shutdown")
            if self.port is not None:
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
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self.cfg.backoff_s[1])
        self._emit(now, "fault", kind="link_down", detail=why, retry_in_s=round(self._next_attempt - now, 3))

    def _link_lost(self, now: float, why: str) -> None:
        self._close_port()
        self.link = "down"
        self.mcu_state = "UNKNOWN"
        self.n_reconnects += 1
        for p in self._pending.values():      # in doubt: resent by id after the reconnect
            if p.state == "queued":
                continue
            p.state = "sent"
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
            except ProtocolError as exc:
                self._emit(now, "fault", kind="protocol", detail=str(exc))
                continue
            self._handle(msg, self.clock.now())
            if self.port is None:
                return

    def _handle(self, msg, now: float) -> None:
        v = msg.verb
        if v == "READY":
            boot = msg.kv.get("boot")
            if self.boot_id is not None and boot != self.boot_id:
                self._emit(now, "fault", kind="mcu_reset", detail=f"boot {self.boot_id} -> {boot}")
                for p in list(self._pending.values()):
                    self._lose(p.cmd, now, "mcu_reset")
            self.boot_id = boot
            self.mcu_state = msg.kv.get("state", "SAFE")
            self.link = "ready"
            self._backoff = self.cfg.backoff_s[0]
            self._last_pong = now
            if self.mcu_state != "ARMED" and self.cfg.auto_arm:
                self._arm(now)
            for p in self._pending.values():           # resolve in-doubt commands by id
                if p.state == "sent":
                    p.t_sent = -1e9
        elif v == "STATE":
            state = msg.args[0] if msg.args else "SAFE"
            if state == "SAFE" and self.mcu_state == "ARMED":
                self._emit(now, "fault", kind="mcu_safe", detail=msg.kv.get("reason", ""))
            self.mcu_state = state
            if state == "ARMED":
                self._t_arm = -1e9
            if state == "SAFE" and self.cfg.auto_arm and self.link == "ready":
                self._arm(now)
        elif v == "PONG":
            seq = msg.int_arg(0)
            t0 = self._pings.pop(seq, None)
            if t0 is not None:
                self._rtts.append(now - t0)
                if len(self._rtts) >= 5 and len(self._rtts) % 5 == 0:   # refresh the p99 now and then
                    self._rtt_p99 = float(np.percentile(np.fromiter(self._rtts, float), 99))
            self._last_pong = now
            self.mcu_state = msg.kv.get("state", self.mcu_state)
        elif v in ("ACK", "NAK", "DONE"):
            cmd_id = msg.int_arg(0)
            p = self._pending.get(cmd_id)
            if p is None:
                return
            if v == "ACK":
                p.state = "acked"
                if not p.acked:
                    p.acked = True
                    self._emit(now, "ack", cmd=cmd_id, record=p.cmd.record)
                    self.events.put(ActuatorEvent("ack", cmd_id, p.cmd.record, now))
            elif v == "DONE":
                del self._pending[cmd_id]
                self._emit(now, "done", cmd=cmd_id, record=p.cmd.record, mcu_t_ms=msg.kv.get("t"))
                self.events.put(ActuatorEvent("done", cmd_id, p.cmd.record, now))
            else:
                reason = msg.args[1] if len(msg.args) > 1 else "NAK"
                self._emit(now, "nak", cmd=cmd_id, record=p.cmd.record, reason=reason)
                self._lose(p.cmd, now, f"nak_{reason.lower()}")
        elif v == "ERR":
            self._emit(now, "fault", kind="protocol", detail=" ".join(msg.args))

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

    def _send_outbox(self, now: float) -> None:
        while self._outbox and self.port is not None:
            cmd = self._outbox.popleft()
            at_ms = int(round((cmd.t_open - now) * 1000))
            if at_ms < 0:
                self._lose(cmd, now, "late_at_send")
                continue
            p = _Pending(cmd)
            self._pending[cmd.cmd_id] = p
            self._send(p, now, at_ms)
            self._emit(now, "command", cmd=cmd.cmd_id, record=cmd.record, gate=cmd.gate, at_ms=at_ms,
                       hold_ms=int(round(cmd.hold_s * 1000)), t_decision=cmd.t_decision, t_capture=cmd.t_capture)

    def _send(self, p: _Pending, now: float, at_ms: int | None = None) -> None:
        cmd = p.cmd
        at_ms = int(round((cmd.t_open - now) * 1000)) if at_ms is None else at_ms
        line = fire_line(cmd.cmd_id, cmd.gate, int(round(cmd.hold_s * 1000)), at_ms=at_ms)
        p.state = "sent" if p.state != "acked" else p.state
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
                self._lose(cmd, now, "link_not_ready" if not self.ready else "late_at_send")
            else:
                keep.append(cmd)
        self._outbox = keep

    def _lose(self, cmd: FireCommand, now: float, reason: str) -> None:
        self._pending.pop(cmd.cmd_id, None)
        self._emit(now, "fault", kind="command_lost", cmd=cmd.cmd_id, record=cmd.record, reason=reason)
        self.events.put(ActuatorEvent("lost", cmd.cmd_id, cmd.record, now, reason))


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
