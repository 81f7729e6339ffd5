"""Batch inference over a folder, in one process or scaled out on Ray Data; the same rows either way.

`predict_batch(model, inputs, out_dir, engine="local" | "ray")` writes OUT/predictions.jsonl (and
with `parquet=True` OUT/predictions.parquet) with exactly one row per input image, in input order:
`{"task", "image", "result"}` (the schema every `fovea <task> predict` writes) or, for an image
that cannot be read, `{"task", "image", "error"}`. Nothing is skipped silently: the error rows
are the listing.

On Ray: the image paths become a dataset (`ray.data.from_items`, ordered); `map_batches` runs a
`PredictorActor` per worker (an actor pool of `num_workers`), each loading the model once with
`fovea.load_predictor` (a checkpoint folder, or better an exported .onnx/.pt) and reading its
images itself with fovea's one decoder; `preserve_order` keeps the output in input order while it
streams to disk, so memory stays bounded for any number of images. The run connects to
`address` (an existing cluster, e.g. "ray://head:10001" or "auto") or starts a local instance.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from fovea.engine.results import PREDICTIONS_FILE, prediction_record
from fovea.errors import ConfigError, DataError, FoveaError

ENGINES = ("local", "ray")


def list_inputs(inputs: Sequence[str | Path]) -> list[str]:
    """Every image named by INPUTS (files, folders, globs) in order, as strings."""
    from fovea.io import list_images

    paths: list[str] = []
    for item in inputs:
        paths += [str(p) for p in list_images(item, check=False)]  # unreadable files become error rows
    if not paths:
        raise DataError(f"no images found in {list(map(str, inputs))}. Fix: pass image files or folders holding "
                        "PNG/JPEG/BMP/TIFF/WebP files")
    return paths


def predict_rows(predictor, paths: Sequence[str], indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per path, in order: {"idx", "record": JSON of the predictions.jsonl line or an error row}.

    Images of equal size go through `predictor.predict` together; an unreadable image gets its
    error row and does not stop the others.
    """
    from fovea.io import read_image

    indices = list(range(len(paths))) if indices is None else list(indices)
    task = getattr(predictor, "kind", "")
    rows: list[dict[str, Any] | None] = [None] * len(paths)
    good: list[tuple[int, Any]] = []
    for k, p in enumerate(paths):
        try:
            good.append((k, read_image(p)))
        except FoveaError as exc:
            rows[k] = {"idx": indices[k], "record": json.dumps({"task": task, "image": p, "error": str(exc)})}
    if good:
        results = predictor.predict([im for _, im in good], [paths[k] for k, _ in good])
        for (k, _), r in zip(good, results):
            rows[k] = {"idx": indices[k], "record": json.dumps(prediction_record(task, paths[k], r))}
    return rows  # type: ignore[return-value]


class PredictorActor:
    """Ray Data callable class: loads the model once per worker, predicts one batch of paths per call."""

    def __init__(self, model: str, threads: int = 1):
        import torch

        import fovea

        from fovea.engine.threads import set_policy

        torch.set_num_threads(max(1, threads))
        set_policy(cap=max(1, threads))  # the predict governor's cap, whichever thread Ray calls predict from
        self.predictor = fovea.load_predictor(model)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        rows = predict_rows(self.predictor, [str(p) for p in batch["path"]], [int(i) for i in batch["idx"]])
        return {"idx": np.array([r["idx"] for r in rows], np.int64),
                "record": np.array([r["record"] for r in rows], dtype=object)}


@dataclass
class BatchRun:
    """What a batch run wrote: rows (one per input), errors (rows with an error), seconds, files."""

    engine: str
    n_inputs: int
    n_rows: int
    n_errors: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    workers: int = 1
    first_row_s: float = 0.0      # when the first row was written (model loading, worker start-up)


