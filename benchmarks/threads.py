"""Prediction latency with 1 and 2 threads, idle and beside one busy process (issue 12, item 4).

A PatchCore model (offline EfficientNet-Lite0, 256 px) is fitted once on generated bricks images
and saved; each configuration then runs in a fresh process (OpenMP reads its settings when it
loads) that opens the checkpoint with `fovea.load_predictor` and times `predict_one` on the same
images. Configurations: torch threads 1 or 2 (with 2: thread policy fixed, or adaptive: fovea's predict governor
uses only the free cores, `fovea.engine.threads`); the OpenMP wait setting, given to each process in
its environment (the worker imports torch first): unset (libgomp's threads spin ~300,000 rounds
before they sleep), `OMP_WAIT_POLICY=PASSIVE` (they sleep at once) or a short spin
(`GOMP_SPINCOUNT=N`); the row marked "fovea default" is what `import fovea` sets when it comes
before torch. No other load, or one busy Python process (`while True: pass`) taking a core. The
baseline of each row is 1 thread under the same load and setting, measured in the same run.
Quick version: `--quick` (8 training images, 2 rounds; a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402

WORKER = r"""
import json, sys, time
import torch  # first: OpenMP reads the environment this process was given, not fovea's default
import fovea
import numpy as np, torch
from fovea.synth.bricks import render_bricks_scene
torch.set_num_threads(int(sys.argv[2]))
pred = fovea.load_predictor(sys.argv[1])
imgs = [render_bricks_scene("one_up", None, rng=1000 + i, size=256)[0] for i in range(8)]
for im in imgs[:3]:
    pred.predict_one(im)
lat = []
for r in range(int(sys.argv[3])):
    for im in imgs:
        t = time.perf_counter(); pred.predict_one(im); lat.append((time.perf_counter() - t) * 1e3)
from fovea.engine.threads import governor
g = governor()
print(json.dumps({"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                  "threads": torch.get_num_threads(), "changes": len(g.decisions)}))
"""


def fit_model(out: Path, n_train: int) -> Path:
    from fovea.cli.main import main as fovea_main
    from fovea.synth.bricks import generate_bricks

    data = out / "bricks"
    generate_bricks(data, "one_up", n_train=n_train, n_test_good=2, n_test_bad=2, seed=0)
    rc = fovea_main(["anomaly", "fit", str(data), "--category", "one_up", "--model", "patchcore",
                     "--out", str(out / "run"), "--no-test"])
    if rc != 0:
        raise SystemExit(f"fit failed with exit code {rc}")
    return out / "run" / "model"


POLICIES = {"unset": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin 10k": {"GOMP_SPINCOUNT": "10000"}, "spin 100k": {"GOMP_SPINCOUNT": "100000"}}


def policy_label(name: str) -> str:
    import fovea

    mark = " (fovea default)" if POLICIES[name] == fovea.OPENMP_DEFAULTS else ""
    return {"unset": "unset (libgomp: spin 300k, then sleep)"}.get(name, name) + mark


def measure(model: Path, threads: int, policy: str, busy: bool, rounds: int, thread_policy: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "FOVEA_THREADS")}
    env.update(POLICIES[policy], FOVEA_THREAD_POLICY=thread_policy)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", WORKER, str(model), str(threads), str(rounds)],
                             env=env, capture_output=True, text=True, check=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="passes over the 8 timed images")
    ap.add_argument("--train", type=int, default=20, help="training images of the fitted model")
    add_doc_args(ap, "threads", "2 rounds, 8 training images")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.train = 2, 8
    run = Run(args, full_command=".venv/bin/python benchmarks/threads.py")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = fit_model(Path(tmp), args.train)
        for busy in (False, True):
            for policy in POLICIES:
                one = measure(model, 1, policy, busy, args.rounds, "fixed")
                for tp in ("fixed", "adaptive"):
                    two = measure(model, 2, policy, busy, args.rounds, tp)
                    for n, r in ((1, one), (2, two))[0 if tp == "fixed" else 1:]:
                        label = "-" if n == 1 else tp + (" (fovea default)" if tp == "adaptive" else "")
                        rows.append(["one busy process added" if busy else "none added", policy_label(policy),
                                     n, label, r["threads"], r["changes"], f"{r['p50']:.1f}", f"{r['p95']:.1f}",
                                     f"{r['p50'] / one['p50']:.2f}"])
                        print(rows[-1], flush=True)
    body = table(["other load", "OpenMP wait setting", "threads (cap)", "thread policy",
                  "threads at the end", "count changes", "p50 ms", "p95 ms",
                  "p50 vs 1 thread (same load, wait setting)"], rows)
    body += ["", f"PatchCore predict_one at 256 px, {args.rounds} x 8 images after 3 warm-up calls, each row a "
             "fresh process; the busy process is a pure-Python loop started before and stopped after the row. "
             "Thread policy (`FOVEA_THREAD_POLICY`): fixed = torch's count always; adaptive = `fovea.engine.threads` "
             "sets the count before each batch to the cores the other processes left free over the last >= 0.1 s "
             "(from /proc/stat), at most the cap; 'count changes' = how often it changed it in the process."]
    run.write("Threads on a shared machine: predict with 1 and 2 threads", body)


if __name__ == "__main__":
    main()
