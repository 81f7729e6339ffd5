"""The sorter line protocol v1.1: ASCII lines between host and microcontroller (see docs/protocol.md).

Host -> MCU: HELLO | ARM | SAFE | PING <seq> | STATUS <id>
             | FIRE <id> gate=<g> (due=<mcu ms> | at=+<ms> | enc=<count>) hold=<ms> [boot=<id>]
MCU -> host: READY fw= gates= boot= state= reason= | STATE <ARMED|SAFE> reason= [latch=] | PONG <seq> q= state= t= latch=
             | ACK <id> due=<ms>|due_enc=<count> | NAK <id> <reason> | DONE <id> t=<ms> from=<ms> to=<ms>
             | NAK <id> ABORTED from=<ms> to=<ms> | UNKNOWN <id> | ERR <reason>
FIRE is idempotent by id: resending a known id repeats its current status instead of firing again;
STATUS asks for it without ever firing. DONE: the gate's hold ran its full course; ABORTED: the
swing was cut short (SAFE, or a reset, reported from the fate journal after it); from/to: the
gate's actual open interval in ms relative to the command's due time. RESET: a reset lost the
command before it started. UNKNOWN: the MCU has no record (power loss, or never received).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fovea.errors import ProtocolError

MAX_LINE = 63
NAK_REASONS = ("LATE", "QUEUE_FULL", "BAD_ARG", "SAFE", "ABORTED", "RESET")
STATES = ("ARMED", "SAFE")


@dataclass
class Message:
    """One parsed protocol line: verb, positional args and key=value fields (all strings)."""

    verb: str
    args: list[str] = field(default_factory=list)
    kv: dict[str, str] = field(default_factory=dict)

    def int_arg(self, i: int) -> int:
        try:
            return int(self.args[i])
        except (IndexError, ValueError) as exc:
            raise ProtocolError(f"{self.verb} needs an integer argument #{i + 1}, got {self.args}") from exc

    def int_kv(self, key: str) -> int:
        try:
            return int(self.kv[key].lstrip("+"))
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"{self.verb} needs integer field {key}=, got {self.kv}") from exc


def parse_line(line: str | bytes) -> Message:
    """Split a protocol line into a Message; raises ProtocolError on an empty or oversized line."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"non-ASCII bytes on the sorter link: {line!r}") from exc
    line = line.strip()
    if not line:
        raise ProtocolError("empty line on the sorter link")
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line longer than {MAX_LINE} chars on the sorter link: {line[:80]!r}")
    verb, *rest = line.split()
    args, kv = [], {}
    for tok in rest:
        if "=" in tok:
            k, _, v = tok.partition("=")
            kv[k] = v
        else:
            args.append(tok)
    return Message(verb.upper(), args, kv)


def fire_line(cmd_id: int, gate: int, hold_ms: int, at_ms: int | None = None, enc: int | None = None,
              due_ms: int | None = None, boot: str | None = None) -> str:
    """Format a FIRE: `at_ms` after receipt, at encoder count `enc`, or at `due_ms` on the MCU's
    millis() (absolute: a delayed line fires on time or is refused LATE). `boot` binds it to one
    MCU boot (another boot answers NAK BOOT)."""
    if sum(x is not None for x in (at_ms, enc, due_ms)) != 1:
        raise ProtocolError("FIRE needs exactly one of at_ms (relative delay), enc (encoder count) or due_ms "
                            "(MCU millis)")
    if at_ms is not None:
        when = f"at=+{int(at_ms)}" if at_ms >= 0 else f"at={int(at_ms)}"
    elif enc is not None:
        when = f"enc={int(enc)}"
    else:
        when = f"due={int(due_ms)}"
    tail = f" boot={boot}" if boot else ""
    line = f"FIRE {int(cmd_id)} gate={int(gate)} {when} hold={int(hold_ms)}{tail}"
    if len(line) > MAX_LINE:
        raise ProtocolError(f"FIRE line longer than {MAX_LINE} chars: {line!r}")
    return line


def status_line(cmd_id: int) -> str:
    """Ask the MCU for the fate of command `cmd_id` (never executes anything)."""
    return f"STATUS {int(cmd_id)}"


def cancel_line(cmd_id: int, boot: str | None = None) -> str:
    """CANCEL <id> [boot=<b>] (protocol v1.2): withdraw a queued FIRE if its swing has not begun."""
    return f"CANCEL {int(cmd_id)}" + (f" boot={boot}" if boot else "")


def open_interval_s(msg: Message) -> tuple[float, float] | None:
    """(from, to) in seconds relative to the command's due time, from a DONE or NAK ABORTED line."""
    if "from" not in msg.kv or "to" not in msg.kv:
        return None
    return msg.int_kv("from") / 1000.0, msg.int_kv("to") / 1000.0
