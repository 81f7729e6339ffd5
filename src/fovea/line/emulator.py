"""A Python emulator of `firmware/sorter/sorter.ino`, driven by explicit times.

It keeps the firmware's state machine (boot -> SAFE, ARM, heartbeat watchdog latching SAFE, a
fixed-size schedule, an id ring for idempotent FIRE) and a gate timeline in host seconds, so a
simulated run can be audited physically: an object is diverted when its centre passes a gate
that is fully open. It is reachable in-process (`EmulatorLink`, used by `SimulatedActuator`),
over TCP (`EmulatorServer`, pyserial `socket://`) or on a pty (`run_pty`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fovea.errors import ProtocolError
from fovea.line.protocol import MAX_LINE, parse_line

FW_VERSION = "1.0"


@dataclass
class GateSwing:
    """One opening of a gate: commanded open at t_open, released at t_close (host seconds)."""

    gate: int
    t_open: float
    t_close: float
    cmd_ids: list[int]


@dataclass
class _Fire:
    cmd_id: int
    gate: int
    due: float        # host seconds; inf for encoder-scheduled commands
    hold: float
    enc: int | None = None


class FirmwareEmulator:
    """The sorter firmware's logic; every entry point takes the current time `t` in seconds."""

    def __init__(self, n_gates: int = 2, watchdog_ms: int = 500, queue_size: int = 16, ring_size: int = 32,
                 seed: int = 0, t0: float = 0.0):
        self.n_gates, self.watchdog_s, self.queue_size, self.ring_size = n_gates, watchdog_ms / 1000, queue_size, ring_size
        self.encoder_count = 0
        self._rng = np.random.default_rng(seed)
        self.out: list[tuple[float, str]] = []
        self.swings: list[GateSwing] = []
        self.n_resets = 0
        self._rx = b""
        self._overflow = False
        self._boot(t0)

    # ------------------------------------------------------------------ state
    def _boot(self, t: float) -> None:
        self.boot_t = t
        self.boot_id = f"{int(self._rng.integers(0, 0xFFFF)):04x}"
        self.state, self.reason = "SAFE", "BOOT"
        self.queue: list[_Fire] = []
        self.ring: OrderedDict[int, str] = OrderedDict()   # id -> last status line
        self.open_until: dict[int, float] = {}             # gate -> release time of the open swing
        self._open_swing: dict[int, GateSwing] = {}
        self.last_rx = t
        self.now = t
        self._emit(t, self._ready())

    def reset(self, t: float) -> None:
        """Power-cycle / DTR reset: gates drop closed, schedule and id ring are lost, new boot id."""
        self.advance(t)
        for g in list(self._open_swing):       # power loss: gates drop closed, nothing is reported
            sw = self._open_swing.pop(g)
            sw.t_close = t
            self.swings.append(sw)
        self.open_until.clear()
        self.n_resets += 1
        self._rx = b""
        self._overflow = False
        self._boot(t)

    def _ms(self, t: float) -> int:
        return int(round((t - self.boot_t) * 1000))

    def _ready(self) -> str:
        return f"READY fw={FW_VERSION} gates={self.n_gates} boot={self.boot_id} state={self.state}"

    def _emit(self, t: float, line: str) -> None:
        self.out.append((t, line))

    def read_lines(self) -> list[str]:
        """Lines the MCU has written so far (and forget them)."""
        lines = [s for _, s in self.out]
        self.out.clear()
        return lines

    # ------------------------------------------------------------------ time
    def _next_event(self) -> tuple[float, str] | None:
        cands = []
        if self.queue:
            cands.append((min(f.due for f in self.queue), "fire"))
        if self.open_until:
            cands.append((min(self.open_until.values()), "close"))
        if self.state == "ARMED":
            cands.append((round(self.last_rx + self.watchdog_s, 9), "watchdog"))
        return min(cands) if cands else None

    def advance(self, t: float) -> None:
        """Run every timed event (fires, gate releases, watchdog) due up to time t, in order."""
        while True:
            ev = self._next_event()
            if ev is None or ev[0] > t:
                break
            te, kind = ev
            self.now = te
            if kind == "fire":
                f = min(self.queue, key=lambda f: f.due)
                self.queue.remove(f)
                self._open(f, te)
            elif kind == "close":
                g = min(self.open_until, key=self.open_until.get)
                self._close(g, te)
            else:
                self._latch_safe(te, "HB_TIMEOUT")
        self.now = max(self.now, t)

    def _open(self, f: _Fire, t: float) -> None:
        if f.gate in self._open_swing:
            self.open_until[f.gate] = max(self.open_until[f.gate], round(t + f.hold, 9))
            self._open_swing[f.gate].cmd_ids.append(f.cmd_id)
        else:
            self._open_swing[f.gate] = GateSwing(f.gate, t, float("nan"), [f.cmd_id])
            self.open_until[f.gate] = round(t + f.hold, 9)

    def _close(self, gate: int, t: float, completed: bool = True) -> None:
        """Release a gate; DONE for its commands when the hold ran its course, NAK ABORTED if cut."""
        sw = self._open_swing.pop(gate)
        self.open_until.pop(gate, None)
        sw.t_close = t
        self.swings.append(sw)
        for cid in sw.cmd_ids:
            self._status(cid, f"DONE {cid} t={self._ms(t)}" if completed else f"NAK {cid} ABORTED")
            self._emit(t, self.ring[cid])

    def _latch_safe(self, t: float, reason: str) -> None:
        for f in self.queue:
            self._status(f.cmd_id, f"NAK {f.cmd_id} SAFE")
            self._emit(t, self.ring[f.cmd_id])
        self.queue.clear()
        for g in list(self._open_swing):
            self._close(g, t, completed=False)
        self.state, self.reason = "SAFE", reason
        self._emit(t, f"STATE SAFE reason={reason}")

    def _status(self, cmd_id: int, line: str) -> None:
        self.ring[cmd_id] = line
        self.ring.move_to_end(cmd_id)
        while len(self.ring) > self.ring_size:
            self.ring.popitem(last=False)

    def set_encoder(self, count: int, t: float) -> None:
        """Belt encoder pulses counted up to `count` at time t: encoder-scheduled fires due now open."""
        self.advance(t)
        self.encoder_count = count
        for f in sorted([f for f in self.queue if f.enc is not None and f.enc <= count], key=lambda f: f.enc):
            self.queue.remove(f)
            self._open(f, t)

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes, t: float) -> None:
        """Bytes from the host arriving at time t."""
        self.advance(t)
        self._rx += data
        while b"\n" in self._rx:
            raw, self._rx = self._rx.split(b"\n", 1)
            if self._overflow:                       # the firmware drops an over-long line whole
                self._overflow = False
                self._emit(t, "ERR TOO_LONG")
            elif raw.strip():
                self.handle(raw, t)
        if len(self._rx) > MAX_LINE:
            self._rx = b""
            self._overflow = True

    def handle(self, raw: bytes | str, t: float) -> None:
        """Execute one host line at time t."""
        try:
            msg = parse_line(raw)
        except ProtocolError:
            self._emit(t, "ERR TOO_LONG" if len(raw) > MAX_LINE else "ERR BAD_CMD")
            return
        self.last_rx = t
        v = msg.verb
        if v == "HELLO":
            self._emit(t, self._ready())
        elif v == "ARM":
            self.state, self.reason = "ARMED", "ARM"
            self._emit(t, "STATE ARMED reason=ARM")
        elif v in ("SAFE", "DISARM"):
            self._latch_safe(t, "HOST")
        elif v == "PING":
            seq = msg.args[0] if msg.args else "0"
            self._emit(t, f"PONG {seq} q={len(self.queue)} state={self.state} t={self._ms(t)}")
        elif v == "FIRE":
            self._fire(msg, t)
        else:
            self._emit(t, "ERR BAD_CMD")

    def _fire(self, msg, t: float) -> None:
        try:
            cmd_id = msg.int_arg(0)
        except ProtocolError:
            self._emit(t, "ERR BAD_CMD")
            return
        if cmd_id in self.ring:                      # idempotent: repeat the status, never re-fire
            self._emit(t, self.ring[cmd_id])
            return
        try:
            gate, hold = msg.int_kv("gate"), msg.int_kv("hold")
            at = msg.int_kv("at") if "at" in msg.kv else None
            enc = msg.int_kv("enc") if "enc" in msg.kv else None
        except ProtocolError:
            self._emit(t, f"NAK {cmd_id} BAD_ARG")
            return
        bad = not (1 <= gate <= self.n_gates) or not (0 < hold <= 5000) or (at is None) == (enc is None)
        bad = bad or (at is not None and at > 60000)
        if bad:
            self._status(cmd_id, f"NAK {cmd_id} BAD_ARG")
        elif self.state != "ARMED":
            self._status(cmd_id, f"NAK {cmd_id} SAFE")
        elif (at is not None and at < 0) or (enc is not None and enc <= self.encoder_count):
            self._status(cmd_id, f"NAK {cmd_id} LATE")
        elif len(self.queue) >= self.queue_size:
            self._status(cmd_id, f"NAK {cmd_id} QUEUE_FULL")
        else:
            if at is not None:
                due = round(t + at / 1000, 9)
                self._status(cmd_id, f"ACK {cmd_id} due={self._ms(due)}")
            else:
                due = float("inf")
                self._status(cmd_id, f"ACK {cmd_id} due_enc={enc}")
            self.queue.append(_Fire(cmd_id, gate, due, hold / 1000, enc))
        self._emit(t, self.ring[cmd_id])


