"""`fovea oilspill assess|compare|train`: oil-spill surveys from drone images."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from fovea.errors import ConfigError


@click.group("oilspill")
def oilspill() -> None:
    """Oil-spill assessment: areas, Bonn-code volume ranges, severity and response."""


@oilspill.command("assess")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--altitude-m", type=float, default=None, help="drone height above the sea (required)")
@click.option("--calib", type=click.Path(), default=None, help="camera model JSON/YAML (required)")
@click.option("--model", "model_path", default=None, help="segmentation model (folder, .pt or .onnx)")
@click.option("--masks", default=None, type=click.Path(exists=True, file_okay=False),
              help="folder of class-index masks with the images' file names (instead of --model)")
@click.option("--rules", default=None, help="rules YAML (default: the shipped Bonn-code rules)")
@click.option("--out", default="oilspill_report", show_default=True)
def assess(images, altitude_m, calib, model_path, masks, rules, out):
    """Assess a survey: writes OUT/report.md, OUT/assessment.json and OUT/overlays/."""
    from fovea.apps.oilspill.assess import assess_class_maps, calib_for, check_altitude, load_rules, segment_images
    from fovea.apps.oilspill.report import write_report
    from fovea.cli.common import list_inputs
    from fovea.io import read_image

    check_altitude(altitude_m)
    paths = list_inputs(images, skip_bad=False)
    imgs = [read_image(p) for p in paths]
    model = calib_for(calib, imgs, [str(p) for p in paths])
    if masks:
        import cv2

        maps = []
        for p in paths:
            mp = Path(masks) / (p.stem + ".png")
            m = cv2.imread(str(mp), cv2.IMREAD_UNCHANGED)
            if m is None:
                raise ConfigError(f"mask {mp} for {p} is missing or unreadable. Fix: one class-index PNG per image.")
            maps.append(np.asarray(m if m.ndim == 2 else m[..., 0]).astype(np.int64))
    elif model_path:
        from fovea.cli.common import load_task_predictor

        maps = segment_images(imgs, load_task_predictor("segment", model_path))
    else:
        raise ConfigError("no segmentation: pass --model (trained with `fovea oilspill train`) or --masks DIR.")
    a = assess_class_maps(maps, model, altitude_m, load_rules(rules), [p.name for p in paths])
    report = write_report(a, imgs, maps, out, [p.name for p in paths])
    click.echo(f"grade {a.grade} ({a.grade_name}); oil {a.oiled_area_m2:.1f} m2, volume "
               f"{a.volume_range_m3[0]:.3g}-{a.volume_range_m3[1]:.3g} m3")
    click.echo(f"response: {a.response}")
    click.echo(f"wrote {report}")


@oilspill.command("compare")
@click.argument("before", type=click.Path())
@click.argument("after", type=click.Path())
@click.option("--out", default=None, help="write the comparison markdown here")
def compare(before, after, out):
    """Compare two assessments (assessment.json files or report folders)."""
    from fovea.apps.oilspill.assess import SurveyAssessment, compare_surveys
    from fovea.apps.oilspill.report import comparison_markdown

    def load(p):
        p = Path(p)
        return SurveyAssessment.load(p / "assessment.json" if p.is_dir() else p)

    text = comparison_markdown(compare_surveys(load(before), load(after)), str(before), str(after))
    click.echo(text)
    if out:
        Path(out).write_text(text)


@oilspill.command("train")
@click.argument("out_dir")
@click.option("--epochs", default=12, show_default=True, help="Training epochs (12 is the recipe tested to keep areas within 5 %%).")
@click.option("--surveys", default=6, show_default=True, help="synthetic training surveys (4 images each)")
@click.option("--seed", default=0, show_default=True)
def train(out_dir, epochs, surveys, seed):
    """Train the oil-film segmenter on synthetic sea surveys (fovea.synth.sea)."""
    from fovea.apps.oilspill.train import train_oilspill_segmenter
    from fovea.cli.progress import progress_bar

    with progress_bar() as progress:
        result = train_oilspill_segmenter(out_dir, n_train_surveys=surveys, epochs=epochs, seed=seed,
                                          progress=progress)
    miou = result.metrics.get("val_miou")
    click.echo(f"model saved to {result.checkpoint}" + (f" (validation mean IoU {miou:.3f})" if miou is not None else ""))
