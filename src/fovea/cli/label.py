"""`fovea label`: let a teacher pre-label a folder, review, then distil a small student; `fovea vl`:
train the two-tower vision-language model that zero-shot teachers use."""

from __future__ import annotations

from pathlib import Path

import click

from fovea.cli.common import echo_skipped
from fovea.cli.progress import progress_bar


def zero_shot_teacher(vl_model: Path | None, classes: tuple[str, ...]):
    """A zero-shot classify predictor over `classes` from a two-tower folder (default: the cached trained one)."""
    from fovea.models.vl.two_tower import load_two_tower
    from fovea.vl.pretrained import trained_two_tower
    from fovea.vl.zeroshot import zero_shot_predictor

    model = load_two_tower(vl_model) if vl_model is not None else trained_two_tower()
    return zero_shot_predictor(model, classes, source=f"zero-shot {str(vl_model or 'default two-tower')}")


@click.group("label", context_settings={"help_option_names": ["-h", "--help"]})
def label() -> None:
    """Auto-label a folder with a teacher (zero-shot prompts, trained models, an ensemble) and distil a student."""


@label.command("run")
@click.argument("folder", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/label"),
              show_default=True, help="Where labels.csv, review.html and soft_labels.npy go.")
@click.option("--zero-shot", "classes", multiple=True,
              help="A class description for the zero-shot teacher; repeat per class (-z 'good apple' -z 'bruised apple').")
@click.option("--vl-model", type=click.Path(exists=True, path_type=Path), default=None,
              help="Two-tower folder for --zero-shot (default: the model trained on generated captions, cached).")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A trained classify model (folder, .pt, .onnx); repeat for an ensemble (probabilities averaged).")
@click.option("--recursive", is_flag=True, help="Also label images in sub-folders.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted in the report) instead of failing.")
def run_cmd(folder, out_dir, classes, vl_model, teachers, recursive, skip_bad):
    """Label every image of FOLDER; write OUT/labels.csv (path,label,confidence,...), OUT/review.html
    (least certain first) and OUT/soft_labels.npy."""
    from fovea.classify.predictor import load_predictor
    from fovea.label.autolabel import EnsembleTeacher, label_folder

    if bool(classes) == bool(teachers):
        raise click.UsageError("give either --zero-shot class descriptions (two or more) or --teacher models.")
    teacher = zero_shot_teacher(vl_model, classes) if classes else \
        EnsembleTeacher([load_predictor(t) for t in teachers])
    with progress_bar() as progress:
        run = label_folder(teacher, folder, out_dir, recursive=recursive, skip_bad=skip_bad, progress=progress)
    counts = {c: int((run.probs.argmax(1) == i).sum()) for i, c in enumerate(run.class_names)}
    click.echo(f"{len(run.paths)} images labelled ({counts}); {run.seconds_per_image * 1000:.1f} ms/image. "
               f"Review {run.html}, labels {run.csv}")
    echo_skipped(run.skipped)


@label.command("distill")
@click.argument("labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/student"),
              show_default=True, help="The student's classify checkpoint folder.")
@click.option("--student", default="cloformer_xxs", show_default=True, help="Any timm backbone name.")
@click.option("--weights", default="random", show_default=True, help="'random', 'default' (offline package) or a file.")
@click.option("--input-size", default=48, show_default=True, type=int,
              help="Side in px the student sees (48: the benchmarked recipe, docs/benchmarks/label.md).")
@click.option("--temperature", default=4.0, show_default=True, type=float, help="Distillation temperature T.")
@click.option("--alpha", default=0.7, show_default=True, type=float, help="Weight of the soft (KL) term; 1-alpha on hard labels.")
@click.option("--consistency", default=1.0, show_default=True, type=float,
              help="Weight of the two-view consistency term (0: one augmented view per image and step).")
@click.option("--min-crop", default=0.7, show_default=True, type=float,
              help="Smallest area fraction a random resized crop keeps.")
