"""A Python emulator of `firmware/sorter/sorter.ino`, driven by explicit times.

The state machine itself (boot -> SAFE, ARM, heartbeat watchdog latching SAFE, a fixed-size
schedule, the id ring that is also the fate journal, a gate timeline in host seconds for
physical audits) is `fovea.line.mcu.FirmwareEmulator`. This module makes it reachable
in-process (`EmulatorLink`, used by `SimulatedActuator`), over TCP (`EmulatorServer`, pyserial
`socket://`) or on a pty (`run_pty`), and plays the shared protocol table on it.

Fault hooks (for the fuzzer and the link tests; none of them needs editing this file):

* MCU reset at any time: `FirmwareEmulator.reset(t, power_loss=False)` (a DTR/watchdog reset:
  gates drop closed, the schedule is lost, the fate journal survives as it does in the
  firmware's `.noinit` RAM); `power_loss=True` loses the journal too. Over TCP:
  `EmulatorServer.reset(power_loss=False)`.
* Cable cut / flapping: `EmulatorLink.set_down(bool)` and `EmulatorServer.set_down(bool)` (while
  down nothing gets through and lines in flight are lost; the server accepts and at once closes
  connections, so the host's open "succeeds" and its first read fails). Flapping = a schedule of
  `set_down` calls (on a `SimClock`: `clock.call_at`).
* Individual lines, either direction (`"tx"` host -> MCU, `"rx"` MCU -> host), on both
  `EmulatorLink` and `EmulatorServer` through their `faults` (`LineFaults`):
  `faults.drop_next(direction, n=1, verb=None)`, `faults.delay_next(direction, delay_s, n=1,
  verb=None)`, or `faults.line_filter = fn(direction, line, t) -> None | "drop" | delay_s` for
  any rule. A link is a FIFO: a delayed line holds back the lines behind it. `faults.log`
  lists what was dropped or delayed. On `EmulatorLink` a delayed host line reaches the emulator
  at its due time on the next port call (the actuator polls every tick).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable

from fovea.errors import ProtocolError
from fovea.line.mcu import FW_VERSION, FirmwareEmulator, GateSwing, JournalEntry

__all__ = ["FW_VERSION", "FirmwareEmulator", "GateSwing", "JournalEntry", "LineFaults", "EmulatorLink",
           "EmulatorServer", "run_pty", "EmulatorCaseDriver", "check_protocol_case"]


# ---------------------------------------------------------------------- transports
class LineFaults:
    """Lost and delayed lines on one link, per direction ("tx" host -> MCU, "rx" MCU -> host).

    Rules apply in order: `line_filter(direction, line, t)` first (returns None to pass, "drop",
    or a delay in seconds), then the queued `drop_next` / `delay_next` rules (each optionally
    restricted to one verb, e.g. "DONE"). Lines keep their order: a delayed line holds back
    every later line of its direction. `log` records (t, direction, line, "drop" | delay_s).
    """

    DIRECTIONS = ("tx", "rx")

    def __init__(self):
        self.line_filter: Callable[[str, str, float], None | str | float] | None = None
        self._rules: list[list] = []                       # [direction, verb, n_left, action, delay_s]
        self._held: dict[str, list[tuple[float, str]]] = {"tx": [], "rx": []}
        self.log: list[tuple[float, str, str, str | float]] = []

    def _check(self, direction: str, n: int, delay_s: float = 0.0) -> None:
        if direction not in self.DIRECTIONS or n < 1 or delay_s < 0:
            raise ProtocolError(f"line fault: direction {direction!r} must be 'tx' or 'rx', n={n} >= 1, "
                                f"delay_s={delay_s} >= 0")

    def drop_next(self, direction: str, n: int = 1, verb: str | None = None) -> None:
        """Lose the next n lines going `direction` (only lines of `verb`, if given)."""
        self._check(direction, n)
        self._rules.append([direction, verb and verb.upper(), n, "drop", 0.0])

    def delay_next(self, direction: str, delay_s: float, n: int = 1, verb: str | None = None) -> None:
        """Hold the next n lines going `direction` (of `verb`, if given) back by delay_s seconds."""
        self._check(direction, n, delay_s)
        self._rules.append([direction, verb and verb.upper(), n, "delay", float(delay_s)])

    @property
    def active(self) -> bool:
        return bool(self.line_filter or self._rules or self._held["tx"] or self._held["rx"])

    def _verdict(self, direction: str, line: str, t: float) -> str | float | None:
        if self.line_filter is not None:
            v = self.line_filter(direction, line, t)
            if v is not None:
                return v
        verb = line.split(" ", 1)[0].upper()
        for r in self._rules:
            if r[0] == direction and (r[1] is None or r[1] == verb):
                r[2] -= 1
                if r[2] <= 0:
                    self._rules.remove(r)
                return "drop" if r[3] == "drop" else r[4]
        return None

    def push(self, direction: str, line: str, t: float) -> None:
        """A line enters the link at time t."""
        v = self._verdict(direction, line, t)
        if v == "drop":
            self.log.append((t, direction, line, "drop"))
            return
        delay = float(v or 0.0)
        if delay:
            self.log.append((t, direction, line, delay))
        q = self._held[direction]
        q.append((max([t + delay] + [d for d, _ in q[-1:]]), line))

    def pop_due(self, direction: str, t: float) -> list[tuple[float, str]]:
        """Lines that leave the link by time t, with the time each arrives."""
        q = self._held[direction]
        n = 0
        while n < len(q) and q[n][0] <= t:
            n += 1
        out, q[:] = q[:n], q[n:]
        return out

    def cut(self, t: float) -> None:
        """The cable is cut: every line in flight is lost."""
        for d in self.DIRECTIONS:
            self.log.extend((t, d, line, "drop") for _, line in self._held[d])
            self._held[d].clear()


class EmulatorLink:
    """A pyserial-like in-process port onto an emulator, timed by `now()`; can be cut and restored.

    `faults` (a `LineFaults`) loses or delays individual lines in either direction.
    """

    def __init__(self, emulator: FirmwareEmulator, now: Callable[[], float]):
        self.emulator, self.now = emulator, now
        self.down = False
        self.is_open = False
        self._lines: list[str] = []
        self.bytes_written: list[bytes] = []
        self.faults = LineFaults()

    def open(self) -> None:
        import serial

        if self.down:
            raise serial.SerialException("emulated link is down")
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def _check_up(self) -> None:
        import serial

        if self.down or not self.is_open:
            raise serial.SerialException("emulated link is down")

    def _service(self, now: float) -> None:
        """Deliver host lines due by now (at their due time), run the MCU to now, collect its output."""
        for due, line in self.faults.pop_due("tx", now):
            self.emulator.feed((line + "\n").encode("ascii", "replace"), max(due, self.emulator.now))
        self.emulator.advance(now)
        for t, line in self.emulator.take_output():
            if self.down:
                continue                                   # nobody hears the MCU while the cable is cut
            self.faults.push("rx", line, t)
        if not self.down:
            self._lines.extend(line for _, line in self.faults.pop_due("rx", now))

    def write(self, data: bytes) -> int:
        self._check_up()
        self.bytes_written.append(data)
        now = self.now()
        if not self.faults.active:
            self.emulator.feed(data, now)
            return len(data)
        self._service(now)
        for raw in data.split(b"\n"):
            if raw.strip():
                self.faults.push("tx", raw.decode("ascii", "replace").strip(), now)
        self._service(now)
        return len(data)

    @property
    def in_waiting(self) -> int:
        """Bytes the MCU has written and the host has not read (pyserial's name)."""
        self._check_up()
        if not self._lines:
            self._service(self.now())
        return sum(len(s) + 1 for s in self._lines)

    def readline(self) -> bytes:
        self._check_up()
        if not self._lines:
            self._service(self.now())
        return (self._lines.pop(0) + "\n").encode() if self._lines else b""

    def set_down(self, down: bool) -> None:
        """Cut (True) or restore (False) the cable; bytes the MCU writes while cut are lost."""
        if down:
            self._service(self.now())
            self.faults.cut(self.now())
            self._lines.clear()
        self.down = down
        if down:
            self.is_open = False

    def advance(self) -> None:
        """Let MCU time pass; while the cable is cut its output is lost."""
        self._service(self.now())


class EmulatorServer:
    """Serve the emulator on 127.0.0.1 (pyserial `socket://127.0.0.1:PORT`), real time.

    `drop()` closes the current connection (cable pulled); a new connection is accepted after
    that. `set_down(True)` keeps the cable pulled (connections are accepted and closed at once)
    until `set_down(False)`. `reset(power_loss=False)` resets the emulated MCU. `faults` (a
    `LineFaults`) loses or delays individual lines in either direction.
    """

    def __init__(self, emulator: FirmwareEmulator | None = None, port: int = 0):
        self.t0 = time.monotonic()
        self.emulator = emulator or FirmwareEmulator(t0=0.0)
        self.lock = threading.Lock()
        self.faults = LineFaults()
        self.down = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1)
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._conn: socket.socket | None = None
        self._rxbuf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="emulator-server", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run_mcu(self, data: bytes | None) -> list[str]:
        """Feed host bytes through the line faults, run the MCU to now; lines due to the host."""
        with self.lock:
            now = self.now()
            if data:
                if not self.faults.active:
                    self.emulator.feed(data, now)
                else:
                    self._rxbuf += data
                    while b"\n" in self._rxbuf:
                        raw, self._rxbuf = self._rxbuf.split(b"\n", 1)
                        if raw.strip():
                            self.faults.push("tx", raw.decode("ascii", "replace").strip(), now)
            for _, line in self.faults.pop_due("tx", now):
                self.emulator.feed((line + "\n").encode("ascii", "replace"), now)
            self.emulator.advance(now)
            out = self.emulator.take_output()
            if self._conn is None or self.down:
                return []                                    # nobody listening: bytes are lost
            for t, line in out:
                self.faults.push("rx", line, t)
            return [line for _, line in self.faults.pop_due("rx", now)]

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._conn is None:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    self._run_mcu(None)
                    continue
                if self.down:                               # cable pulled: the far end hangs up at once
                    conn.close()
                    self._run_mcu(None)
                    continue
                conn.settimeout(0.005)
                self._rxbuf = b""
                self._conn = conn
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
            lines = self._run_mcu(data)
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
        with self.lock:
            self.faults.cut(self.now())
            self._rxbuf = b""

    def drop(self) -> None:
        """Pull the cable: close the live connection."""
        self._drop_conn()

    def set_down(self, down: bool) -> None:
        """Keep the cable pulled (True) or plug it back (False)."""
        self.down = down
        if down:
            self._drop_conn()

    def reset(self, power_loss: bool = False) -> None:
        """Reset the MCU now (power_loss=True: the fate journal is lost as well)."""
        with self.lock:
            self.emulator.reset(self.now(), power_loss=power_loss)

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

    def power_cycle(self) -> list[str]:
        self.emu.reset(self.t, power_loss=True)
        return self.emu.read_lines()

    def encoder(self, count: int) -> list[str]:
        self.emu.set_encoder(count, self.t)
        return self.emu.read_lines()

    def jump(self, ms: int) -> list[str]:
        return self.at(ms)


