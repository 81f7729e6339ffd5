"""`fovea forgery synth|fit|test|predict|export`: where was this image manipulated (splicing, copy-move,
inpainting)? A per-pixel manipulation probability from a SparseViT (sparse attention) or a UNet.

DATA is a folder holding `images/` and `masks/` (same file stems; any non-zero mask pixel is
manipulated, so 0/1 and 0/255 PNG masks both work; an all-zero mask = an authentic image) and
optionally `kinds.json` ({stem: kind}) for per-kind metrics. `fovea forgery synth OUT` writes such
a folder of generated forgeries. predict writes OUT/predictions.jsonl like every task.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fovea.cli.common import (add_hidden_alias, echo_skipped, export_model, export_options, load_task_predictor,
                              overlay_name, predict_images, skip_bad_option)
from fovea.cli.progress import progress_bar
from fovea.errors import DataError


def open_folder(path: str | Path, size: tuple[int, int], augment: bool = False, indices=None, skip_bad: bool = False):
    """DATA/images + DATA/masks as a forgery data set (masks binarised: non-zero = manipulated)."""
    from fovea.forgery.data import ForgeryFolder

    path = Path(path)
    if not ((path / "images").is_dir() and (path / "masks").is_dir()):
        raise DataError(f"{path} has no images/ and masks/ folders. Fix: arrange your data as DATA/images/NAME.png "
                        "+ DATA/masks/NAME.png (non-zero = manipulated), or write a generated set with "
                        "`fovea forgery synth DATA`.")
    return ForgeryFolder(path, size=size, augment=augment, indices=indices, skip_bad=skip_bad)


def train_val_sets(data, val_data, val_fraction: float, size: tuple[int, int], seed: int, skip_bad: bool):
    """(train set with flips, validation set, files skipped): --val's folder, else a seeded split of DATA."""
    from fovea.segment.data import split_indices

    if val_data is not None:
        parts = [(data, None, True), (val_data, None, False)]
    else:
        whole = open_folder(data, size, skip_bad=skip_bad)
        if len(whole) < 2:
            raise DataError(f"{data} holds {len(whole)} image(s); training needs at least 2 (one to validate). "
                            "Fix: add images or pass --val.")
        tr, va = split_indices(len(whole), val_fraction, seed)
        parts = [(data, tr, True), (data, va, False)]
    train_ds, val_ds = (open_folder(path, size, augment=aug, indices=idx, skip_bad=skip_bad) for path, idx, aug in parts)
    skipped = sorted(set(train_ds.skipped + val_ds.skipped))
    return train_ds, val_ds, skipped


def _report(metrics: dict, skipped: list, out_dir: str | Path | None) -> None:
    """metrics.json in out_dir (with the count of skipped files), the table, the skipped files."""
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Path(out_dir, "metrics.json").write_text(json.dumps({**metrics, "skipped_files": len(skipped)}, indent=2))
    _print_metrics(metrics)
    echo_skipped(skipped)


def _print_metrics(m: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"forgery localisation: {m['n_images']} images")
    for col in ("kind", "images", "F1 @0.5", "F1 best (threshold)", "pixel AUC"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    groups = dict(m["by_kind"], **({"all manipulated": m["overall"]} if "overall" in m else {}))
    for kind, g in groups.items():
        table.add_row(kind, str(g["n"]), f"{g['f1']:.4f}", f"{g['f1_best']:.4f} ({g['best_threshold']:.2f})",
                      f"{g['auc']:.4f}")
    Console().print(table)
    if "authentic" in m:
        a = m["authentic"]
        click.echo(f"authentic images: {a['n']}, false-alarm pixels {a['false_alarm_px']:.4f}, "
                   f"images with any pixel > 0.5: {a['images_flagged']:.2f}")
    if "image_auc" in m:
        click.echo(f"image-level AUC (max probability): {m['image_auc']:.4f}")


@click.group("forgery", context_settings={"help_option_names": ["-h", "--help"]})
def forgery() -> None:
    """Image-manipulation localisation: synth, fit, test, predict, export (probability per pixel)."""


@forgery.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n_images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=int, nargs=2, default=(256, 256), show_default=True, help="H W.")
@click.option("--held-out", is_flag=True, help="Use the held-out pictures (never in a default training set).")
@click.option("--jpeg", type=int, nargs=2, default=None, help="Re-save at a JPEG quality in MIN MAX (e.g. 70 95).")
def synth_cmd(out_dir, n_images, seed, size, held_out, jpeg) -> None:
    """Write N generated forgeries (splice, copy-move, inpaint, authentic) of scikit-image pictures to OUT_DIR."""
    from fovea.synth.forgery import HELD_OUT_SOURCES, TRAIN_SOURCES, ForgeryConfig, forgery_sample, write_forgery_folder

    cfg = ForgeryConfig(size=tuple(size), sources=HELD_OUT_SOURCES if held_out else TRAIN_SOURCES,
                        jpeg_quality=tuple(jpeg) if jpeg else None)
    samples = []
    with progress_bar() as progress:
        for i in range(n_images):
            samples.append(forgery_sample(seed, i, cfg))
            progress("synth", i + 1, n_images)
    write_forgery_folder(out_dir, samples)
    click.echo(f"{n_images} image(s) with masks -> {out_dir}/images, {out_dir}/masks, {out_dir}/kinds.json")


