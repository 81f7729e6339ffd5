"""`fovea video ...`: list the video models, inspect a video file, write the conveyor-event clip set,
train a TSM event recognizer on a labels CSV and evaluate it."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("video")
def video() -> None:
    """Video understanding: action-recognition models, clips, conveyor events."""


@video.command("models")
@click.option("--count/--no-count", default=True, show_default=True,
              help="Count parameters (shapes only, on the meta device: instant).")
def models_cmd(count: bool) -> None:
    """List the registered video models (fovea.video.create_model names)."""
    import torch

    import fovea.video as V

    for name in V.list_models():
        if not count or name.endswith("lite0"):
            click.echo(name)
            continue
        with torch.device("meta"):
            n = sum(p.numel() for p in V.create_model(name).parameters())
        click.echo(f"{name:22s} {n / 1e6:8.2f} M params")


@video.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["auto", "pyav", "opencv"]), default="auto", show_default=True)
def info_cmd(path: Path, backend: str) -> None:
    """Frames, fps, size and codec of a video file (errors name the problem and the fix)."""
    from fovea.video.decode import VideoReader

    with VideoReader(path, backend) as r:
        i = r.info
        click.echo(json.dumps({"path": str(path), "frames": i.num_frames, "fps": i.fps, "width": i.width,
                               "height": i.height, "codec": i.codec, "backend": i.backend,
                               "duration_s": round(i.duration_s, 3)}))


@video.command("events-set")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n-per-class", type=int, default=40, show_default=True)
@click.option("--frames", "n_frames", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Use different seeds for train and test sets.")
def events_set_cmd(out: Path, n_per_class: int, n_frames: int, seed: int) -> None:
    """Write conveyor-event MP4 clips (normal, jam, fall, rollback, stuck) and OUT/labels.csv."""
    from fovea.video.conveyor_set import write_event_clip_set

    labels = write_event_clip_set(out, n_per_class, seed, n_frames)
    click.echo(f"wrote {labels}")


@video.command("train")
@click.argument("train_csv", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("test_csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/video/tsm"),
              show_default=True)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--short-side", type=int, default=64, show_default=True)
@click.option("--segments", type=int, default=8, show_default=True)
def train_cmd(train_csv: Path, test_csv: Path, out: Path, epochs: int, short_side: int, segments: int) -> None:
    """Train a causal TSM on the offline ImageNet EfficientNet-Lite0 and report held-out accuracy."""
    import torch
    from safetensors.torch import save_file

    import fovea.video as V
    from fovea.engine.train import TrainConfig, fit
    from fovea.video.dataset import VideoClipDataset, items_from_csv
    from fovea.video.train import VideoClassifyTask, evaluate

    items, names = items_from_csv(train_csv)
    test_items, _ = items_from_csv(test_csv, names)
    model = V.create_model("tsm_lite0", num_classes=len(names), num_segments=segments, shift_mode="causal")
    task = VideoClassifyTask(model, names)
    fit(task, VideoClipDataset(items, segments, train=True, short_side=short_side), None,
        TrainConfig(lr=2e-3, batch_size=8, max_epochs=epochs, schedule="cosine", weight_decay=1e-4,
                    out_dir=str(out)))
    loader = torch.utils.data.DataLoader(VideoClipDataset(test_items, segments, train=False, short_side=short_side),
                                         batch_size=8)
    m = evaluate(task.model, loader, len(names))
    save_file(task.model.state_dict(), str(out / "model.safetensors"))
    (out / "classes.json").write_text(json.dumps(names))
    click.echo(json.dumps({"top1": m["top1"], "mean_class_acc": m["mean_class_acc"], "n": m["n"],
                           "confusion": m["confusion"], "classes": names}))
