"""What every task's commands share: `--skip-bad`, the skipped-files listing, the hidden `train`
alias, and the one prediction loop that writes `predictions.jsonl`.

Every `fovea <task> predict` writes OUT/predictions.jsonl with one line per image:
`{"task": "anomaly" | "classify" | "segment", "image": path, "result": result.to_dict()}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

from fovea.cli.progress import progress_bar
from fovea.engine.results import PREDICTIONS_FILE, prediction_record

if TYPE_CHECKING:
    import numpy as np

skip_bad_option = click.option(
    "--skip-bad", is_flag=True,
    help="Skip unreadable images instead of stopping; each is counted and listed at the end.")


def echo_skipped(skipped: Sequence[tuple[Any, str]]) -> None:
    """List the files left out under --skip-bad (on stdout, after the results)."""
    if skipped:
        click.echo(f"skipped {len(skipped)} unreadable file(s):")
        for path, reason in skipped:
            click.echo(f"  {path}: {reason}")


def add_hidden_alias(group: click.Group, command: click.Command, alias: str) -> None:
    """Register `command` a second time under `alias`, hidden from --help (e.g. `train` for `fit`)."""
    group.add_command(click.Command(alias, callback=command.callback, params=command.params, help=command.help,
                                    short_help=command.short_help, hidden=True,
                                    context_settings=command.context_settings), alias)


def list_inputs(inputs: Sequence[str | Path], skip_bad: bool):
    """Every image named by INPUTS (files, folders, quoted globs), in order; an `ImageList` whose
    `.skipped` holds the files with unreadable headers (only with skip_bad; else they raise)."""
    from fovea.io import ImageList, list_images

    paths = ImageList()
    for item in inputs:
        paths += list_images(item, skip_bad=skip_bad)
    return paths


@dataclass
class PredictRun:
    """What `predict_images` did: images predicted, files left out, the predictions.jsonl written."""

    n_predicted: int
    predictions: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)


def predict_images(predictor, task: str, inputs: Sequence[str | Path], out_dir: str | Path, *,
                   skip_bad: bool = False, batch_size: int = 16,
                   on_result: Callable[[Path, np.ndarray, Any], None] | None = None) -> PredictRun:
    """Predict every image of INPUTS with `predictor` (batched) into OUT/predictions.jsonl.

    on_result(path, image, result) runs after each image (overlays, masks). A progress bar on
    stderr counts images. Unreadable files raise, or with skip_bad are skipped and returned.
    """
    from fovea.io import read_or_skip

    paths = list_inputs(inputs, skip_bad)
    skipped = [(str(p), r) for p, r in paths.skipped]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / PREDICTIONS_FILE
    n = 0
    with target.open("w") as fh, progress_bar() as progress:
        for start in range(0, len(paths), max(1, batch_size)):
            part = paths[start:start + max(1, batch_size)]
            images = [read_or_skip(p, skip_bad, skipped) for p in part]
            kept = [(p, im) for p, im in zip(part, images) if im is not None]
            if kept:
                results = predictor.predict([im for _, im in kept], [str(p) for p, _ in kept])
                for (p, im), res in zip(kept, results):
                    fh.write(json.dumps(prediction_record(task, p, res)) + "\n")
                    if on_result is not None:
                        on_result(Path(p), im, res)
            n += len(kept)
            progress("predict", min(start + len(part), len(paths)), len(paths))
    return PredictRun(n, target, skipped)


def overlay_name(path: Path, seen: set[str]) -> str:
    """STEM.png, or PARENT_STEM.png (then a counter) when two inputs share a stem: nothing is overwritten."""
    name = f"{path.stem}.png"
    if name in seen:
        name = f"{path.parent.name}_{path.stem}.png"
    i = 1
    while name in seen:
        name, i = f"{path.parent.name}_{path.stem}_{i}.png", i + 1
    seen.add(name)
    return name


EXPORT_FORMATS = ("torchscript", "onnx")  # = fovea.engine.export.FORMATS (a test holds them equal); named
# here so that `fovea <task> --help` does not import torch


def export_options(f):
    """MODEL argument, --format (repeatable) and --out of every `fovea <task> export`."""
    f = click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder for the exported files [default: MODEL/export].")(f)
    f = click.option("--format", "formats", multiple=True, default=EXPORT_FORMATS, show_default=True,
                     type=click.Choice(EXPORT_FORMATS),
                     help="Export format(s), repeat the option. Both take uint8 (B, H, W, 3) RGB images of any "
                          "size and batch and return the task's results.")(f)
    return click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))(f)


def export_model(task: str, model: Path, out_dir: Path | None, formats: Sequence[str]) -> dict[str, Path]:
    """Export checkpoint folder MODEL of `task` (pre- and post-processing inside) and echo each file."""
    predictor = load_task_predictor(task, model)
    files: dict[str, Path] = {}
    with progress_bar() as progress:  # one format at a time: an ONNX export can take minutes on a CPU
        progress("export", 0, len(formats))
        for i, fmt in enumerate(formats):
            files.update(predictor.export(out_dir or Path(model) / "export", [fmt]))
            progress("export", i + 1, len(formats))
    for fmt, path in files.items():
        click.echo(f"{fmt}: {path}")
    return files


def load_task_predictor(task: str, model: str | Path):
    """`fovea.load_predictor(model)`, checked to be a `task` model (a clear error names the right command)."""
    from fovea import load_predictor
    from fovea.errors import CheckpointError

    predictor = load_predictor(model)
    if predictor.kind != task:
        raise CheckpointError(f"{model} holds a {predictor.kind!r} model, not a {task!r} one. Fix: use "
                              f"`fovea {predictor.kind} ...` for it.")
    return predictor
