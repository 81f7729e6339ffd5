"""A rich progress bar that the workflows drive through a plain `progress(stage, done, total)` callback
(`fovea.engine.progress.Progress`): one bar per stage, on stderr, silent when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fovea.engine.progress import Progress as ProgressFn


@contextlib.contextmanager
def progress_bar(stream=None) -> Iterator[ProgressFn]:
    """Yield `progress(stage, done, total)`; bars go to `stream` (default stderr) and only when it is a
    terminal, so piped or captured output (CI logs, `fovea ... 2> log`) stays free of bar frames."""
    stream = sys.stderr if stream is None else stream
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    console = Console(file=stream)
    with Progress(*columns, console=console, transient=False, disable=not stream.isatty()) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