# ---------------------------------------------------------------------- transports
class EmulatorLink:
    """A pyserial-like in-process port onto an emulator, timed by `now()`; can be cut and restored."""

    def __init__(self, emulator: FirmwareEmulator, now: Callable[[], float]):
        self.emulator, self.now = emulator, now
        self.down = False
        self.is_open = False
        self._lines: list[str] = []
        self.bytes_written: list[bytes] = []

    def open(self) -> None:
        import serial

        if self.down:
            raise serial.SerialException("emulated link is down")
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def write(self, data: bytes) -> int:
        import serial

        if self.down or not self.is_open:
            raise serial.SerialException("emulated link is down")
        self.bytes_written.append(data)
        self.emulator.feed(data, self.now())
        return len(data)

    @property
    def in_waiting(self) -> int:
        """Bytes the MCU has written and the host has not read (pyserial's name)."""
        import serial

        if self.down or not self.is_open:
            raise serial.SerialException("emulated link is down")
        if not self._lines:
            self.emulator.advance(self.now())
            self._lines = self.emulator.read_lines()
        return sum(len(s) + 1 for s in self._lines)

    def readline(self) -> bytes:
        import serial

        if self.down or not self.is_open:
            raise serial.SerialException("emulated link is down")
        if not self._lines:
            self.emulator.advance(self.now())
            self._lines = self.emulator.read_lines()
        return (self._lines.pop(0) + "\n").encode() if self._lines else b""

    def set_down(self, down: bool) -> None:
        """Cut (True) or restore (False) the cable; bytes the MCU writes while cut are lost."""
        if down:
            self.emulator.advance(self.now())
            self.emulator.read_lines()
            self._lines.clear()
        self.down = down
        if down:
            self.is_open = False

    def advance(self) -> None:
        """Let MCU time pass; while the cable is cut its output is lost."""
        self.emulator.advance(self.now())
        if self.down:
            self.emulator.read_lines()


