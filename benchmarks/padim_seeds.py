"""PaDiM's channel rule: the non-random rules against random subsets over several seeds, fovea and Anomalib.

PaDiM keeps `n_features` (100) of the concatenated stages' channels. The paper and Anomalib draw
them at random, which makes image AUROC depend on the seed. fovea's default rule is
"low_variance" (the channels with the smallest within-position variance over the first 32 training
images); "variance" takes the largest, "stride" evenly spaced channels. This script refits fovea's PaDiM on the same splits
and images as a finished `benchmarks/anomaly.py` run (everything else as there: Lite0, 256 px,
sigma-4 smoothed max as image score) with:

- each non-random rule (one fit each);
- the "random" rule for subset seeds 0..S-1 (fovea's draw, a seeded torch.randperm);
- Anomalib's own draws for seeds 0..S-1: the `idx` buffer Anomalib 2.7's Padim gets after
  `seed_everything(seed)` (its random-init backbone consumes the torch RNG first), read in
  `benchmarks/.venv-anomalib` by building the model exactly as `_anomalib_child.py` does; fovea's PaDiM
  is then fitted with that subset. The seed-0 draw is checked against the checkpoint of the real
  Anomalib run, and the table shows that run's AUROC beside fovea's with the same subset (equal when
  the two PaDiMs agree).

Data sets without a finished Anomalib run in OUT (e.g. bricks categories the default rule was not
chosen on): `--generate` creates them as `benchmarks/anomaly.py` would (same sizes, split and seed) and
writes the job file Anomalib's draws are read from; only the check against a real Anomalib run is then
missing.

Usage (after `benchmarks/anomaly.py --models padim --datasets brick grass gravel --out OUT`):

    .venv/bin/python benchmarks/padim_seeds.py --bench-out OUT            # -> docs/benchmarks/padim_seeds.md
    .venv/bin/python benchmarks/padim_seeds.py --bench-out OUT --quick    # grass only, 2 seeds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / "benchmarks" / ".venv-anomalib" / "bin" / "python"

_DRAWS = """
import json, sys
sys.path.insert(0, {bench!r})
from lightning.pytorch import seed_everything
from _anomalib_child import _build_model
job = json.load(open({job!r}))
out = {{}}
for seed in {seeds!r}:
    seed_everything(seed, workers=True)
    out[seed] = _build_model(job).model.idx.tolist()
print("DRAWS " + json.dumps(out))
"""


def anomalib_draws(job_file: Path, seeds: list[int]) -> dict[int, torch.Tensor]:
    """Anomalib's channel subset for each seed, as its Padim draws it (in the Anomalib venv)."""
    code = _DRAWS.format(bench=str(ROOT / "benchmarks"), job=str(job_file), seeds=seeds)
    proc = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True,
                          env={"PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("DRAWS ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"reading Anomalib's draws failed:\n{proc.stderr[-2000:]}")
    return {int(k): torch.tensor(v) for k, v in json.loads(line[0][6:]).items()}


def saved_subset(jobs: Path, ds: str):
    """The `idx` buffer of the real Anomalib PaDiM run on `ds` (its checkpoint), if saved."""
    ckpts = sorted((jobs / f"{ds}_padim_anomalib_results").rglob("model.ckpt"))
    if not ckpts:
        return None
    return torch.load(ckpts[-1], map_location="cpu", weights_only=True)["state_dict"]["model.idx"].clone()


