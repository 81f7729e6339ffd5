"""Batch inference: `fovea predict --engine local|ray` writes one row per input, in input order, each
equal to the in-process predictor's answer for that image (or an error row for a broken file)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import fovea
from fovea.cli.predict import predict
from fovea.errors import ConfigError, DataError
from fovea.io import read_image
from fovea.serve.batch import predict_batch

from _serve_helpers import png_bytes, textures

BROKEN = "04b.png"
pytestmark = pytest.mark.timeout(900)  # hang guard for the Ray test (pytest-timeout), not a speed target


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """9 images of two sizes and one truncated PNG (sorted between them)."""
    d = tmp_path_factory.mktemp("batch_in")
    for i, im in enumerate(textures(5, 32, 40, 1) + textures(4, 36, 28, 2)):
        (d / f"{i:02d}.png").write_bytes(png_bytes(im))
    good = png_bytes(textures(1, 32, 32, 3)[0])
    (d / BROKEN).write_bytes(good[: len(good) // 3])
    return d


def _check_rows(lines: list[str], folder, reference) -> None:
    names = sorted(p.name for p in folder.iterdir())
    rows = [json.loads(x) for x in lines]
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == names       # complete and in input order
    for r in rows:
        if r["image"].endswith(BROKEN):
            assert set(r) == {"task", "image", "error"} and "truncated" in r["error"]
            continue
        want = reference.predict_one(read_image(r["image"]))
        assert r["task"] == "classify" and r["result"]["class_name"] == want.class_name
        np.testing.assert_allclose(r["result"]["probs"], want.probs, atol=1e-5)


def test_local_engine_rows_and_parquet(model_dirs, folder, tmp_path):
    run = predict_batch(model_dirs["cls"], [folder], tmp_path, engine="local", batch_size=4, parquet=True)
    assert (run.n_inputs, run.n_rows, run.n_errors) == (10, 10, 1)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    _check_rows(lines, folder, fovea.load_predictor(model_dirs["cls"]))
    table = pq.read_table(tmp_path / "predictions.parquet").to_pylist()
    assert [t["image"] for t in table] == [json.loads(x)["image"] for x in lines]
    assert [t["error"] is not None for t in table] == [x.rsplit("/", 1)[-1].startswith(BROKEN) for x in
                                                       [json.loads(x)["image"] for x in lines]]


def test_cli_predict_local_and_bad_options(model_dirs, folder, tmp_path):
    res = CliRunner().invoke(predict, [str(model_dirs["cls"]), str(folder), "--out", str(tmp_path / "o"),
                                       "--batch-size", "3"])
    assert res.exit_code == 0, res.output
    assert "10 rows for 10 images (1 unreadable" in res.output
    _check_rows((tmp_path / "o" / "predictions.jsonl").read_text().splitlines(), folder,
                fovea.load_predictor(model_dirs["cls"]))
    with pytest.raises(ConfigError, match="--engine"):
        predict_batch(model_dirs["cls"], [folder], tmp_path, engine="spark")
    with pytest.raises(DataError):
        predict_batch(model_dirs["cls"], [tmp_path / "nothing_here"], tmp_path)


def test_ray_engine_equals_the_single_process_path(model_dirs, folder, tmp_path):
    # `fovea predict --engine ray` in a child process: Ray's threads and signal handlers never live in the
    # pytest process (an in-process ray.init/shutdown left it crashing in later tests)
    import subprocess
    import sys

    out = tmp_path / "ray"
    proc = subprocess.run([sys.executable, "-m", "fovea.cli.main", "predict", str(model_dirs["cls"]), str(folder),
                           "--engine", "ray", "--workers", "2", "--batch-size", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10 rows for 10 images (1 unreadable" in proc.stdout + proc.stderr
    _check_rows((out / "predictions.jsonl").read_text().splitlines(), folder, fovea.load_predictor(model_dirs["cls"]))
