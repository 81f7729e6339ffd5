"""`fovea segment train|test|predict|export`: semantic segmentation on your own images.

DATA is a folder holding `images/` and `masks/` (same file stems, PNG masks with one class index
per pixel, optional `classes.json` = {"classes": [...]}) or a COCO JSON file with polygons.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fovea.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_dataset(path: str | Path, size: tuple[int, int], augment: bool = False, indices=None,
                 class_names: tuple[str, ...] | None = None):
    """A mask folder (DATA/images + DATA/masks) or a COCO JSON file as a segmentation data set."""
    from fovea.segment.data import CocoPolygonDataset, MaskFolderDataset

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return CocoPolygonDataset(path, size=size, augment=augment, indices=indices)
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return MaskFolderDataset(path / "images", path / "masks", class_names=class_names, size=size,
                                 augment=augment, indices=indices)
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
    """Semantic segmentation: train, test, predict, export (class index per pixel)."""


@segment.command("train")
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/segment", show_default=True)
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
def train_cmd(data, out_dir, val_data, val_fraction, size, backbone, weights, head, class_weights, epochs,
              batch_size, lr, optimizer, schedule, warmup_epochs, patience, precision, seed) -> None:
    """Train on DATA; writes OUT/model (checkpoint), the loss curve and OUT/metrics.json."""
    from fovea.engine.train import TrainConfig
    from fovea.segment.data import split_indices
    from fovea.segment.train import evaluate_segmenter, train_segmenter

    size = (int(size[0]), int(size[1]))
    if val_data:
        train_ds = open_dataset(data, size, augment=True)
        val_ds = open_dataset(val_data, size, class_names=train_ds.class_names)
    else:
        n = len(open_dataset(data, size))
        tr, va = split_indices(n, val_fraction, seed)
        train_ds = open_dataset(data, size, augment=True, indices=tr)
        val_ds = open_dataset(data, size, indices=va)
    cfg = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size, max_epochs=epochs, schedule=schedule,
                      warmup_epochs=warmup_epochs, monitor="val_miou", mode="max",
                      early_stopping_patience=patience, precision=precision, seed=seed, out_dir=out_dir)
    predictor = train_segmenter(train_ds, val_ds, train_ds.num_classes, train_ds.class_names, backbone, cfg,
                                weights=weights, head=head, input_size=size,
                                class_weights=None if class_weights == "none" else "auto")
    metrics = evaluate_segmenter(predictor, val_ds, overlay_dir=Path(out_dir) / "overlays", max_overlays=8)
    Path(out_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    _print_metrics(metrics)
    click.echo(f"model: {Path(out_dir) / 'model'}  curve: {predictor.train_result.curve_png}")


@segment.command("test")
@click.argument("model", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write metrics.json and overlays (prediction | ground truth) here.")
@click.option("--max-overlays", type=int, default=16, show_default=True)
def test_cmd(model, data, out_dir, max_overlays) -> None:
    """Per-class IoU, mean IoU and pixel accuracy of MODEL (folder, .pt or .onnx) on DATA."""
    from fovea.segment.predictor import SegmentationPredictor
    from fovea.segment.train import evaluate_segmenter

    predictor = SegmentationPredictor.load(model)
    ds = open_dataset(data, (16, 16), class_names=predictor.class_names)
    if ds.num_classes != len(predictor.class_names):
        raise DataError(f"{data} has {ds.num_classes} classes but {model} predicts {len(predictor.class_names)} "
                        f"{list(predictor.class_names)}. Fix: test on data labelled with the model's classes.")
    metrics = evaluate_segmenter(predictor, ds, overlay_dir=Path(out_dir) / "overlays" if out_dir else None,
                                 max_overlays=max_overlays)
    if out_dir:
        Path(out_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    _print_metrics(metrics)


@segment.command("predict")
@click.argument("model", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/segment_predict", show_default=True)
@click.option("--masks/--no-masks", default=True, show_default=True, help="Also write class-index mask PNGs.")
def predict_cmd(model, inputs, out_dir, masks) -> None:
    """Segment images (files or folders): overlays, masks and results.jsonl in OUT."""
    import cv2
    import numpy as np

    from fovea.segment.data import read_rgb
    from fovea.segment.overlay import save_overlay
    from fovea.segment.predictor import SegmentationPredictor

    predictor = SegmentationPredictor.load(model)
    paths = []
    for p in map(Path, inputs):
        paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS) if p.is_dir() else [p]
    if not paths:
        raise DataError(f"no images found in {list(inputs)}")
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "masks").mkdir(exist_ok=True)
    with open(out / "results.jsonl", "w") as f:
        for path in paths:
            res = predictor.predict_one(read_rgb(path), str(path))
            save_overlay(out / "overlays" / f"{path.stem}.png", read_rgb(path), res.class_map, predictor.class_names)
            if masks:
                cv2.imwrite(str(out / "masks" / f"{path.stem}.png"), res.class_map.astype(np.uint16 if
                            len(predictor.class_names) > 255 else np.uint8))
            f.write(json.dumps(res.to_dict()) + "\n")
    click.echo(f"{len(paths)} image(s) -> {out}")


@segment.command("export")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Default: MODEL/export.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["torchscript", "onnx"]),
              default=("torchscript", "onnx"), show_default=True)
def export_cmd(model, out_dir, formats) -> None:
    """Export the whole pipeline (resize, normalise, network, softmax) to TorchScript / ONNX."""
    from fovea.segment.predictor import SegmentationPredictor

    predictor = SegmentationPredictor.load(model)
    for fmt, path in predictor.export(out_dir or Path(model) / "export", formats).items():
        click.echo(f"{fmt}: {path}")
