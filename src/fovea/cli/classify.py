"""`fovea classify fit|test|predict|export`: image classification on your own folders.

`train` is a hidden alias of `fit`; predict writes OUT/predictions.jsonl ({"task", "image",
"result"} per line) like every task.
"""

from __future__ import annotations

from pathlib import Path

import click

from fovea.cli.common import (add_hidden_alias, echo_skipped, export_model, export_options, load_task_predictor,
                              predict_images, skip_bad_option)
from fovea.cli.progress import progress_bar


def _split_dir(data: Path, name: str) -> Path | None:
    d = data / name
    return d if d.is_dir() and any(p.is_dir() for p in d.iterdir()) else None


@click.group("classify", context_settings={"help_option_names": ["-h", "--help"]})
def classify() -> None:
    """Train, test, run and export image classifiers (any timm backbone, offline EfficientNet-Lite0 by default)."""


@classify.command("fit")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/classify"),
              show_default=True, help="Output folder: model.safetensors, recipe.json, curves.png, history.json, "
                                      "metrics.json, confusion_val.png, last.ckpt (resumable).")
@click.option("--val", "val_data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Validation set (same layouts as DATA). Default: DATA/val when DATA has train/ and val/, else "
                   "--val-fraction of DATA, stratified by class.")
@click.option("--val-fraction", default=0.2, show_default=True, type=float,
              help="Share of each class held out for validation when there is no validation set.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="Any timm model name; its classifier is replaced by a new head for your classes.")
@click.option("--weights", default="default", show_default=True,
              help="'default' = offline package weights > timm hub > error; 'random' = random init; or a file.")
@click.option("--input-size", default=224, show_default=True, type=int,
              help="Side in px the model sees; every image is resized to it (inside the model, also in exports).")
@click.option("--linear-probe", is_flag=True, help="Freeze the backbone (and its batch-norm statistics); train the head only.")
@click.option("--balanced", is_flag=True, help="Class-balanced sampling (each class drawn equally often, with replacement).")
@click.option("--no-augment", is_flag=True, help="Turn off the light augmentation (random resized crop, h-flip, brightness/contrast).")
@click.option("--epochs", default=10, show_default=True, type=int, help="Maximum number of epochs.")
@click.option("--batch-size", default=32, show_default=True, type=int,
              help="Global batch: 1 = stochastic, 0 = whole training set (batch gradient descent), else mini-batch.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True, help="Optimizer.")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Base learning rate.")
@click.option("--momentum", default=0.9, show_default=True, type=float, help="SGD momentum.")
@click.option("--nesterov", is_flag=True, help="SGD with Nesterov momentum.")
@click.option("--weight-decay", default=0.01, show_default=True, type=float, help="Weight decay (decoupled for AdamW).")
@click.option("--schedule", type=click.Choice(["none", "cosine", "step"]), default="cosine", show_default=True,
              help="LR schedule, evaluated every optimizer step.")
@click.option("--warmup-epochs", default=1, show_default=True, type=int, help="Linear LR warm-up length in epochs.")
@click.option("--grad-clip", default=None, type=float, help="Clip the global gradient L2 norm to this value.")
@click.option("--label-smoothing", default=0.0, show_default=True, type=float, help="Cross-entropy label smoothing.")
@click.option("--monitor", type=click.Choice(["val_acc", "val_loss"]), default="val_acc", show_default=True,
              help="Validation metric that picks the best epoch (val_acc: max, val_loss: min).")
@click.option("--patience", default=None, type=int, help="Early stopping: stop after this many epochs without improvement.")
@click.option("--precision", type=click.Choice(["32", "bf16"]), default="32", show_default=True,
              help="bf16 = bfloat16 autocast on CPU; refused on CPUs without avx512_bf16/amx_bf16.")
@click.option("--devices", default=1, show_default=True, type=int, help="CPU processes for data-parallel training (DDP, gloo).")
@click.option("--workers", default=0, show_default=True, type=int, help="Data-loader worker processes.")
@click.option("--max-time-s", default=None, type=float, help="Stop training after this many seconds (best epoch kept).")
@click.option("--resume", "resume_from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Continue an interrupted run from its last.ckpt (same --out and options).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of splits, initialisation, order and augmentation.")
@skip_bad_option
def fit_cmd(data, out_dir, val_data, val_fraction, backbone, weights, input_size, linear_probe, balanced, no_augment,
            epochs, batch_size, optimizer, lr, momentum, nesterov, weight_decay, schedule, warmup_epochs, grad_clip,
            label_smoothing, monitor, patience, precision, devices, workers, max_time_s, resume_from, seed, skip_bad):
    """Fine-tune (or linear-probe) a classifier on DATA.

    DATA is a folder with one sub-folder per class (DATA/<class>/*.png), a CSV of `path,label` rows
    (paths relative to the CSV), or a folder holding train/ (and val/) in that layout.
    """
    from fovea.classify.data import Augment
    from fovea.classify.train import train_classifier
    from fovea.engine.train import TrainConfig

    train_src = _split_dir(data, "train") if data.is_dir() else None
    if train_src is not None and val_data is None:
        val_data = _split_dir(data, "val")
    cfg = TrainConfig(optimizer=optimizer, lr=lr, momentum=momentum if optimizer == "sgd" else 0.9,
                      nesterov=nesterov, weight_decay=weight_decay, batch_size=batch_size, max_epochs=epochs,
                      schedule=schedule, warmup_epochs=warmup_epochs, grad_clip=grad_clip, monitor=monitor,
                      mode="max" if monitor == "val_acc" else "min", early_stopping_patience=patience,
                      precision=precision, seed=seed, devices=devices, num_workers=workers, resume_from=resume_from,
                      max_time_s=max_time_s)
    with progress_bar() as progress:
        res = train_classifier(train_src or data, out_dir, val_source=val_data, backbone=backbone, weights=weights,
                               input_size=input_size, linear_probe=linear_probe, balanced=balanced,
                               val_fraction=val_fraction, augment=None if no_augment else Augment(),
                               label_smoothing=label_smoothing, config=cfg, skip_bad=skip_bad, progress=progress)
    m = res.metrics
    click.echo(f"best epoch {res.best_epoch}: val accuracy {m['accuracy']:.4f} on {m['n']} images "
               f"({res.timings_s['train']:.0f} s). Checkpoint {res.checkpoint} (with curves.png, metrics.json)")
    echo_skipped(res.skipped)


add_hidden_alias(classify, fit_cmd, "train")


@classify.command("test")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where metrics.json and confusion.png go [default: MODEL's folder / test].")
@click.option("--topk", default=5, show_default=True, type=int, help="Also report top-k accuracy (when k < classes).")
@skip_bad_option
def test_cmd(model, data, out_dir, topk, skip_bad):
    """Accuracy, top-k, per-class precision/recall and a confusion-matrix PNG of MODEL on labelled DATA.

    MODEL is a `classify fit` folder, an exported .pt (TorchScript) or .onnx file. DATA is a folder
    of class folders, a `path,label` CSV, or a folder holding test/ in that layout (then test/ is used).
    """
    from fovea.classify.train import evaluate_classifier

    if data.is_dir() and _split_dir(data, "test") is not None:
        data = data / "test"
    out = out_dir or ((model if model.is_dir() else model.parent) / "test")
    with progress_bar() as progress:
        report = evaluate_classifier(load_task_predictor("classify", model), data, out, topk=(1, topk),
                                     skip_bad=skip_bad, progress=progress)
    m = report.metrics
    click.echo(f"accuracy {m['accuracy']:.4f} on {m['n']} images ({report.backend}); "
               f"macro precision {m['macro_precision']:.4f}, macro recall {m['macro_recall']:.4f}. Wrote {out}")
    echo_skipped(report.skipped)


@classify.command("predict")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/classify-predict"),
              show_default=True, help="Where predictions.jsonl goes.")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Images read and predicted at a time.")
@click.option("--zero-shot", "zero_shot", multiple=True,
              help="Zero-shot: a class description, repeated per class (--zero-shot 'good apple' --zero-shot "
                   "'bruised apple'); MODEL is then a two-tower folder from `fovea vl train`.")
@skip_bad_option
def predict_cmd(model, inputs, out, batch_size, zero_shot, skip_bad):
    """Classify INPUTS (files, folders or quoted glob patterns) with MODEL (a `classify fit` folder, .pt or .onnx).

    Writes OUT/predictions.jsonl, one {"task", "image", "result"} line per image; the result holds
    class_id, class_name, confidence and probs.
    """
    if zero_shot:
        from fovea.cli.label import zero_shot_teacher

        predictor = zero_shot_teacher(model, zero_shot)
    else:
        predictor = load_task_predictor("classify", model)
    run = predict_images(predictor, "classify", inputs, out, skip_bad=skip_bad, batch_size=batch_size)
    click.echo(f"{run.n_predicted} image(s) classified with the {predictor.runtime} model -> {run.predictions}")
    echo_skipped(run.skipped)


@classify.command("export")
@export_options
def export_cmd(model, formats, out_dir):
    """Export a trained classifier folder MODEL with its pre-processing (resize + normalise) inside the graph.

    The files take uint8 (B, H, W, 3) RGB of any size and return class probabilities (B, C).
    """
    export_model("classify", model, out_dir, formats)