class EmulatorServer:
    """Serve the emulator on 127.0.0.1 (pyserial `socket://127.0.0.1:PORT`), real time.

    `drop()` closes the current connection (cable pulled); a new connection is accepted after
    that. `reset()` power-cycles the emulated MCU.
    """

    def __init__(self, emulator: FirmwareEmulator | None = None, port: int = 0):
        self.t0 = time.monotonic()
        self.emulator = emulator or FirmwareEmulator(t0=0.0)
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._conn: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="emulator-server", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._conn is None:
                try:
                    self._conn, _ = self.sock.accept()
                    self._conn.settimeout(0.005)
                except OSError:
                    with self.lock:
                        self.emulator.advance(self.now())
                        self.emulator.read_lines()       # nobody listening: bytes are lost
                    continue
            conn = self._conn
            try:
                data = conn.recv(4096)
                if data == b"":
                    raise ConnectionResetError
            except socket.timeout:
                data = None
            except OSError:
                self._drop_conn()
                continue
            with self.lock:
                if data:
                    self.emulator.feed(data, self.now())
                self.emulator.advance(self.now())
                lines = self.emulator.read_lines()
            try:
                for ln in lines:
                    conn.sendall((ln + "\n").encode())
            except OSError:
                self._drop_conn()

    def _drop_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        self._conn = None

    def drop(self) -> None:
        """Pull the cable: close the live connection."""
        self._drop_conn()

    def reset(self) -> None:
        with self.lock:
            self.emulator.reset(self.now())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self._drop_conn()
        self.sock.close()


