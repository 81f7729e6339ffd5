"""Did the task layer slow prediction down? Old per-task predictor (commit a0adeaf) vs the task layer.

One PatchCore model is fitted by the OLD code (`fovea anomaly fit`, 256 px, offline EfficientNet-Lite0)
and saved in the old checkpoint layout; the old code opens it with `AnomalyPredictor.load`, the
current code with `fovea.load_predictor` (which reads the old layout). Both time `predict_one` on
the same generated bricks images, each in a fresh process with one torch thread, old and new
alternating; the old code is the baseline. The scores of both are compared too.
The old code comes from a git worktree of a0adeaf (made on first use, outside the repository).
Quick version: `--quick` (8 training images, 2 rounds, 2 pairs; a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import ROOT, Run, add_doc_args, table  # noqa: E402

OLD_REV = "a0adeaf"
WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
which, model, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
from fovea.synth.bricks import render_bricks_scene
if which == "old":
    from fovea.anomaly.predictor import AnomalyPredictor
    pred = AnomalyPredictor.load(model)
else:
    import fovea
    pred = fovea.load_predictor(model)
imgs = [render_bricks_scene("one_up", None, rng=1000 + i, size=256)[0] for i in range(8)]
scores = [float(pred.predict_one(im).score) for im in imgs]
lat = []
for r in range(rounds):
    for im in imgs:
        t = time.perf_counter(); pred.predict_one(im); lat.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "scores": scores}))
"""


def old_source(path: Path) -> Path:
    if not (path / "src" / "fovea").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), OLD_REV], check=True)
    return path / "src"


def run_worker(which: str, src: Path, model: Path, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", WORKER, which, str(model), str(rounds)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--old", type=Path, default=Path(tempfile.gettempdir()) / f"fovea_{OLD_REV}")
    ap.add_argument("--train", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="passes over the 8 timed images per process")
    ap.add_argument("--pairs", type=int, default=3, help="old/new process pairs (alternating)")
    add_doc_args(ap, "predict_old_new", "8 training images, 2 rounds, 2 pairs")
    args = ap.parse_args()
    if args.quick:
        args.train, args.rounds, args.pairs = 8, 2, 2
    run = Run(args, full_command=".venv/bin/python benchmarks/predict_old_new.py")
    old_src, new_src = old_source(args.old), ROOT / "src"
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(old_src), "OMP_NUM_THREADS": "1"}
        gen = (f"from fovea.synth.bricks import generate_bricks; "
               f"generate_bricks({str(data)!r}, 'one_up', n_train={args.train}, n_test_good=2, n_test_bad=2)")
        subprocess.run([sys.executable, "-c", gen], env=env, check=True)
        subprocess.run([sys.executable, "-m", "fovea.cli.main", "anomaly", "fit", str(data), "--category", "one_up",
                        "--model", "patchcore", "--out", str(out), "--no-test"], env=env, check=True,
                       capture_output=True)
        model = out / "model"
        res = {"old": [], "new": []}
        for _ in range(args.pairs):
            res["old"].append(run_worker("old", old_src, model, args.rounds))
            res["new"].append(run_worker("new", new_src, model, args.rounds))
    rows = []
    base = statistics.median(r["p50"] for r in res["old"])
    for which, label in (("old", f"old per-task predictor ({OLD_REV}, baseline)"),
                         ("new", "task layer: fovea.load_predictor")):
        p50 = statistics.median(r["p50"] for r in res[which])
        p95 = statistics.median(r["p95"] for r in res[which])
        rows.append([label, f"{p50:.1f}", f"{p95:.1f}", f"{p50 / base:.2f}"])
    diff = max(abs(a - b) for a, b in zip(res["old"][0]["scores"], res["new"][0]["scores"]))
    body = table(["predictor", "p50 ms", "p95 ms", "p50 vs old"], rows)
    body += ["", f"PatchCore fitted by the old code on {args.train} bricks one_up images (256 px); predict_one on 8 "
             f"other images, {args.rounds} rounds per process, median over {args.pairs} alternating process pairs, "
             f"1 thread. Largest score difference old vs new on the same images: {diff:.2e}."]
    run.write("Prediction latency: old per-task predictor vs the task layer", body)


if __name__ == "__main__":
    main()