def check_protocol_case(case: dict, driver) -> None:
    """Play one case of docs/protocol_cases.json on a driver; raises AssertionError on a mismatch."""
    import re

    pending = list(driver.boot_lines())
    boot = "????"
    for i, step in enumerate(case["steps"]):
        kind, arg = step[0], (step[1] if len(step) > 1 else None)
        where = f"case {case['name']!r} step {i} {step}"
        if kind == "expect":
            if not pending:
                raise AssertionError(f"{where}: expected a line, the MCU said nothing")
            got = pending.pop(0)
            if not re.fullmatch(arg, got):
                raise AssertionError(f"{where}: got {got!r}")
            m = re.search(r"^READY .*boot=(\S+)", got)
            boot = m.group(1) if m else boot
        elif kind == "expect_none":
            if pending:
                raise AssertionError(f"{where}: unexpected MCU lines {pending}")
        elif kind == "at":
            pending += driver.at(int(arg))
        elif kind == "send":
            pending += driver.send(arg.replace("{boot}", boot))
        elif kind == "reset":
            pending += driver.reset()
        elif kind == "power_cycle":
            pending += driver.power_cycle()
        elif kind == "encoder":
            pending += driver.encoder(int(arg))
        elif kind == "jump":
            pending += driver.jump(int(arg))
        else:
            raise AssertionError(f"{where}: unknown step kind {kind!r}")
