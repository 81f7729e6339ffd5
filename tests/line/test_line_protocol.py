"""The shared protocol table (docs/protocol_cases.json) against the emulator and the firmware.

The firmware half compiles firmware/sorter/sorter.ino with g++ against a stub Arduino core
(firmware/host_test/) and plays the same cases on it, so the two implementations cannot drift.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fovea.errors import ProtocolError
from fovea.line.emulator import EmulatorCaseDriver, FirmwareEmulator, check_protocol_case
from fovea.line.protocol import fire_line, open_interval_s, parse_line

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "docs" / "protocol_cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_emulator_passes_shared_case(case):
    check_protocol_case(case, EmulatorCaseDriver(seed=1))


class FirmwareDriver:
    """Drives the host-compiled firmware harness one command at a time."""

    def __init__(self, exe):
        self.p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._boot = self._read()

    def _read(self):
        out = []
        while True:
            line = self.p.stdout.readline()
            if line == "":
                raise AssertionError("firmware harness exited")
            line = line.rstrip("\n")
            if line == "--":
                return out
            out.append(line)

    def _cmd(self, s):
        self.p.stdin.write(s + "\n")
        self.p.stdin.flush()
        return self._read()

    def boot_lines(self):
        return self._boot

    def at(self, ms):
        return self._cmd(f"T {ms}")

    def send(self, line):
        return self._cmd(f"S {line}")

    def reset(self):
        return self._cmd("R")

    def power_cycle(self):
        return self._cmd("P")

    def encoder(self, n):
        return self._cmd(f"E {n}")

    def jump(self, ms):
        return self._cmd(f"J {ms}")

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=5)


@pytest.fixture(scope="module")
def firmware_exe(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not installed: the firmware half of the shared protocol table needs a host C++ compiler")
    exe = tmp_path_factory.mktemp("fw") / "sorter_host"
    res = subprocess.run([gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
                          "-I", str(ROOT / "firmware" / "host_test"), "-o", str(exe),
                          str(ROOT / "firmware" / "host_test" / "harness.cpp")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_firmware_passes_shared_case(case, firmware_exe):
    drv = FirmwareDriver(firmware_exe)
    try:
        check_protocol_case(case, drv)
    finally:
        drv.close()


def test_parse_and_format():
    m = parse_line(b"FIRE 17 gate=1 at=+812 hold=300\n")
    assert (m.verb, m.int_arg(0), m.int_kv("gate"), m.int_kv("at"), m.int_kv("hold")) == ("FIRE", 17, 1, 812, 300)
    assert fire_line(17, 1, 300, at_ms=812) == "FIRE 17 gate=1 at=+812 hold=300"
    assert fire_line(3, 2, 50, at_ms=-4) == "FIRE 3 gate=2 at=-4 hold=50"
    assert fire_line(4, 2, 50, enc=1200) == "FIRE 4 gate=2 enc=1200 hold=50"
    with pytest.raises(ProtocolError):
        parse_line("   ")
    with pytest.raises(ProtocolError):
        parse_line("PING " + "9" * 80)
    with pytest.raises(ProtocolError):
        fire_line(1, 1, 10)
    assert fire_line(5, 1, 200, due_ms=4294967295, boot="8c1f") == "FIRE 5 gate=1 due=4294967295 hold=200 boot=8c1f"
    with pytest.raises(ProtocolError):
        fire_line(5, 1, 200, at_ms=3, due_ms=4)
    with pytest.raises(ProtocolError):                 # would not fit the MCU's 63-char line buffer
        fire_line(10 ** 20, 1, 5000, due_ms=4294967295, boot="8c1f")
    m = parse_line("DONE 5 t=300 from=-50 to=150")
    assert open_interval_s(m) == (-0.05, 0.15) and open_interval_s(parse_line("NAK 5 LATE")) is None


def test_emulator_gate_timeline_matches_commands():
    emu = FirmwareEmulator(t0=0.0)
    emu.read_lines()
    emu.feed(b"ARM\nFIRE 1 gate=2 at=+250 hold=120\nPING 1\n", 0.0)
    emu.feed(b"PING 2\n", 0.3)
    emu.advance(0.45)
    assert [(s.gate, round(s.t_open, 6), round(s.t_close, 6), s.cmd_ids) for s in emu.swings] == [(2, 0.25, 0.37, [1])]
    assert "DONE 1 t=370 from=0 to=120" in emu.read_lines()