def predict_batch(model: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *, engine: str = "local",
                  num_workers: int = 2, batch_size: int = 16, address: str | None = None, parquet: bool = False,
                  threads_per_worker: int = 1) -> BatchRun:
    """Predict every image of INPUTS with MODEL into OUT (see the module docstring)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: use one of {ENGINES}")
    if num_workers < 1 or batch_size < 1:
        raise ConfigError(f"--workers {num_workers} and --batch-size {batch_size} must be >= 1")
    model = str(model)
    if not Path(model).exists():
        raise ConfigError(f"model {model} does not exist. Fix: pass a checkpoint folder, a .pt or an .onnx file")
    paths = list_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if engine == "local":
        rows = _local_rows(model, paths, batch_size)
    else:
        rows = _ray_rows(model, paths, batch_size, num_workers, address, threads_per_worker)
    files, n_rows, n_err, t_first = _write(rows, paths, out, parquet)
    return BatchRun(engine, len(paths), n_rows, n_err, time.perf_counter() - t0, files,
                    1 if engine == "local" else num_workers, t_first - t0)


def _local_rows(model: str, paths: list[str], batch_size: int) -> Iterator[dict]:
    import fovea

    predictor = fovea.load_predictor(model)
    for s in range(0, len(paths), batch_size):
        yield from predict_rows(predictor, paths[s:s + batch_size], range(s, min(s + batch_size, len(paths))))


def _ray_rows(model: str, paths: list[str], batch_size: int, num_workers: int, address: str | None,
              threads: int) -> Iterator[dict]:
    try:
        import ray
        from ray.data import ActorPoolStrategy, DataContext
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray Data ({exc}). Fix: pip install 'fovea[ray]' "
                          "(ray[data]), or use --engine local") from exc

    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=max(num_workers, 1), include_dashboard=False, log_to_driver=False)
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    items = [{"idx": i, "path": os.path.abspath(p)} for i, p in enumerate(paths)]
    blocks = max(num_workers * 4, min(len(items) // max(batch_size, 1), 1000), 1)
    ds = ray.data.from_items(items, override_num_blocks=min(blocks, len(items)))
    ds = ds.map_batches(PredictorActor, fn_constructor_args=(model, threads), batch_size=batch_size,
                        compute=ActorPoolStrategy(size=num_workers), num_cpus=1, batch_format="numpy")
    for row in ds.iter_rows():
        yield {"idx": int(row["idx"]), "record": row["record"]}


def _write(rows: Iterator[dict], paths: list[str], out: Path, parquet: bool
           ) -> tuple[dict[str, Path], int, int, float]:
    """Stream rows to predictions.jsonl (and parquet), checking each input appears once, in order.
    Returns (files, rows, error rows, perf_counter time of the first row)."""
    target = out / PREDICTIONS_FILE
    n = n_err = 0
    t_first = 0.0
    writer = None
    records: list[str] | None = [] if parquet else None
    with target.open("w") as fh:
        for row in rows:
            if row["idx"] != n:
                raise DataError(f"batch output row {n} is input {row['idx']} (expected {n}): the engine lost, "
                                "repeated or reordered rows; predictions.jsonl is incomplete")
            rec = row["record"]
            if n == 0:
                t_first = time.perf_counter()
            fh.write(rec + "\n")
            n_err += "error" in json.loads(rec)
            n += 1
            if records is not None:
                records.append(rec)
                if len(records) >= 10_000:
                    writer = _parquet_chunk(writer, records, out)
                    records = []
    if n != len(paths):
        raise DataError(f"batch output has {n} rows for {len(paths)} inputs; predictions.jsonl is incomplete")
    files = {"jsonl": target}
    if records is not None:
        writer = _parquet_chunk(writer, records, out)
        writer.close()
        files["parquet"] = out / "predictions.parquet"
    return files, n, int(n_err), t_first


def _parquet_chunk(writer, records: list[str], out: Path):
    """Append rows (task, image, result JSON, error) to OUT/predictions.parquet."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ConfigError(f"--parquet needs pyarrow ({exc}). Fix: pip install pyarrow (it comes with "
                          "fovea[ray]), or leave --parquet out: predictions.jsonl is always written") from exc

    dicts = [json.loads(r) for r in records]
    table = pa.table({"task": [d["task"] for d in dicts], "image": [d["image"] for d in dicts],
                      "result": [json.dumps(d["result"]) if "result" in d else None for d in dicts],
                      "error": [d.get("error") for d in dicts]})
    if writer is None:
        writer = pq.ParquetWriter(out / "predictions.parquet", table.schema)
    writer.write_table(table)
    return writer