class CachedExtractor(torch.nn.Module):
    """The backbone's feature maps of each input tensor, computed once: every fit below sees the same
    preprocessed tensors, so only the channel subset and the Gaussians differ between fits."""

    def __init__(self, extractor: torch.nn.Module):
        super().__init__()
        self.inner = extractor
        self.channels = extractor.channels
        self.cache: dict[int, list[torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        key = x.data_ptr()
        if key not in self.cache:
            self.cache[key] = self.inner(x)
        return self.cache[key]


class Split:
    """Preprocessed train batches and test images of one data set of the anomaly benchmark run."""

    def __init__(self, job: dict):
        from fovea.anomaly.models import build_model
        from fovea.anomaly.pipeline import AnomalyPipeline
        from fovea.io import read_image

        self.job = job
        self.input_size = tuple(job["input_size"])
        pre = AnomalyPipeline(torch.nn.Identity(), self.input_size)
        bs = int(job["batch_size"])
        with torch.no_grad():
            xs = [pre.preprocess(torch.from_numpy(np.array(read_image(p)))[None]) for p in job["train_paths"]]
            self.test_x = [pre.preprocess(torch.from_numpy(np.array(read_image(p)))[None]) for p in job["test_paths"]]
        self.batches = [torch.cat(xs[i:i + bs]) for i in range(0, len(xs), bs)]
        self.labels = np.array([0 if Path(p).parent.name == "good" else 1 for p in job["test_paths"]])
        self.extractor = CachedExtractor(build_model("padim", backbone=job["backbone"]).extractor)

    def auroc(self, subset: torch.Tensor | None = None, **options) -> float:
        """Fit fovea's PaDiM (subset: fixed channel indices) and return the test image AUROC (the image
        score of `AnomalyPipeline.raw`: the model's score on the preprocessed image)."""
        from fovea.anomaly.models import build_model
        from fovea.engine.metrics import auroc

        opts = {"backbone": self.job["backbone"], "n_features": self.job["n_features"], "weights": "random", **options}
        model = build_model("padim", **opts)
        model.extractor = self.extractor  # the real ImageNet backbone's features, cached
        if subset is not None:
            model.config.channel_rule = "random"  # keep the given indices (the rule only acts in fit)
            model.channel_index = subset.sort().values
        model.eval()
        with torch.no_grad():
            model.fit(self.batches)
            scores = np.array([float(model(x)[0][0]) for x in self.test_x])
        return auroc(scores, self.labels)


def generated_job(out: Path, ds: str, seed: int = 0) -> Path:
    """Generate data set `ds` under OUT like `benchmarks/anomaly.py` (FULL sizes) and write its PaDiM job file."""
    import anomaly as A

    s = A.prepare_datasets(out, [ds], A.FULL, seed)[0]
    job = {"name": ds, "model": "padim", "seed": seed, "threads": 1, "batch_size": 8, "input_size": [256, 256],
           "warmup": 3, "backbone": A.BACKBONE, "layers": [A.TIMM_MODULES[i] for i in A.MODELS["padim"]["layers"]],
           "split_dir": str(s["split_dir"]), "train_paths": [str(x.path) for x in s["train"]],
           "val": [[str(x.path), int(x.label), str(x.mask_path) if x.mask_path else None] for x in s["val"]],
           "test_paths": [str(x.path) for x in s["test"]], "n_features": A.MODELS["padim"]["n_features"]}
    path = out / "jobs" / f"{ds}_padim_anomalib_job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, indent=1))
    return path


def anomalib_run_auroc(results: dict, ds: str) -> float:
    for r in results.get("rows", []):
        if r.get("dataset") == ds and r.get("model") == "padim" and r.get("side") == "anomalib":
            return float(r["image_auroc"])
    return float("nan")


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-out", default=str(ROOT / "runs" / "bench_anomaly"), help="OUT of a finished anomaly.py run")
    ap.add_argument("--datasets", nargs="*", default=["brick", "grass", "gravel"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--generate", action="store_true",
                    help="generate data sets that have no job file in --bench-out (no real Anomalib run to check)")
    ap.add_argument("--data-seed", type=int, default=0,
                    help="with --generate: generator seed (1+ gives other images of the same categories)")
    ap.add_argument("--tag", default=None, help="name of the doc block (a second block keeps the first one)")
    add_doc_args(ap, "padim_seeds", "grass only, 2 seeds")
    args = ap.parse_args()
    if args.quick:
        args.datasets, args.seeds = ["grass"], 2
    torch.set_num_threads(args.threads)
    run = Run(args, full_command=f".venv/bin/python benchmarks/padim_seeds.py --bench-out {args.bench_out}")
    jobs = Path(args.bench_out) / "jobs"
    res_file = Path(args.bench_out) / "results.json"
    results = json.loads(res_file.read_text()) if res_file.is_file() else {}
    seeds = list(range(args.seeds))
    rows, checks, summary, wins = [], [], [], []
    for ds in args.datasets:
        print(f"{ds} ...", flush=True)
        job_file = jobs / f"{ds}_padim_anomalib_job.json"
        if not job_file.is_file() and args.generate:
            job_file = generated_job(Path(args.bench_out).resolve(), ds, args.data_seed)
        split = Split(json.loads(job_file.read_text()))
        draws = anomalib_draws(job_file, seeds)
        saved = saved_subset(jobs, ds)
        actual = anomalib_run_auroc(results, ds)
        variance = split.auroc(channel_rule="variance")
        low = split.auroc(channel_rule="low_variance")
        stride = split.auroc(channel_rule="stride")
        fovea_random = [split.auroc(channel_rule="random", seed=s) for s in seeds]
        anomalib_subsets = [split.auroc(subset=draws[s]) for s in seeds]
        same_draw = saved is not None and torch.equal(saved.sort().values, draws[0].sort().values)
        if saved is None:
            checks.append([ds, "no Anomalib run here (data generated)", f"{anomalib_subsets[0]:.3f}", "-"])
        else:
            checks.append([ds, "yes" if same_draw else "**NO**", f"{anomalib_subsets[0]:.3f}", f"{actual:.3f}"])
        rows.append([ds, f"{variance:.3f}", f"{low:.3f}", f"{stride:.3f}", spread(fovea_random), spread(anomalib_subsets)])
        summary.append((variance, low, stride, float(np.mean(fovea_random)), float(np.mean(anomalib_subsets))))
        wins.append((sum(low >= v for v in fovea_random), sum(low >= v for v in anomalib_subsets)))
        print(rows[-1], checks[-1], flush=True)
        print(f"fovea random per seed: {[round(v, 3) for v in fovea_random]}; Anomalib draws per seed: "
              f"{[round(v, 3) for v in anomalib_subsets]}", flush=True)
    n_bad = int(split.labels.sum())
    body = table(["data set", "variance rule", "low_variance rule", "stride rule", f"random, fovea seeds 0-{seeds[-1]}: mean (min-max)",
                  f"random, Anomalib's draws for seeds 0-{seeds[-1]}: mean (min-max)"], rows)
    means = np.array(summary).mean(0) if summary else []
    if len(means):
        body += ["", f"Mean over the data sets: variance {means[0]:.3f}, low_variance {means[1]:.3f}, stride "
                 f"{means[2]:.3f}, fovea random {means[3]:.3f}, Anomalib's draws {means[4]:.3f}."]
        body += ["", "low_variance (the default) >= the random subset, per data set (of " + str(len(seeds)) + " seeds, "
                 "fovea's draws / Anomalib's draws): " + "; ".join(f"{ds} {a}/{b}" for ds, (a, b) in
                                                                    zip(args.datasets, wins)) + "."]
    body += ["", f"Image AUROC of fovea's PaDiM (Lite0, 256 px, 100 channels, sigma-4 smoothed max), on the test images of "
             f"`{args.bench_out}` ({len(split.labels)} per data set, {n_bad} anomalous). 'Anomalib's draws' = the channel "
             "subsets Anomalib 2.7's Padim takes for those seeds, fitted by fovea's PaDiM; check below:", ""]
    body += table(["data set", "seed-0 draw = the real Anomalib run's saved idx", "fovea with that subset",
                   "the real Anomalib run (seed 0)"], checks)
    run.write("PaDiM: channel rule vs random subsets", body, tag=args.tag)


if __name__ == "__main__":
    main()
