"""`fovea segment fit|test|predict|export`: semantic segmentation on your own images.

DATA is a folder holding `images/` and `masks/` (same file stems, PNG masks with one class index
per pixel, optional `classes.json` = {"classes": [...]}) or a COCO JSON file with polygons.
`train` is a hidden alias of `fit`; predict writes OUT/predictions.jsonl ({"task", "image",
"result"} per line) like every task.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fovea.cli.common import (add_hidden_alias, echo_skipped, export_model, export_options, load_task_predictor,
                              overlay_name, predict_images, skip_bad_option)
from fovea.cli.progress import progress_bar
from fovea.errors import DataError


def open_dataset(path: str | Path, size: tuple[int, int], augment: bool = False, indices=None,
                 class_names: tuple[str, ...] | None = None, skip_bad: bool = False):
    """A mask folder (DATA/images + DATA/masks) or a COCO JSON file as a segmentation data set."""
    from fovea.segment.data import CocoPolygonDataset, MaskFolderDataset

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return CocoPolygonDataset(path, size=size, augment=augment, indices=indices, skip_bad=skip_bad)
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return MaskFolderDataset(path / "images", path / "masks", class_names=class_names, size=size,
                                 augment=augment, indices=indices, skip_bad=skip_bad)
    raise DataError(f"{path} is neither a COCO .json file nor a folder with images/ and masks/. Fix: arrange "
                    "your data as DATA/images/NAME.png + DATA/masks/NAME.png (class index per pixel).")


def _print_metrics(m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"segmentation: {m['n_images']} images")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, v in m["iou"].items():
        table.add_row(name, "absent" if v is None else f"{v:.4f}")
    table.add_row("[b]mean IoU[/b]", f"[b]{m['mean_iou']:.4f}[/b]")
    table.add_row("pixel accuracy", f"{m['pixel_accuracy']:.4f}")
    Console().print(table)


@click.group("segment")
def segment() -> None:
    """Semantic segmentation: fit, test, predict, export (class index per pixel)."""


@segment.command("fit")
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/segment", show_default=True,
              help="Output folder: OUT/model (checkpoint), curves.png, history.json, metrics.json, overlays/.")
@click.option("--val", "val_data", type=click.Path(exists=True), default=None,
              help="Validation data (same layout); default: --val-fraction of DATA.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--size", type=int, nargs=2, default=(256, 256), show_default=True, help="Input H W.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option("--weights", default="default", show_default=True, help="default | random | PATH.")
@click.option("--head", type=click.Choice(["lraspp", "deeplabv3"]), default="lraspp", show_default=True)
@click.option("--class-weights", type=click.Choice(["none", "auto"]), default="none", show_default=True,
              help="auto: inverse square-root pixel frequency (helps small classes).")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--schedule", type=click.Choice(["none", "cosine", "step"]), default="cosine", show_default=True)
@click.option("--warmup-epochs", type=int, default=1, show_default=True)
@click.option("--patience", type=int, default=None, help="Early stopping on val mean IoU.")
@click.option("--precision", type=click.Choice(["32", "bf16"]), default="32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@skip_bad_option
def fit_cmd(data, out_dir, val_data, val_fraction, size, backbone, weights, head, class_weights, epochs,
            batch_size, lr, optimizer, schedule, warmup_epochs, patience, precision, seed, skip_bad) -> None:
    """Train on DATA; writes OUT/model (checkpoint), the loss curve and OUT/metrics.json."""
    from fovea.engine.train import TrainConfig
    from fovea.segment.data import split_indices
    from fovea.segment.predictor import SegmentationPredictor
    from fovea.segment.train import evaluate_segmenter, train_segmenter

    size = (int(size[0]), int(size[1]))
    if val_data:
        train_ds = open_dataset(data, size, augment=True, skip_bad=skip_bad)
        val_ds = open_dataset(val_data, size, class_names=train_ds.class_names, skip_bad=skip_bad)
        skipped = getattr(train_ds, "skipped", []) + getattr(val_ds, "skipped", [])
    else:
        full = open_dataset(data, size, skip_bad=skip_bad)
        skipped = list(getattr(full, "skipped", []))
        tr, va = split_indices(len(full), val_fraction, seed)
        train_ds = open_dataset(data, size, augment=True, indices=tr, skip_bad=skip_bad)
        val_ds = open_dataset(data, size, indices=va, skip_bad=skip_bad)
    cfg = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size, max_epochs=epochs, schedule=schedule,
                      warmup_epochs=warmup_epochs, monitor="val_miou", mode="max",
                      early_stopping_patience=patience, precision=precision, seed=seed, out_dir=out_dir)
    with progress_bar() as progress:
        result = train_segmenter(train_ds, val_ds, train_ds.num_classes, train_ds.class_names, backbone, cfg,
                                 weights=weights, head=head, input_size=size,
                                 class_weights=None if class_weights == "none" else "auto", progress=progress)
        report = evaluate_segmenter(SegmentationPredictor.load(result.checkpoint), val_ds,
                                    overlay_dir=Path(out_dir) / "overlays", max_overlays=8, progress=progress)
    Path(out_dir, "metrics.json").write_text(json.dumps({**report.metrics, "skipped_files": len(skipped)}, indent=2))
    _print_metrics(report.metrics)
    click.echo(f"model: {result.checkpoint}  curve: {result.curves_png}")
    echo_skipped(skipped)


add_hidden_alias(segment, fit_cmd, "train")


@segment.command("test")
@click.argument("model", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write metrics.json and overlays (prediction | ground truth) here.")
@click.option("--max-overlays", type=int, default=16, show_default=True)
@skip_bad_option
def test_cmd(model, data, out_dir, max_overlays, skip_bad) -> None:
    """Per-class IoU, mean IoU and pixel accuracy of MODEL (folder, .pt or .onnx) on DATA."""
    from fovea.segment.train import evaluate_segmenter

    predictor = load_task_predictor("segment", model)
    ds = open_dataset(data, (16, 16), class_names=predictor.class_names, skip_bad=skip_bad)
    if ds.num_classes != len(predictor.class_names):
        raise DataError(f"{data} has {ds.num_classes} classes but {model} predicts {len(predictor.class_names)} "
                        f"{list(predictor.class_names)}. Fix: test on data labelled with the model's classes.")
    with progress_bar() as progress:
        report = evaluate_segmenter(predictor, ds, overlay_dir=Path(out_dir) / "overlays" if out_dir else None,
                                    max_overlays=max_overlays, progress=progress)
    skipped = list(getattr(ds, "skipped", []))
    if out_dir:
        Path(out_dir, "metrics.json").write_text(json.dumps({**report.metrics, "skipped_files": len(skipped)},
                                                            indent=2))
    _print_metrics(report.metrics)
    echo_skipped(skipped)


@segment.command("predict")
@click.argument("model", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/segment-predict", show_default=True,
              help="Where predictions.jsonl, overlays/ and masks/ go.")
@click.option("--masks/--no-masks", default=True, show_default=True, help="Also write class-index mask PNGs.")
@click.option("--no-overlays", is_flag=True, help="Do not draw overlays.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images predicted at a time.")
@skip_bad_option
def predict_cmd(model, inputs, out_dir, masks, no_overlays, batch_size, skip_bad) -> None:
    """Segment INPUTS (files, folders or quoted globs) with MODEL (folder, .pt or .onnx).

    Writes OUT/predictions.jsonl (one {"task", "image", "result"} line per image; the result holds
    the pixel count of every class), OUT/overlays/ and OUT/masks/ (class index per pixel).
    """
    import cv2
    import numpy as np

    from fovea.segment.overlay import save_overlay

    predictor = load_task_predictor("segment", model)
    out = Path(out_dir)
    seen: set[str] = set()
    dtype = np.uint16 if len(predictor.class_names) > 255 else np.uint8

    def on_result(path, image, res) -> None:
        name = overlay_name(path, seen)
        if not no_overlays:
            save_overlay(out / "overlays" / name, image, res.class_map, predictor.class_names)
        if masks:  # OpenCV keeps 16-bit indices (more than 255 classes) exact
            (out / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / "masks" / name), res.class_map.astype(dtype))

    run = predict_images(predictor, "segment", inputs, out, skip_bad=skip_bad, batch_size=batch_size,
                         on_result=on_result)
    click.echo(f"{run.n_predicted} image(s) segmented with the {predictor.runtime} model -> {run.predictions}")
    echo_skipped(run.skipped)


@segment.command("export")
@export_options
def export_cmd(model, formats, out_dir) -> None:
    """Export the whole pipeline (resize, normalise, network, softmax) to TorchScript / ONNX."""
    export_model("segment", model, out_dir, formats)
