"""What every benchmark script shares: it writes its own markdown table under docs/benchmarks/.

A `Run` notes the command line, the machine (CPUs, torch threads) and the load average when the
script starts; `Run.write` adds the load average at the end and puts the script's block into its
docs/benchmarks/<name>.md between `<!-- begin benchmarks/<script> -->` / `<!-- end ... -->`
markers. Text outside the markers (hand-written reading notes) is kept; the block is replaced on
every run, so a number inside it was always written by the run that measured it. Two scripts may
share one file (each owns its block).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"


def add_doc_args(ap: argparse.ArgumentParser, doc: str, quick_help: str) -> None:
    """--quick (a few minutes at most) and --doc (where the table goes; '-' = print only)."""
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--doc", default=str(DOCS / f"{doc}.md"),
                    help=f"markdown file for the table (default docs/benchmarks/{doc}.md; '-' prints only)")


def load_average() -> float:
    """1-minute load average (the number of runnable jobs the machine had)."""
    return os.getloadavg()[0]


def median_wall_cpu(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process-CPU seconds) over `repeats` calls of fn()."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


class Run:
    """One benchmark run: command line and machine load at start; `write` puts the block in the doc.

    quick / full_command: a --quick run says so in its block and names the full-size command.
    """

    def __init__(self, args: argparse.Namespace, full_command: str | None = None):
        self.script = Path(sys.argv[0]).resolve()
        self.command = ".venv/bin/python " + " ".join(
            [shlex.quote(str(self.script.relative_to(ROOT)) if self.script.is_relative_to(ROOT) else sys.argv[0])]
            + [shlex.quote(a) for a in sys.argv[1:]]
        )
        self.doc = None if args.doc == "-" else Path(args.doc)
        self.quick = bool(getattr(args, "quick", False))
        self.full_command = full_command
        self.load_start = load_average()
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.threads_env = os.environ.get("OMP_NUM_THREADS", "unset")

    def machine_line(self) -> str:
        import torch

        return (
            f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} intra-op "
            f"thread(s) (OMP_NUM_THREADS={self.threads_env}); load average (1 min) {self.load_start:.1f} at the "
            f"start, {load_average():.1f} at the end of the run."
        )

    def block(self, body: Sequence[str]) -> list[str]:
        rel = self.script.relative_to(ROOT) if self.script.is_relative_to(ROOT) else self.script.name
        lines = [
            f"Written by `{rel}` on {self.started:%Y-%m-%d %H:%M} UTC:", "",
            f"    {self.command}", "", self.machine_line(), "",
        ]
        if self.quick:
            lines += [f"**Quick size** (`--quick`), not the full benchmark. Full size: `{self.full_command}`.", ""]
        return lines + list(body)

    def write(self, title: str, body: Sequence[str], tag: str | None = None) -> str:
        """Print the block and put it into the doc (between this script's markers; a script that
        writes several blocks names each with `tag`: `<!-- begin benchmarks/x.py:tag -->`); returns the text."""
        rel = self.script.relative_to(ROOT) if self.script.is_relative_to(ROOT) else Path(self.script.name)
        name = rel.as_posix() + (f":{tag}" if tag else "")
        begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
        text = "\n".join(self.block(body))
        print(text, flush=True)
        if self.doc is None:
            return text
        old = self.doc.read_text() if self.doc.is_file() else f"# {title}\n\n"
        if begin in old and end in old:
            new = old[: old.index(begin)] + begin + "\n" + text + "\n" + old[old.index(end):]
        else:
            new = old.rstrip() + "\n\n" + begin + "\n" + text + "\n" + end + "\n"
        self.doc.parent.mkdir(parents=True, exist_ok=True)
        self.doc.write_text(new)
        print(f"wrote {self.doc}", flush=True)
        return text
