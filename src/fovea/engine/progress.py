"""The progress callback every long-running function accepts: `progress(stage, done, total)`.

Workflows call it after each unit of work (an image read, a coreset step, an optimizer step, an
epoch) with a short stage name; the CLI turns the calls into rich bars on stderr
(`fovea.cli.progress.progress_bar`), library users may pass any function or nothing.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): `done` of `total` units of `stage` are finished."""