def run_pty(emulator: FirmwareEmulator | None = None, stop: threading.Event | None = None) -> str:
    """Serve the emulator on a new pseudo-terminal in a daemon thread; returns the slave path."""
    import select
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    emu = emulator or FirmwareEmulator(t0=0.0)
    t0 = time.monotonic()
    stop = stop or threading.Event()

    def loop():
        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.005)
            now = time.monotonic() - t0
            if r:
                try:
                    emu.feed(os.read(master, 4096), now)
                except OSError:
                    break
            emu.advance(now)
            for ln in emu.read_lines():
                os.write(master, (ln + "\n").encode())

    threading.Thread(target=loop, name="emulator-pty", daemon=True).start()
    return path


# ---------------------------------------------------------------------- shared test table
class EmulatorCaseDriver:
    """Runs protocol-case steps on the emulator: each action returns the MCU lines it produced."""

    def __init__(self, seed: int = 0):
        self.emu = FirmwareEmulator(seed=seed, t0=0.0)
        self.t = 0.0

    def boot_lines(self) -> list[str]:
        return self.emu.read_lines()

    def at(self, ms: int) -> list[str]:
        self.t = ms / 1000
        self.emu.advance(self.t)
        return self.emu.read_lines()

    def send(self, line: str) -> list[str]:
        self.emu.feed((line + "\n").encode(), self.t)
        return self.emu.read_lines()

    def reset(self) -> list[str]:
        self.emu.reset(self.t)
        return self.emu.read_lines()

    def encoder(self, count: int) -> list[str]:
        self.emu.set_encoder(count, self.t)
        return self.emu.read_lines()


def check_protocol_case(case: dict, driver) -> None:
    """Play one case of docs/protocol_cases.json on a driver; raises AssertionError on a mismatch."""
    import re

    pending = list(driver.boot_lines())
    for i, step in enumerate(case["steps"]):
        kind, arg = step[0], (step[1] if len(step) > 1 else None)
        where = f"case {case['name']!r} step {i} {step}"
        if kind == "expect":
            if not pending:
                raise AssertionError(f"{where}: expected a line, the MCU said nothing")
            got = pending.pop(0)
            if not re.fullmatch(arg, got):
                raise AssertionError(f"{where}: got {got!r}")
        elif kind == "expect_none":
            if pending:
                raise AssertionError(f"{where}: unexpected MCU lines {pending}")
        elif kind == "at":
            pending += driver.at(int(arg))
        elif kind == "send":
            pending += driver.send(arg)
        elif kind == "reset":
            pending += driver.reset()
        elif kind == "encoder":
            pending += driver.encoder(int(arg))
        else:
            raise AssertionError(f"{where}: unknown step kind {kind!r}")
