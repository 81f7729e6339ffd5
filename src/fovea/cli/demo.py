"""`fovea demo`: the whole anomaly workflow on the embedded bricks data, offline, in minutes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Everything goes here: data/, model/, report.html, export/, predictions/.")
@click.option("--category", default="one_up", show_default=True,
              type=click.Choice(["one_up", "two_up", "three_up", "four_up"]), help="Bricks category.")
@click.option("--size", default=256, show_default=True, type=int, help="Generated image size in pixels.")
@click.option("--n-train", default=60, show_default=True, type=int, help="Normal training images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of data, splits and coreset.")
def demo(out, category, size, n_train, seed):
    """Generate bricks data, fit PatchCore on ImageNet features, test, report, export, predict."""
    from fovea import load_predictor
    from fovea.anomaly.report import overlay_png
    from fovea.anomaly.workflow import FitOptions, evaluate_and_report, fit_anomaly, write_jsonl
    from fovea.cli.progress import progress_bar
    from fovea.data import load_mvtec
    from fovea.io import read_image, write_image
    from fovea.synth.bricks import generate_bricks

    t_start = time.perf_counter()
    out = Path(out)
    data_root = out / "data"
    click.echo(f"[1/5] generating bricks/{category} ({size}px, seed {seed}) -> {data_root}")
    generate_bricks(data_root, category=category, n_train=n_train, n_test_good=40, n_test_bad=60, size=size,
                    seed=seed)
    splits = load_mvtec(data_root, category, val_split_ratio=0.5, seed=seed)
    click.echo(f"      train {len(splits.train)} normal, validation {len(splits.val)}, test {len(splits.test)}")

    click.echo("[2/5] fitting PatchCore on efficientnet_lite0 features (offline ImageNet weights)")
    options = FitOptions(model="patchcore", input_size=(256, 256),
                         model_options={"backbone": "efficientnet_lite0", "seed": seed})
    with progress_bar() as progress:
        fitted = fit_anomaly([s.path for s in splits.train], splits.val, options, out, progress=progress)
    ckpt = fitted.checkpoint
    click.echo(f"      fitted in {fitted.timings_s['fit']:.1f} s -> {ckpt}")

    click.echo("[3/5] testing on the held-out test split")
    with progress_bar() as progress:
        report = evaluate_and_report(ckpt, splits.test, out, progress=progress, data=str(data_root / category))
    metrics = report.metrics

    click.echo("[4/5] exporting TorchScript and ONNX (pre- and post-processing inside)")
    files = load_predictor(ckpt).export(out / "export")
    for fmt, path in files.items():
        click.echo(f"      {fmt}: {path}")

    click.echo("[5/5] predicting a few test images with the exported ONNX model")
    onnx = load_predictor(files["onnx"])
    picks = [s for s in splits.test if s.label == 0][:2] + [s for s in splits.test if s.label == 1][:3]
    results = []
    for s in picks:
        image = read_image(s.path)
        res = onnx.predict_one(image, str(s.path))
        results.append(res)
        write_image(out / "predictions" / f"{Path(s.path).parent.name}_{Path(s.path).stem}.png",
                    overlay_png(image, res))
        truth = "anomalous" if s.label else "normal"
        click.echo(f"      {Path(s.path).parent.name}/{Path(s.path).name}: score {res.score:.3f} "
                   f"-> {'ANOMALOUS' if res.label else 'normal'} (truth: {truth}), {len(res.boxes)} box(es)")
    write_jsonl(out / "predictions" / "predictions.jsonl", results)

    total = time.perf_counter() - t_start
    summary = {"category": category, "image_auroc": metrics.get("image_auroc"),
               "pixel_auroc": metrics.get("pixel_auroc"), "aupro": metrics.get("aupro"),
               "fit_seconds": fitted.timings_s["fit"], "total_seconds": total}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    click.echo("")
    click.echo(f"image AUROC {metrics.get('image_auroc', float('nan')):.4f} on bricks/{category} "
               f"(pixel AUROC {metrics.get('pixel_auroc', float('nan')):.4f}, AUPRO {metrics.get('aupro', float('nan')):.4f})")
    click.echo(f"report:      {report.paths['report']}")
    click.echo(f"checkpoint:  {ckpt}")
    click.echo(f"exports:     {out / 'export'}")
    click.echo(f"predictions: {out / 'predictions'}")
    click.echo(f"total time:  {total:.0f} s")
