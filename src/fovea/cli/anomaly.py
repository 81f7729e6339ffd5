"""`fovea anomaly fit|test|predict|export`: the anomaly-inspection workflow on your own folders.

The verbs and outputs are those of every learnt task (`fovea classify`, `fovea segment`): predict
writes OUT/predictions.jsonl ({"task", "image", "result"} per line), --skip-bad lists what it skips.
"""

from __future__ import annotations

from pathlib import Path

import click

from fovea.cli.common import (echo_skipped, export_model, export_options, load_task_predictor,
                              overlay_name, predict_images, skip_bad_option)
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
        skip_bad_option,
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
              type=click.Choice(["patchcore", "padim", "reverse_distillation", "vae", "vqvae", "winclip"]),
              help="Anomaly model.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="Any timm backbone with features_only (offline ImageNet weights ship for efficientnet_lite0).")
@click.option("--weights", default="default", show_default=True,
              help="'default' (offline package > hub > error), 'random', or a weights file.")
@click.option("--layers", default=None, help="Comma-separated timm feature indices (PatchCore 2,3; PaDiM 1,2,3).")
@click.option("--input-size", default=256, show_default=True, type=int, help="Square model input size in pixels.")
@click.option("--coreset-ratio", default=0.1, show_default=True, type=float, help="PatchCore: memory bank fraction kept.")
@click.option("--epochs", default=None, type=int, help="Reverse Distillation, VAE, VQ-VAE: training epochs.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images per feature batch.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/anomaly"), show_default=True,
              help="Output folder; the checkpoint goes to OUT/model, the test report to OUT.")
@click.option("--no-test", is_flag=True, help="Skip testing (and the report) after fitting.")
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="Any other model option (value parsed as JSON, else a string), e.g. --option k_shot=4 "
                   "--option object_name='tray of bricks' (winclip), --option gan=true (vqvae). Repeat.")
def fit(data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split, val_split, seed,
        skip_bad, model_name, backbone, weights, layers, input_size, coreset_ratio, epochs, batch_size, out,
        no_test, extra_options):
    """Fit a model on the normal images of DATA, choose thresholds on validation, then test it."""
    from fovea.anomaly.workflow import FitOptions, fit_anomaly

    splits = load_splits(data, category, normal_dir, abnormal_dirs, mask_dir, normal_test_dir, normal_split,
                         val_split, seed, skip_bad)
    model_options = {"backbone": backbone, "weights": weights, "seed": seed}
    if layers:
        model_options["layers"] = tuple(int(v) for v in layers.split(","))
    if model_name == "patchcore":
        model_options["coreset_ratio"] = coreset_ratio
    if epochs is not None:
        model_options["epochs"] = epochs
    model_options.update(_parse_options(extra_options))
    options = FitOptions(model=model_name, input_size=(input_size, input_size), batch_size=batch_size,
                         model_options=model_options)
    with progress_bar() as progress:
        result = fit_anomaly([s.path for s in splits.train], splits.val, options, out, skip_bad=skip_bad,
                             progress=progress, skipped=splits.skipped)
    click.echo(f"fitted {model_name} on {result.metrics['n_train']} images in {result.timings_s['fit']:.1f} s "
               f"-> {result.checkpoint}")
    echo_skipped(result.skipped)
    if not no_test:
        report_test(result.checkpoint, splits.test, out, skip_bad, data)


def _parse_options(items) -> dict:
    """KEY=VALUE strings -> dict; values parsed as JSON (numbers, true/false, lists), else kept as strings."""
    import json

    from fovea.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r} is not KEY=VALUE. Fix: e.g. --option k_shot=4")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def report_test(model_path, samples, out, skip_bad: bool, data) -> dict:
    """Test MODEL on `samples`, write report.html + metrics.json + test_predictions.jsonl, echo the metrics."""
    from fovea.anomaly.workflow import evaluate_and_report

    with progress_bar() as progress:
        report = evaluate_and_report(model_path, samples, out, skip_bad=skip_bad, progress=progress, data=str(data))
    _echo_metrics(report.metrics)
    echo_skipped(report.skipped)
    click.echo(f"report: {report.paths['report']}")
    return report.metrics


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
    report_test(model, splits.test, out, skip_bad, data)


@anomaly.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/anomaly-predict"), show_default=True,
              help="Where predictions.jsonl and overlays/*.png go.")
@click.option("--no-overlays", is_flag=True, help="Write only the JSON lines.")
@click.option("--batch-size", default=16, show_default=True, type=int, help="Images predicted at a time.")
@skip_bad_option
def predict(model, inputs, out, no_overlays, batch_size, skip_bad):
    """Predict INPUTS (images, folders or quoted globs) with MODEL (checkpoint folder, .pt or .onnx).

    Writes OUT/predictions.jsonl (one {"task", "image", "result"} line per image) and OUT/overlays/.
    """
    from fovea.anomaly.report import overlay_png
    from fovea.io import write_image

    predictor = load_task_predictor("anomaly", model)
    seen: set[str] = set()
    n_anomalous = [0]

    def on_result(path, image, res) -> None:
        n_anomalous[0] += int(res.label)
        if not no_overlays:
            write_image(Path(out) / "overlays" / overlay_name(path, seen), overlay_png(image, res))

    run = predict_images(predictor, "anomaly", inputs, out, skip_bad=skip_bad, batch_size=batch_size,
                         on_result=on_result)
    click.echo(f"{run.n_predicted} image(s) predicted with the {predictor.runtime} model, {n_anomalous[0]} "
               f"anomalous -> {run.predictions}")
    echo_skipped(run.skipped)


@anomaly.command()
@export_options
def export(model, formats, out_dir):
    """Export checkpoint folder MODEL with pre- and post-processing inside (uint8 image in, results out)."""
    export_model("anomaly", model, out_dir, formats)