@forgery.command("fit")
@click.argument("data", type=click.Path(exists=True))
@click.option("--model", "arch", type=click.Choice(["sparsevit", "unet"]), default="sparsevit", show_default=True,
              help="sparsevit: SparseViT-small (3.7 M params); unet: the plain UNet baseline of the same size.")
@click.option("--size", type=int, nargs=2, default=(256, 256), show_default=True,
              help="Input H W (SparseViT: multiples of 128).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/forgery", show_default=True,
              help="Output folder: OUT/model (checkpoint), curves.png, history.json, metrics.json.")
@click.option("--val", "val_data", type=click.Path(exists=True), default=None,
              help="Validation data (same layout); default: --val-fraction of DATA.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@skip_bad_option
def fit_cmd(data, out_dir, val_data, val_fraction, arch, size, epochs, batch_size, lr, seed, skip_bad) -> None:
    """Train on DATA from random init; writes OUT/model and OUT/metrics.json (validation, per kind)."""
    from fovea.engine.train import TrainConfig
    from fovea.forgery.model import SPARSEVIT_SMALL, UNET_SMALL, ForgeryModelConfig
    from fovea.forgery.predictor import ForgeryPredictor
    from fovea.forgery.train import evaluate_forgery, train_forgery

    size = (int(size[0]), int(size[1]))
    model_cfg = ForgeryModelConfig(arch, dict(SPARSEVIT_SMALL if arch == "sparsevit" else UNET_SMALL), size)
    train_ds, val_ds, skipped = train_val_sets(data, val_data, val_fraction, size, seed, skip_bad)
    cfg = TrainConfig(optimizer="adamw", lr=lr, weight_decay=0.05, batch_size=batch_size, max_epochs=epochs,
                      schedule="cosine", warmup_epochs=1, seed=seed, out_dir=out_dir)
    with progress_bar() as progress:
        result = train_forgery(train_ds, val_ds, model_cfg, cfg, progress=progress)
        report = evaluate_forgery(ForgeryPredictor.load(result.checkpoint), val_ds, progress=progress)
    click.echo(f"model: {result.checkpoint}  curve: {result.curves_png}  (validation below)")
    _report(report.metrics, skipped, out_dir)


add_hidden_alias(forgery, fit_cmd, "train")


@forgery.command("test")
@click.argument("model", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Write metrics.json here.")
@skip_bad_option
def test_cmd(model, data, out_dir, skip_bad) -> None:
    """Pixel F1 (at 0.5 and the best threshold) and pixel AUC of MODEL (folder, .pt or .onnx) on DATA, per kind."""
    from fovea.forgery.train import evaluate_forgery

    predictor = load_task_predictor("forgery", model)
    ds = open_folder(data, (16, 16), skip_bad=skip_bad)
    with progress_bar() as progress:
        report = evaluate_forgery(predictor, ds, progress=progress)
    _report(report.metrics, list(ds.skipped), out_dir)


@forgery.command("predict")
@click.argument("model", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/forgery-predict", show_default=True,
              help="Where predictions.jsonl, maps/ (probability x 255) and masks/ (0 / 255) go.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images predicted at a time.")
@skip_bad_option
def predict_cmd(model, inputs, out_dir, batch_size, skip_bad) -> None:
    """Localise manipulations in INPUTS (files, folders or quoted globs) with MODEL (folder, .pt or .onnx).

    Writes OUT/predictions.jsonl (one {"task", "image", "result"} line per image; the result holds
    the pixel count of each class, authentic / manipulated), OUT/maps/ and OUT/masks/ PNGs.
    """
    import cv2
    import numpy as np

    predictor = load_task_predictor("forgery", model)
    out = Path(out_dir)
    seen: set[str] = set()
    for sub in ("maps", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    flagged: list[str] = []

    def on_result(path, image, res) -> None:
        name = overlay_name(path, seen)
        cv2.imwrite(str(out / "maps" / name), np.rint(res.probs[1] * 255).astype(np.uint8))
        cv2.imwrite(str(out / "masks" / name), res.class_map.astype(np.uint8) * 255)
        if res.class_map.any():
            flagged.append(str(path))
        click.echo(f"{path}: {100 * res.class_map.mean():.2f} % manipulated (max probability {res.probs[1].max():.3f})")

    run = predict_images(predictor, "forgery", inputs, out, on_result=on_result, batch_size=batch_size,
                         skip_bad=skip_bad)
    echo_skipped(run.skipped)
    click.echo(f"{len(flagged)} of {run.n_predicted} image(s) have manipulated pixels ({predictor.runtime} model); "
               f"results -> {run.predictions}")


@forgery.command("export")
@export_options
def export_cmd(model, formats, out_dir) -> None:
    """Export the whole pipeline (resize, normalise, network, sigmoid) to TorchScript / ONNX."""
    export_model("forgery", model, out_dir, formats)
