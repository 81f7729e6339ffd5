"""Fault hooks on the emulator's links (used by the fuzzer): lost and delayed lines, cut cables.

References are hand-written wire transcripts: what the MCU must have received and when, and what
the host must read.
"""

import socket
import time

import pytest

from fovea.errors import ProtocolError
from fovea.line.emulator import EmulatorLink, EmulatorServer, FirmwareEmulator, LineFaults


class Now:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def link():
    now = Now()
    emu = FirmwareEmulator(t0=0.0)
    port = EmulatorLink(emu, now)
    port.open()
    return now, emu, port


def read_all(port):
    out = []
    while port.in_waiting > 0:
        out.append(port.readline().decode().strip())
    return out


def test_drop_next_loses_exactly_the_chosen_lines_in_each_direction():
    now, emu, port = link()
    assert read_all(port)[0].startswith("READY")
    port.faults.drop_next("tx", 1, verb="PING")
    port.write(b"PING 1\n")
    port.write(b"PING 2\n")
    assert read_all(port) == ["PONG 2 q=0 state=SAFE t=0 latch=0"]
    port.faults.drop_next("rx", 2)
    port.write(b"PING 3\nPING 4\nPING 5\n")
    assert read_all(port) == ["PONG 5 q=0 state=SAFE t=0 latch=0"]
    assert [(d, line, a) for _, d, line, a in port.faults.log] == [
        ("tx", "PING 1", "drop"), ("rx", "PONG 3 q=0 state=SAFE t=0 latch=0", "drop"),
        ("rx", "PONG 4 q=0 state=SAFE t=0 latch=0", "drop")]


def test_delayed_host_line_reaches_the_mcu_at_its_due_time_and_keeps_order():
    now, emu, port = link()
    read_all(port)
    port.faults.delay_next("tx", 0.2, verb="PING")
    port.write(b"PING 1\n")
    port.write(b"PING 2\n")            # held behind PING 1: a serial link is a FIFO
    now.t = 0.1
    assert read_all(port) == []
    now.t = 0.35                       # first port call after the due time (0.2)
    assert read_all(port) == ["PONG 1 q=0 state=SAFE t=200 latch=0", "PONG 2 q=0 state=SAFE t=200 latch=0"]


def test_delayed_mcu_line_and_a_filter():
    now, emu, port = link()
    read_all(port)
    port.faults.line_filter = lambda d, line, t: 0.05 if d == "rx" and line.startswith("PONG 1 ") else None
    port.write(b"PING 1\nPING 2\n")
    assert read_all(port) == []
    now.t = 0.05
    assert read_all(port) == ["PONG 1 q=0 state=SAFE t=0 latch=0", "PONG 2 q=0 state=SAFE t=0 latch=0"]
    port.faults.line_filter = lambda d, line, t: "drop" if d == "tx" else None
    port.write(b"PING 3\n")
    assert read_all(port) == []


def test_bad_rules_are_refused():
    with pytest.raises(ProtocolError):
        LineFaults().drop_next("up", 1)
    with pytest.raises(ProtocolError):
        LineFaults().delay_next("rx", -1.0)


def test_cut_cable_loses_lines_in_flight():
    now, emu, port = link()
    read_all(port)
    port.faults.delay_next("rx", 0.5)
    port.write(b"PING 1\n")
    now.t = 0.1
    port.set_down(True)
    now.t = 1.0
    port.set_down(False)
    port.open()
    assert read_all(port) == []
    assert port.faults.log[-1][1:] == ("rx", "PONG 1 q=0 state=SAFE t=0 latch=0", "drop")


def _recv_lines(conn, n, timeout=2.0):
    buf, t0 = b"", time.monotonic()
    while buf.count(b"\n") < n and time.monotonic() - t0 < timeout:
        try:
            buf += conn.recv(4096)
        except socket.timeout:
            pass
    return buf.decode().splitlines()


def test_server_faults_and_set_down():
    srv = EmulatorServer()
    try:
        srv.faults.drop_next("rx", 1, verb="PONG")
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=0.05)
        c.sendall(b"PING 1\nPING 2\n")
        lines = [ln for ln in _recv_lines(c, 1) if not ln.startswith("READY")]   # boot line if still unread
        time.sleep(0.05)
        lines += [ln for ln in _recv_lines(c, 99, timeout=0.05) if not ln.startswith("READY")]
        assert len(lines) == 1 and lines[0].startswith("PONG 2 "), lines
        srv.set_down(True)
        time.sleep(0.05)
        c2 = socket.create_connection(("127.0.0.1", srv.port), timeout=0.2)
        time.sleep(0.05)
        with pytest.raises((ConnectionError, OSError, AssertionError)):
            c2.sendall(b"PING 3\n")
            assert c2.recv(100) != b""       # the far end hung up
        srv.set_down(False)
        c3 = socket.create_connection(("127.0.0.1", srv.port), timeout=0.05)
        c3.sendall(b"PING 4\n")
        assert [ln for ln in _recv_lines(c3, 1) if ln.startswith("PONG")][0].startswith("PONG 4 ")
        for s in (c, c2, c3):
            s.close()
    finally:
        srv.close()
