"""`fovea caption fit|predict|export`: inspection captions ("a damaged red apple with a small bruise on the
left side") from a BLIP-style captioner trained on generated apples or on a captions CSV."""

from __future__ import annotations

from pathlib import Path

import click

from fovea.cli.common import export_model, export_options, load_task_predictor, predict_images, skip_bad_option


@click.group("caption", context_settings={"help_option_names": ["-h", "--help"]})
def caption() -> None:
    """Train, run and export image captioners (ITC + ITM + LM objectives). `predict` and exports decode greedily;
    Medusa decoding (same captions, fewer decoder passes) is a library feature, `fovea.nn.medusa`, measured by
    benchmarks/caption.py."""


@caption.command("fit")
@click.option("--captions", "captions_csv", type=click.Path(path_type=Path), default=None,
              help="CSV with columns image,caption (paths relative to it). Default: generated apples with captions "
                   "from their ground truth.")
@click.option("--n-images", default=600, show_default=True, type=int, help="Generated apples (without --captions).")
@click.option("--steps", default=800, show_default=True, type=int, help="Optimizer steps.")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--input-size", default=96, show_default=True, type=int, help="Side in px the model sees.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/caption"),
              show_default=True, help="Checkpoint folder (recipe.json + model.safetensors).")
def fit_cmd(captions_csv, n_images, steps, batch_size, input_size, seed, out_dir):
    """Train a captioner; writes a checkpoint folder that `fovea caption predict` and `fovea.load_predictor` open."""
    from fovea.caption.data import read_captions_csv
    from fovea.caption.predictor import CaptionPredictor
    from fovea.caption.train import CaptionTrainConfig, apple_caption_set, train_captioner
    from fovea.cli.progress import progress_bar

    samples = read_captions_csv(captions_csv) if captions_csv else apple_caption_set(n_images, seed, input_size)
    cfg = CaptionTrainConfig(steps=steps, batch=batch_size, seed=seed, input_size=input_size)
    with progress_bar() as progress:
        pipe, history = train_captioner(samples, cfg=cfg, progress=lambda s, r: progress("train", s + 1, steps))
    CaptionPredictor.from_pipeline(pipe).save(out_dir, {"train_images": len(samples), "steps": steps,
                                                        "final_loss": history[-1]})
    click.echo(f"captioner trained on {len(samples)} image(s), final losses "
               f"{ {k: round(v, 3) for k, v in history[-1].items() if k != 'step'} } -> {out_dir}")


@caption.command("predict")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/caption-predict"),
              show_default=True, help="Where predictions.jsonl goes.")
@click.option("--batch-size", default=16, show_default=True, type=int)
@skip_bad_option
def predict_cmd(model, inputs, out, batch_size, skip_bad):
    """Caption INPUTS (files, folders or quoted globs) with MODEL (a `caption fit` folder, .pt or .onnx)."""
    predictor = load_task_predictor("caption", model)
    run = predict_images(predictor, "caption", inputs, out, skip_bad=skip_bad, batch_size=batch_size,
                         on_result=lambda p, im, r: click.echo(f"{p}: {r.text}"))
    click.echo(f"{run.n_predicted} image(s) captioned with the {predictor.runtime} model -> {run.predictions}")


@caption.command("export")
@export_options
def export_cmd(model, formats, out_dir):
    """Export MODEL to TorchScript and/or ONNX (uint8 images in, caption token ids and log-probabilities out)."""
    export_model("caption", model, out_dir, formats)