@click.option("--epochs", default=40, show_default=True, type=int, help="Maximum number of epochs.")
@click.option("--lr", default=2e-3, show_default=True, type=float, help="Learning rate (AdamW, cosine).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of split, init and order.")
def distill_cmd(labels_csv, out_dir, student, weights, input_size, temperature, alpha, consistency, min_crop, epochs,
                lr, seed):
    """Train a small STUDENT classifier on LABELS_CSV (from `fovea label run`, reviewed or not).

    The defaults are the recipe benchmarks/label.py measures (its `kd_cons` student)."""
    from dataclasses import replace

    from fovea.errors import ConfigError
    from fovea.label.distill import DEFAULT_AUGMENT, default_train_config, distill_student

    if not 0 < min_crop <= 1:
        raise ConfigError(f"--min-crop {min_crop} must be in (0, 1]. Fix: e.g. --min-crop 0.7.")
    augment = replace(DEFAULT_AUGMENT, scale=(min_crop, 1.0))
    s = distill_student(labels_csv, out_dir, student=student, weights=weights, input_size=input_size,
                        temperature=temperature, alpha=alpha, consistency=consistency, augment=augment,
                        config=default_train_config(epochs, lr, seed))
    click.echo(f"student {student} at {input_size} px: val accuracy vs the labels {s['best_val_acc']:.4f} "
               f"(epoch {s['best_epoch']}, {s['train_seconds']:.0f} s). Checkpoint {out_dir}")


@label.command("export")
@click.argument("student_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the files (default: STUDENT_DIR/export).")
@click.option("--name", default="student", show_default=True, help="File stem.")
def export_cmd(student_dir, out_dir, name):
    """Fast exact ONNX export of a CloFormer STUDENT_DIR (from `fovea label distill`).

    Writes NAME.onnx (export fusions, folded norm affines, resize before the layout transpose: portable, the same
    numbers as the checkpoint) and
    NAME.cpu.onnx (onnxruntime's level-ALL graph for THIS CPU with the norms on its NCHWc layout; load it with
    graph optimisation disabled). The checkpoint is not changed."""
    from fovea.classify.predictor import load_predictor
    from fovea.label.export import fast_student_export

    out_dir = out_dir or student_dir / "export"
    path, cpu, moved = fast_student_export(load_predictor(student_dir), out_dir, name)
    click.echo(f"wrote {path} and {cpu} ({moved} norms on the NCHWc layout)")


@click.group("vl", context_settings={"help_option_names": ["-h", "--help"]})
def vl() -> None:
    """Vision-language: train the two-tower model used by zero-shot classification and labelling."""


@vl.command("train")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--captions", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV of `path,caption` rows (several per image allowed). Default: generated captions.")
@click.option("--epochs", default=80, show_default=True, type=int, help="Epochs over the pairs.")
@click.option("--loss", type=click.Choice(["clip", "siglip"]), default="clip", show_default=True, help="Contrastive loss.")
def vl_train_cmd(out_dir, captions, epochs, loss):
    """Train projections of Lite0 + MiniLM (locked towers) on image-caption pairs; write OUT_DIR."""
    from fovea.engine.train import TrainConfig
    from fovea.models.vl.two_tower import TwoTowerConfig
    from fovea.vl.pretrained import DEFAULT_RECIPE
    from fovea.vl.train import read_captions_csv, train_two_tower

    if captions is not None:
        samples = read_captions_csv(captions)
    else:
        from fovea.synth.captions import make_caption_samples

        samples = make_caption_samples(DEFAULT_RECIPE.n_per_domain, DEFAULT_RECIPE.image_px, DEFAULT_RECIPE.seed)
    cfg = TrainConfig(lr=3e-3, batch_size=128, max_epochs=epochs, schedule="cosine")
    _, s = train_two_tower(samples, out_dir, config=TwoTowerConfig(loss=loss), train=cfg)
    click.echo(f"trained on {s['n_train']} images in {s['cache_s'] + s['fit_s']:.0f} s -> {s['out_dir']}")
