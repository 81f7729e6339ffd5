"""`fovea predict MODEL INPUTS... --engine local|ray`: batch inference for a model of any task.

Writes OUT/predictions.jsonl with one row per input in input order ({"task", "image", "result"},
or {"task", "image", "error"} for an unreadable image) and, with --parquet, predictions.parquet.
`--engine ray` runs Ray Data on a local instance or, with --address, on an existing cluster.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("predictions"),
              show_default=True, help="Where predictions.jsonl (and predictions.parquet) go.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: Ray Data map_batches over an actor pool.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Ray workers (one model copy each).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--address", default=None, help="Ray cluster to join (e.g. auto or ray://head:10001); "
                                                "default: start a local instance.")
@click.option("--parquet", is_flag=True, help="Also write predictions.parquet.")
def predict(model, inputs, out_dir, engine, workers, batch_size, address, parquet) -> None:
    """Predict every image of INPUTS (files, folders, quoted globs) with MODEL (checkpoint, .pt, .onnx)."""
    from fovea.serve.batch import predict_batch

    run = predict_batch(model, inputs, out_dir, engine=engine, num_workers=workers, batch_size=batch_size,
                        address=address, parquet=parquet)
    click.echo(f"{run.n_rows} rows for {run.n_inputs} images ({run.n_errors} unreadable, listed as error rows) "
               f"in {run.seconds:.1f} s on {engine}" + (f" with {workers} workers" if engine == "ray" else ""))
    for kind, path in run.files.items():
        click.echo(f"{kind}: {path}")
