"""`fovea anomaly fit|test|predict|export`: the anomaly-inspection workflow on your own folders."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fovea.cli.progress import progress_bar


def data_options(f):
    """Options that describe where the images are (MVTec layout or free folders)."""
    opts = [
        click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.option("--category", default=None,
                     help="MVTec layout: the category folder under DATA (DATA/CATEGORY/train/good, "
                          "DATA/CATEGORY/test/<defect>, DATA/CATEGORY/ground_truth/<defect>/<stem>_mask.png). "
                          "Omit when using --normal-dir."),
        click.option("--normal-dir", default=None,
                     help="Folder layout: normal (good) images, relative to DATA. Train images come from here; "
                          "--normal-split of them move to test unless --normal-test-dir is given."),
        click.option("--abnormal-dir", "abnormal_dirs", multiple=True,
                     help="Folder layout: anomalous images, one folder per defect type (repeat the option)."),
        click.option("--mask-dir", default=None,
                     help="Folder layout: ground-truth masks matched to anomalous images by file stem "
                          "(optionally <stem>_mask); one folder, or one sub-folder per defect type."),
        click.option("--normal-test-dir", default=None, help="Folder layout: normal images kept for testing."),
        click.option("--normal-split", default=0.2, show_default=True, type=float,
                     help="Fraction of normal images moved to the test set when there is no --normal-test-dir."),
        click.option("--val-split", default=0.5, show_default=True, type=float,
                     help="Fraction of the test set used as validation for thresholds (0 = use the test set "
                          "itself, as Anomalib's MVTec protocol does)."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random split."),
        click.option("--skip-bad", is_flag=True,
                     help="Skip unreadable images instead of stopping; each is counted and listed in the report."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def load_splits(data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split, val_split,
                seed, skip_bad):
    from fovea.data import FolderSpec, load_folder, load_mvtec
    from fovea.errors import ConfigError

    if category and normal_dir:
        raise ConfigError("pass either --category (MVTec layout) or --normal-dir (folder layout), not both")
    if category:
        return load_mvtec(data, category, val_split_ratio=val_split, seed=seed, skip_bad=skip_bad)
    if not normal_dir:
        raise ConfigError(f"no data layout given for {data}. Fix: add --category NAME (MVTec layout) or "
                          "--normal-dir DIR [--abnormal-dir DIR ...] (folder layout).")
    spec = FolderSpec(root=data, normal_dir=normal_dir, abnormal_dirs=list(abnormal_dirs), mask_dir=mask_dir,
                      normal_test_dir=normal_test_dir, normal_split_ratio=normal_split,
                      val_split_ratio=val_split, seed=seed, skip_bad=skip_bad)
    return load_folder(spec)


@click.group()
def anomaly() -> None:
    """Anomaly detection and localisation: fit on normal images, test, predict, export."""


@anomaly.command()
@data_options
@click.option("--model", "model_name", default="patchcore", show_default=True,
              type=click.Choice(["patchcore", "padim", "reverse_distillation"]), help="Anomaly model.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="Any timm backbone with features_only (offline ImageNet weights ship for efficientnet_lite0).")
@click.option("--weights", default="default", show_default=True,
              help="'default' (offline package > hub > error), 'random', or a weights file.")
@click.option("--layers", default=None, help="Comma-separated timm feature indices (PatchCore 2,3; PaDiM 1,2,3).")
@click.option("--input-size", default=256, show_default=True, type=int, help="Square model input size in pixels.")
@click.option("--coreset-ratio", default=0.1, show_default=True, type=float, help="PatchCore: memory bank fraction kept.")
@click.option("--epochs", default=None, type=int, help="Reverse Distillation: training epochs.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images per feature batch.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/anomaly"), show_default=True,
              help="Output folder; the checkpoint goes to OUT/model.")
@click.option("--no-test", is_flag=True, help="Skip testing (and the report) after fitting.")
def fit(data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split, val_split, seed,
        skip_bad, model_name, backbone, weights, layers, input_size, coreset_ratio, epochs, batch_size, out,
        no_test):
    """Fit a model on the normal images of DATA, choose thresholds on validation, then test it."""
    from fovea.anomaly.workflow import FitOptions, fit_pipeline

    splits = load_splits(data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split,
                         val_split, seed, skip_bad)
    model_options = {"backbone": backbone, "weights": weights, "seed": seed}
    if layers:
        model_options["layers"] = tuple(int(v) for v in layers.split(","))
    if model_name == "patchcore":
        model_options["coreset_ratio"] = coreset_ratio
    if epochs is not None:
        model_options["epochs"] = epochs
    options = FitOptions(model=model_name, input_size=(input_size, input_size), batch_size=batch_size,
                         model_options=model_options)
    with progress_bar() as progress:
        pipe, info = fit_pipeline([s.path for s in splits.train], splits.val, options, skip_bad, progress)
    info["skipped"] = list(getattr(splits, "skipped", [])) + info["skipped"]
    ckpt = pipe.save(Path(out) / "model", extra=info)
    click.echo(f"fitted {model_name} on {info['n_train']} images in {info['fit_seconds']:.1f} s -> {ckpt}")
    _echo_skipped(info["skipped"])
    if not no_test:
        _test_and_report(ckpt, splits.test, out, skip_bad)


def _echo_skipped(skipped) -> None:
    if skipped:
        click.echo(f"skipped {len(skipped)} unreadable file(s):")
        for path, reason in skipped:
            click.echo(f"  {path}: {reason}")


def _test_and_report(model_path, samples, out, skip_bad) -> dict:
    from fovea.anomaly.predictor import AnomalyPredictor
    from fovea.anomaly.workflow import run_test, write_jsonl
    from fovea.anomaly.report import write_anomaly_report

    predictor = AnomalyPredictor.load(model_path)
    with progress_bar() as progress:
        res = run_test(predictor, samples, skip_bad, progress)
    out = Path(out)
    write_jsonl(out / "test_predictions.jsonl", res["results"])
    metrics = dict(res["metrics"])
    metrics["skipped_files"] = len(res["skipped"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    thresholds = predictor.thresholds
    report = write_anomaly_report(out, res["results"], res["labels"], res["gt_masks"], res["images"], metrics,
                                  thresholds, title=f"fovea anomaly report: {model_path}")
    _echo_metrics(metrics)
    _echo_skipped(res["skipped"])
    click.echo(f"report: {report}")
    return metrics


def _echo_metrics(metrics: dict) -> None:
    keys = [k for k in ("image_auroc", "image_f1", "pixel_auroc", "pixel_f1", "aupro", "latency_ms_p50")
            if k in metrics]
    click.echo("  ".join(f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics[k], (int, float))))


@anomaly.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@data_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/anomaly-test"), show_default=True,
              help="Where report.html, metrics.json and test_predictions.jsonl go.")
def test(model, data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split, val_split,
         seed, skip_bad, out):
    """Test MODEL (checkpoint folder, .pt or .onnx) on the test split of DATA and write report.html."""
    splits = load_splits(data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split,
                         val_split, seed, skip_bad)
    _test_and_report(model, splits.test, out, skip_bad)


@anomaly.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/anomaly-predict"), show_default=True,
              help="Where predictions.jsonl and overlays/*.png go.")
@click.option("--no-overlays", is_flag=True, help="Write only the JSON lines.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted and listed) instead of stopping.")
def predict(model, inputs, out, no_overlays, skip_bad):
    """Predict INPUTS (images, folders or globs) with MODEL (checkpoint folder, .pt or .onnx)."""
    from fovea.anomaly.predictor import AnomalyPredictor
    from fovea.anomaly.workflow import Skipped, _read
    from fovea.anomaly.report import overlay_png
    from fovea.io import list_images, write_image

    paths = [p for item in inputs for p in list_images(item)]
    predictor = AnomalyPredictor.load(model)
    out = Path(out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    skipped = Skipped()
    seen: set[str] = set()
    n_anomalous = 0
    with (out / "predictions.jsonl").open("w") as fh, progress_bar() as progress:
        for i, path in enumerate(paths):
            img = _read(path, skip_bad, skipped)
            progress("predict", i + 1, len(paths))
            if img is None:
                continue
            res = predictor.predict_one(img, str(path))
            n_anomalous += res.label
            fh.write(json.dumps(res.to_dict()) + "\n")
            if not no_overlays:
                write_image(out / "overlays" / _overlay_name(Path(path), seen), overlay_png(img, res))
    click.echo(f"{len(paths) - len(skipped.items)} image(s) predicted with {predictor.runtime} model, "
               f"{n_anomalous} anomalous -> {out / 'predictions.jsonl'}")
    _echo_skipped(skipped.items)


def _overlay_name(path: Path, seen: set[str]) -> str:
    """STEM.png, or PARENT_STEM.png (then a counter) when two inputs share a stem: nothing is overwritten."""
    name = f"{path.stem}.png"
    if name in seen:
        name = f"{path.parent.name}_{path.stem}.png"
    i = 1
    while name in seen:
        name, i = f"{path.parent.name}_{path.stem}_{i}.png", i + 1
    seen.add(name)
    return name


@anomaly.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "formats", multiple=True, default=("torchscript", "onnx"), show_default=True,
              type=click.Choice(["torchscript", "onnx"]), help="Export format(s); repeat the option.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: MODEL/../export).")
def export(model, formats, out):
    """Export a checkpoint folder with pre- and post-processing inside (uint8 image in, results out)."""
    from fovea.engine.export import export as do_export
    from fovea.anomaly.pipeline import AnomalyPipeline

    pipe = AnomalyPipeline.load(model)
    out = Path(out) if out else Path(model).resolve().parent / "export"
    for fmt, path in do_export(pipe, out, formats).items():
        click.echo(f"{fmt}: {path}")
