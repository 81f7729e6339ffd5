"""The sorter firmware's state machine in Python (`firmware/sorter/sorter.ino`, protocol v1.2).

`FirmwareEmulator` is driven by explicit times (host seconds): boot -> SAFE, ARM, a heartbeat
watchdog latching SAFE, a fixed-size schedule, and an id ring that is also the fate journal:
one slot per command id with its status, gate, due time and the gate's actual open interval.
The journal survives a reset that keeps RAM (DTR, watchdog, brown-out: the firmware keeps it in
`.noinit` RAM); at the reboot a queued command becomes `NAK <id> RESET` (never started) and one
whose swing was open becomes `NAK <id> ABORTED from= to=` (cut at the reset). A power loss clears
it: `STATUS <id>` then answers `UNKNOWN <id>`. `CANCEL <id>` (v1.2) withdraws a queued command
(`NAK <id> CANCELLED`: its gate never opens for it); a swing already open is not withdrawn
(`CANCEL <id> TOO_LATE`, its DONE / NAK ABORTED follows as usual). The gate timeline (`swings`)
is in host seconds so that a simulated run can be audited physically. Transports live in
`fovea.line.emulator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.errors import ProtocolError
from fovea.line.protocol import MAX_LINE, parse_line

FW_VERSION = "1.2"
WRAP_MS = 2 ** 32                 # millis() is an unsigned 32-bit counter: it wraps after 49.7 days
ACTIVE = ("ACK", "OPEN")          # statuses of a command that has not ended yet (never evicted)


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


@dataclass
class JournalEntry:
    """A command's last status. Times are host seconds; from/to are the gate's open interval."""

    cmd_id: int
    status: str                 # ACK | OPEN | DONE | NAK
    reason: str = ""            # NAK reason
    gate: int = 0
    due: float = 0.0            # when it fires (encoder commands: when the count was reached)
    enc: int | None = None
    t_from: float = 0.0         # gate opened (may precede `due`: the swing was already open)
    t_to: float = 0.0           # gate released (DONE) or cut (ABORTED)
    boot_t: float = 0.0         # boot whose millis() the DONE's t= refers to


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
        self.n_latches: dict[str, int] = {}     # SAFE latches by reason (HB_TIMEOUT, HOST)
        self._rx = b""
        self._overflow = False
        self.slots: list[JournalEntry | None] = [None] * ring_size   # the fate journal (id ring)
        self.ring_next = 0
        self._boot(t0, journal_kept=False)

    # ------------------------------------------------------------------ state
    def _boot(self, t: float, journal_kept: bool) -> None:
        self.boot_t = t
        self.boot_id = f"{int(self._rng.integers(0, 0xFFFF)):04x}"
        self.state, self.reason = "SAFE", ("RESET" if journal_kept else "BOOT")
        self.latch_count = 0                    # SAFE latches of this boot (PONG / STATE SAFE latch=)
        if not journal_kept:
            self.slots = [None] * self.ring_size
            self.ring_next = 0
        self.queue: list[_Fire] = []
        self.open_until: dict[int, float] = {}             # gate -> release time of the open swing
        self._open_swing: dict[int, GateSwing] = {}
        self.last_rx = t
        self.now = t
        self._emit(t, self._ready())

    def reset(self, t: float, power_loss: bool = False) -> None:
        """Reset at time t: gates drop closed, the schedule is lost, new boot id.

        Without `power_loss` the journal survives: queued commands become NAK RESET, commands
        whose swing was open become NAK ABORTED with the interval up to t. With it, all is lost.
        """
        self.advance(t)
        for g in list(self._open_swing):       # the gates drop closed; nothing is reported now
            sw = self._open_swing.pop(g)
            sw.t_close = t
            self.swings.append(sw)
        self.open_until.clear()
        if not power_loss:
            for e in self.slots:
                if e is not None and e.status == "ACK":
                    e.status, e.reason = "NAK", "RESET"
                elif e is not None and e.status == "OPEN":
                    e.status, e.reason, e.t_to = "NAK", "ABORTED", t
        self.n_resets += 1
        self._rx = b""
        self._overflow = False
        self._boot(t, journal_kept=not power_loss)

    def _ms(self, t: float, boot_t: float | None = None) -> int:
        """millis() at host time t (on the clock of the boot that started at boot_t), wrapped as on the MCU."""
        return int(round((t - (self.boot_t if boot_t is None else boot_t)) * 1000)) % WRAP_MS

    def _ready(self) -> str:
        return f"READY fw={FW_VERSION} gates={self.n_gates} boot={self.boot_id} state={self.state} reason={self.reason}"

    def _emit(self, t: float, line: str) -> None:
        self.out.append((t, line))

    def read_lines(self) -> list[str]:
        """Lines the MCU has written so far (and forget them)."""
        return [s for _, s in self.take_output()]

    def take_output(self) -> list[tuple[float, str]]:
        """(time written, line) for every line the MCU has written so far (and forget them)."""
        out, self.out = self.out, []
        return out

    # ------------------------------------------------------------------ journal
    def find(self, cmd_id: int) -> JournalEntry | None:
        for e in self.slots:
            if e is not None and e.cmd_id == cmd_id:
                return e
        return None

    def _record(self, cmd_id: int, status: str, reason: str = "") -> JournalEntry | None:
        """A new journal slot: the oldest-inserted one that holds no active command (or None if all do)."""
        for k in range(self.ring_size):
            i = (self.ring_next + k) % self.ring_size
            e = self.slots[i]
            if e is None or e.status not in ACTIVE:
                self.slots[i] = JournalEntry(cmd_id, status, reason, boot_t=self.boot_t)
                self.ring_next = (i + 1) % self.ring_size
                return self.slots[i]
        return None

    def status_line(self, e: JournalEntry) -> str:
        """The line that reports a journal entry (also the answer to STATUS and to a resent FIRE)."""
        if e.status in ACTIVE:
            return f"ACK {e.cmd_id} due_enc={e.enc}" if e.enc is not None else \
                f"ACK {e.cmd_id} due={self._ms(e.due, e.boot_t)}"
        rel = f"from={int(round((e.t_from - e.due) * 1000))} to={int(round((e.t_to - e.due) * 1000))}"
        if e.status == "DONE":
            return f"DONE {e.cmd_id} t={self._ms(e.t_to, e.boot_t)} {rel}"
        return f"NAK {e.cmd_id} ABORTED {rel}" if e.reason == "ABORTED" else f"NAK {e.cmd_id} {e.reason}"

    # ------------------------------------------------------------------ time
    def _next_event(self) -> tuple[float, str] | None:
        cands = []
        if self.open_until:
            cands.append((min(self.open_until.values()), "close"))
        if self.queue:
            cands.append((min(f.due for f in self.queue), "fire"))
        if self.state == "ARMED":
            cands.append((round(self.last_rx + self.watchdog_s, 9), "watchdog"))
        return min(cands) if cands else None

    def advance(self, t: float) -> None:
        """Run every timed event (gate releases, fires, watchdog) due up to time t, in order."""
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
        e = self.find(f.cmd_id)
        if e is not None:
            e.status, e.due, e.t_from = "OPEN", t, self._open_swing[f.gate].t_open

    def _close(self, gate: int, t: float, completed: bool = True) -> None:
        """Release a gate; DONE for its commands when the hold ran its course, NAK ABORTED if cut."""
        sw = self._open_swing.pop(gate)
        self.open_until.pop(gate, None)
        sw.t_close = t
        self.swings.append(sw)
        for e in self.slots:
            if e is not None and e.status == "OPEN" and e.gate == gate:
                e.t_to = t
                e.status, e.reason = ("DONE", "") if completed else ("NAK", "ABORTED")
                self._emit(t, self.status_line(e))

    def _latch_safe(self, t: float, reason: str) -> None:
        for f in self.queue:
            e = self.find(f.cmd_id)
            if e is not None:
                e.status, e.reason = "NAK", "SAFE"
            self._emit(t, f"NAK {f.cmd_id} SAFE")
        self.queue.clear()
        for g in sorted(self._open_swing):
            self._close(g, t, completed=False)
        self.state, self.reason = "SAFE", reason
        self.n_latches[reason] = self.n_latches.get(reason, 0) + 1
        self.latch_count += 1
        self._emit(t, f"STATE SAFE reason={reason} latch={self.latch_count}")

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
            self._emit(t, f"PONG {seq} q={len(self.queue)} state={self.state} t={self._ms(t)} latch={self.latch_count}")
        elif v == "FIRE":
            self._fire(msg, t)
        elif v == "CANCEL":
            self._cancel(msg, t)
        elif v == "STATUS":
            cmd_id = self._cmd_id(msg, t)
            if cmd_id is None:
                return
            e = self.find(cmd_id)
            self._emit(t, self.status_line(e) if e is not None else f"UNKNOWN {cmd_id}")
        else:
            self._emit(t, "ERR BAD_CMD")

    def _cmd_id(self, msg, t: float) -> int | None:
        """The command id a STATUS/FIRE/CANCEL line starts with; None (and ERR BAD_CMD sent) if it has none."""
        try:
            return msg.int_arg(0)
        except ProtocolError:
            self._emit(t, "ERR BAD_CMD")
            return None

    def _fire(self, msg, t: float) -> None:
        cmd_id = self._cmd_id(msg, t)
        if cmd_id is None:
            return
        e = self.find(cmd_id)
        if e is not None:                            # idempotent: repeat the status, never re-fire
            self._emit(t, self.status_line(e))
            return
        try:
            gate, hold = msg.int_kv("gate"), msg.int_kv("hold")
            at = msg.int_kv("at") if "at" in msg.kv else None
            enc = msg.int_kv("enc") if "enc" in msg.kv else None
            due_ms = msg.int_kv("due") if "due" in msg.kv else None
        except ProtocolError:
            self._nak(cmd_id, "BAD_ARG", t)
            return
        if due_ms is not None:                       # absolute on this boot's clock: a delayed line fires on time
            at = (due_ms - self._ms(t) + WRAP_MS // 2) % WRAP_MS - WRAP_MS // 2   # or is refused LATE, never late
        bad = not (1 <= gate <= self.n_gates) or not (0 < hold <= 5000)
        bad = bad or sum(x is not None for x in (msg.kv.get("at"), enc, due_ms)) != 1
        bad = bad or (at is not None and at > 60000) or (due_ms is not None and not 0 <= due_ms < WRAP_MS)
        if bad:
            self._nak(cmd_id, "BAD_ARG", t)
        elif "boot" in msg.kv and msg.kv["boot"] != self.boot_id:
            self._nak(cmd_id, "BOOT", t)
        elif self.state != "ARMED":
            self._nak(cmd_id, "SAFE", t)
        elif (at is not None and at < 0) or (enc is not None and enc <= self.encoder_count):
            self._nak(cmd_id, "LATE", t)
        elif len(self.queue) >= self.queue_size:
            self._nak(cmd_id, "QUEUE_FULL", t)
        else:
            e = self._record(cmd_id, "ACK")
            if e is None:                            # every journal slot holds a live command
                self._emit(t, f"NAK {cmd_id} QUEUE_FULL")
                return
            if due_ms is not None:                   # exactly on the ms grid of this boot's clock
                due = round(self.boot_t + (int(round((t - self.boot_t) * 1000)) + at) / 1000, 9)
            else:
                due = round(t + at / 1000, 9) if at is not None else float("inf")
            e.gate, e.due, e.enc = gate, due, enc
            self.queue.append(_Fire(cmd_id, gate, due, hold / 1000, enc))
            self._emit(t, self.status_line(e))

    def _cancel(self, msg, t: float) -> None:
        """CANCEL <id> [boot=<b>]: withdraw a queued command, never one whose swing has begun.

        Queued -> NAK CANCELLED (dropped from the schedule). Swing open -> CANCEL <id> TOO_LATE.
        Ended -> its status line. Unknown id: recorded as cancelled (a copy of its FIRE still on
        the wire is then refused) and NAK CANCELLED, or NAK BOOT when boot= names another boot
        (nothing recorded), or UNKNOWN when every journal slot holds a live command.
        """
        cmd_id = self._cmd_id(msg, t)
        if cmd_id is None:
            return
        e = self.find(cmd_id)
        if e is None and msg.kv.get("boot", self.boot_id) != self.boot_id:
            self._emit(t, f"NAK {cmd_id} BOOT")
        elif e is None:
            kept = self._record(cmd_id, "NAK", "CANCELLED") is not None   # a late FIRE copy is then refused
            self._emit(t, f"NAK {cmd_id} CANCELLED" if kept else f"UNKNOWN {cmd_id}")
        elif e.status == "ACK":
            self.queue = [f for f in self.queue if f.cmd_id != cmd_id]
            e.status, e.reason = "NAK", "CANCELLED"
            self._emit(t, self.status_line(e))
        elif e.status == "OPEN":
            self._emit(t, f"CANCEL {cmd_id} TOO_LATE")
        else:
            self._emit(t, self.status_line(e))

    def _nak(self, cmd_id: int, reason: str, t: float) -> None:
        self._record(cmd_id, "NAK", reason)
        self._emit(t, f"NAK {cmd_id} {reason}")
