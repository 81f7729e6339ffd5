"""fovea vs Anomalib 2.7 by training-set size: PatchCore and PaDiM at 24, 50, 100, 200 images (fovea alone at 400).

Same protocol as `benchmarks/anomaly.py` (whose job runner, data layout, weights check and metrics
this script reuses): generated data at 256 px, ImageNet EfficientNet-Lite0 on both sides, one
process per (side, data set, model, size) so peak RSS is per job, one torch thread, sides alternating
who goes first. Per data set one generation with the largest training count; each size takes the
first N training images, and every size shares the same validation and test images. An Anomalib job
past --anomalib-timeout-min (30) is stopped and reported as "> 30 min" (it is not retried at larger
sizes). Writes the table to docs/benchmarks/anomaly_scaling.md and a log-log PNG of fit and
predict time against training images beside it.

    .venv/bin/python benchmarks/anomaly_scaling.py --quick   # 24 and 50 images, one_up + brick
    .venv/bin/python benchmarks/anomaly_scaling.py           # 24/50/100/200 (+ fovea 400), one_up + brick

When the whole run does not fit in one sitting, the sides can run as two invocations on the same
--out (first `--side anomalib`, which generates the data and split folders, then `--side fovea`);
each keeps its own results file and the table merges them, with a line per side saying when its
jobs ran and under which load.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anomaly as A  # noqa: E402
from _doc import DOCS, Run, add_doc_args, table  # noqa: E402

TEST_GOOD, TEST_BAD = 16, 24


def prepare(out: Path, name: str, n_train: int, seed: int):
    """Generate `name` with n_train normal training images; return its fovea splits."""
    from fovea.data import load_mvtec
    from fovea.synth.bricks import generate_bricks
    from fovea.synth.textures import generate_textures

    kind = "bricks" if name in A.BRICKS else "texture"
    root = out / "data" / kind
    if not (root / name / "train").is_dir():
        (generate_bricks if kind == "bricks" else generate_textures)(root, name, n_train, TEST_GOOD, TEST_BAD, 256, seed)
    return load_mvtec(root, name, val_split_ratio=0.5, seed=seed), kind


def make_job(name: str, model: str, splits, split_dir: Path, weights: Path, ref: Path, args) -> dict:
    return {"name": name, "model": model, "seed": args.seed, "threads": args.threads, "batch_size": 8,
            "input_size": [256, 256], "warmup": 3, "backbone": A.BACKBONE,
            "layers": [A.TIMM_MODULES[i] for i in A.MODELS[model]["layers"]], "weights": str(weights),
            "reference": str(ref), "split_dir": str(split_dir),
            "train_paths": [str(s.path) for s in splits.train],
            "val": [[str(s.path), int(s.label), str(s.mask_path) if s.mask_path else None] for s in splits.val],
            "test_paths": [str(s.path) for s in splits.test],
            **{k: v for k, v in A.MODELS[model].items() if k != "layers"}}


def results_path(out: Path, side: str) -> Path:
    """Where one invocation keeps its rows: `scaling_results.json` for both sides, else one file per side."""
    return out / ("scaling_results.json" if side == "both" else f"scaling_results_{side}.json")


def load_rows(out: Path) -> list[dict]:
    """Rows of every results file in OUT (both-sides run and per-side runs); a later file wins on a key."""
    merged: dict[tuple, dict] = {}
    for side in ("both", "anomalib", "fovea"):
        path = results_path(out, side)
        if path.is_file():
            for r in json.loads(path.read_text()):
                merged[(r["dataset"], r["model"], r["n_train"], r["side"])] = r
    return list(merged.values())


def sides_for(n: int, k: int, sizes: list[int], side: str, anomalib_py) -> list[str]:
    """Which implementations run at n training images (alternating who goes first when both do)."""
    if side == "fovea" or n not in sizes or anomalib_py is None:
        return ["fovea"] if side != "anomalib" else []
    if side == "anomalib":
        return ["anomalib"]
    return ["fovea", "anomalib"] if k % 2 == 0 else ["anomalib", "fovea"]


def run(args) -> list[dict]:
    """Run the jobs: per model (PaDiM first, it is cheap), per size, per data set, so every data set's
    small sizes are measured before any large one (an interrupted run still has whole sizes)."""
    import datetime

    out = Path(args.out).resolve()
    sizes = [int(v) for v in args.sizes.split(",") if v]
    fovea_only = [int(v) for v in args.fovea_only_sizes.split(",") if v]
    need_anomalib = args.side != "fovea" and not args.skip_anomalib
    anomalib_py = A.anomalib_python(install=not args.no_install) if need_anomalib else None
    out.mkdir(parents=True, exist_ok=True)
    # only the Anomalib child reads the weights file, reference maps and split folders: a fovea-side
    # invocation leaves them alone (an Anomalib-side invocation may be reading them at the same time)
    weights = A.write_weights(out) if need_anomalib else out / "efficientnet_lite0_features.safetensors"
    t_start = time.perf_counter()
    # rows of earlier invocations on this OUT (e.g. other sizes run separately) are kept; re-run keys replace them
    old = json.loads(results_path(out, args.side).read_text()) if results_path(out, args.side).is_file() else []
    rows: list[dict] = []
    stopped: set[tuple[str, str]] = set()  # (data set, model) whose Anomalib job timed out

    def save() -> None:
        keys = {(r["dataset"], r["model"], r["n_train"], r["side"]) for r in rows}
        kept = [r for r in old if (r["dataset"], r["model"], r["n_train"], r["side"]) not in keys]
        results_path(out, args.side).write_text(json.dumps(kept + rows, indent=1, default=str))

    data = {name: prepare(out, name, max(sizes + fovea_only), args.seed) for name in args.datasets}
    refs = {m: (A.write_reference(out, m, data[args.datasets[0]][0].train[0].path, (256, 256)) if need_anomalib
                else out / f"reference_{m}.npz") for m in args.models}
    models = sorted(args.models, key=lambda m: m != "padim")
    for model in models:
        for k, n in enumerate(sorted(set(sizes + fovea_only))):
            for name in args.datasets:
                splits, kind = data[name]
                sub = copy.copy(splits)
                sub.train = splits.train[:n]
                split_dir = out / "splits" / f"{name}_{n}"
                work = out / "jobs" / f"n{n}"
                work.mkdir(parents=True, exist_ok=True)
                job = make_job(name, model, sub, split_dir, weights, refs[model], args)
                if n in fovea_only and n not in sizes:
                    job["threads"] = args.fovea_only_threads
                for side in sides_for(n, k, sizes, args.side, anomalib_py):
                    if side == "anomalib" and (name, model) in stopped:
                        rows.append({"side": side, "model": model, "dataset": name, "n_train": n, "kind": kind,
                                     "timed_out": True, "skipped_after_timeout": True,
                                     "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat()})
                        save()
                        continue
                    if side == "anomalib":
                        A.materialise_split(sub, split_dir)
                    print(f"[{time.perf_counter() - t_start:6.0f}s] {name} {model} n={n} {side} ...", flush=True)
                    started = datetime.datetime.now(datetime.timezone.utc).isoformat()
                    res = A.run_job_fair(side, job, work, anomalib_py, args.resume,
                                    timeout_s=60 * args.anomalib_timeout_min if side == "anomalib" else None)
                    res.update(kind=kind, n_train=n, started_utc=started,
                               ended_utc=datetime.datetime.now(datetime.timezone.utc).isoformat())
                    if res.get("timed_out"):
                        stopped.add((name, model))
                        print(f"    stopped after {res['process_s']:.0f}s (> {args.anomalib_timeout_min} min)",
                              flush=True)
                    else:
                        res.update(A.evaluate(res["out_npz"], splits.test))
                        res["p50_ms"], res["p95_ms"] = A.latency_stats(res["latency_ms"])
                        if res.get("latency_cpu_ms"):
                            res["cpu_p50_ms"] = A.latency_stats(res["latency_cpu_ms"])[0]
                        print(f"    fit {res['fit_s']:.1f}s p50 {res['p50_ms']:.0f}ms image AUROC "
                              f"{res['image_auroc']:.3f} peak {res['peak_rss_mb']:.0f}MB load {res['load_start']:.1f}",
                              flush=True)
                    rows.append(res)
                    save()
    return rows


def side_summary(rows: list[dict]) -> list[str]:
    """One line per side: when its jobs ran (UTC) and the load average at their starts."""
    lines = []
    for side in ("anomalib", "fovea"):
        rs = [r for r in rows if r["side"] == side and r.get("started_utc") and not r.get("skipped_after_timeout")]
        if not rs:
            continue
        loads = [r["load_start"] for r in rs if r.get("load_start") == r.get("load_start")]
        first = min(r["started_utc"] for r in rs)[:16].replace("T", " ")
        last = max(r.get("ended_utc", r["started_utc"]) for r in rs)[:16].replace("T", " ")
        lines.append(f"- {'Anomalib' if side == 'anomalib' else 'fovea'} side: {len(rs)} jobs run from {first} to "
                     f"{last} UTC, load average (1 min) at job starts {min(loads):.1f}-{max(loads):.1f} "
                     f"(median {float(np.median(loads)):.1f}).")
    return lines


def cell(r: dict | None, key: str, fmt: str, limit_min: int) -> str:
    if r is None:
        return "-"
    if r.get("timed_out"):
        if key != "fit_s":
            return "-"
        if r.get("stop_reason") == "rss":
            return f"stopped: RSS > {A.RSS_LIMIT_MB:,} MB"
        return f"> {_limit_min(r, limit_min)} min" + (" (not run: a smaller size was)" if r.get("skipped_after_timeout") else "")
    return format(r[key], fmt)


def _limit_min(r: dict, default_min: int) -> int:
    """The time limit a stopped Anomalib job ran under (its own, when recorded), in minutes."""
    return int(round(r["timeout_s"] / 60)) if r.get("timeout_s") else default_min


def load_cell(r: dict | None) -> str:
    return "-" if r is None or r.get("skipped_after_timeout") else f"{r.get('load_start', float('nan')):.1f}"


def report(rows: list[dict], limit_min: int) -> list[str]:
    index = {(r["dataset"], r["model"], r["n_train"], r["side"]): r for r in rows}
    keys = sorted({(r["dataset"], r["model"], r["n_train"]) for r in rows})
    body = []
    for ds, model, n in keys:
        f, a = index.get((ds, model, n, "fovea")), index.get((ds, model, n, "anomalib"))
        speed = (f"{a['fit_s'] / f['fit_s']:.1f}x" if f and a and not a.get("timed_out") else
                 (f"> {60 * _limit_min(a, limit_min) / f['fit_s']:.0f}x" if f and a and a.get("stop_reason") != "rss"
                  else "-"))
        lat = f"{f['p50_ms'] / a['p50_ms']:.2f}" if f and a and not a.get("timed_out") else "-"
        fit_cpu = " / ".join(f"{r['fit_cpu_s']:.1f}" if r and r.get("fit_cpu_s") else "-" for r in (f, a))
        cpu = "-"
        if f and a and f.get("cpu_p50_ms") and a.get("cpu_p50_ms"):
            cpu = f"{f['cpu_p50_ms']:.0f} / {a['cpu_p50_ms']:.0f} ({f['cpu_p50_ms'] / a['cpu_p50_ms']:.2f})"
        elif f and f.get("cpu_p50_ms"):
            cpu = f"{f['cpu_p50_ms']:.0f} / -"
        body.append([ds, model, n, cell(f, "fit_s", ".1f", limit_min), cell(a, "fit_s", ".1f", limit_min), speed, fit_cpu,
                     f"{cell(f, 'p50_ms', '.0f', limit_min)} / {cell(f, 'p95_ms', '.0f', limit_min)}",
                     f"{cell(a, 'p50_ms', '.0f', limit_min)} / {cell(a, 'p95_ms', '.0f', limit_min)}", lat, cpu,
                     f"{cell(f, 'peak_rss_mb', '.0f', limit_min)} / {cell(a, 'peak_rss_mb', '.0f', limit_min)}",
                     f"{cell(f, 'image_auroc', '.3f', limit_min)} / {cell(a, 'image_auroc', '.3f', limit_min)}",
                     f"{cell(f, 'pixel_auroc', '.3f', limit_min)} / {cell(a, 'pixel_auroc', '.3f', limit_min)}",
                     f"{cell(f, 'aupro', '.3f', limit_min)} / {cell(a, 'aupro', '.3f', limit_min)}",
                     f"{load_cell(f)} / {load_cell(a)}"])
    return table(["data set", "model", "train images", "fit s fovea", "fit s Anomalib", "fit speed-up", "fit CPU s fovea / Anomalib",
                  "predict p50 / p95 ms fovea", "Anomalib", "p50 fovea / Anomalib", "predict CPU p50 ms fovea / Anomalib (ratio)", "peak RSS MB fovea / Anomalib",
                  "image AUROC fovea / Anomalib", "pixel AUROC", "AUPRO", "load at job start fovea / Anomalib"], body)


def _thread_counts(rows: list[dict]) -> dict[str, str]:
    """'<side> n=<images>' -> torch threads the job reported (only where it differs from 1)."""
    return {f"{r['side']} {r['dataset']} {r['model']} n={r['n_train']}": str(r["threads"]) for r in rows
            if r.get("threads") not in (None, 1)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "fit_s", "fit s"), (axes[1], "p50_ms", "predict p50 ms")):
        for (ds, model, side) in sorted({(r["dataset"], r["model"], r["side"]) for r in rows}):
            pts = sorted((r["n_train"], r[key]) for r in rows if (r["dataset"], r["model"], r["side"]) == (ds, model, side)
                         and not r.get("timed_out"))
            if pts:
                ax.plot(*zip(*pts), marker="o", linestyle="-" if side == "fovea" else "--", label=f"{side} {model} {ds}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training images")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="24,50,100,200", help="training images, both sides")
    ap.add_argument("--fovea-only-sizes", default="400", help="training images, fovea alone")
    ap.add_argument("--datasets", nargs="*", default=["one_up", "brick"])
    ap.add_argument("--models", nargs="*", default=list(A.MODELS), choices=list(A.MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fovea-only-threads", type=int, default=2,
                    help="torch threads of the fovea-alone sizes (the issue's '400 images in < 2 min on 2 cores')")
    ap.add_argument("--merge-from", nargs="*", default=[],
                    help="more OUT folders whose rows join the table (e.g. one invocation per data set)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anomalib-timeout-min", type=int, default=30)
    ap.add_argument("--out", default=str(A.ROOT / "runs" / "bench_anomaly_scaling"))
    ap.add_argument("--skip-anomalib", action="store_true")
    ap.add_argument("--side", choices=("both", "anomalib", "fovea"), default="both",
                    help="run one side only (its rows go to OUT/scaling_results_<side>.json); the table merges "
                         "every results file in OUT, so two invocations on the same OUT give one table")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--resume", action="store_true", help="reuse finished jobs of an interrupted run in OUT")
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from OUT/scaling_results.json (e.g. of a run still going: marked partial)")
    add_doc_args(ap, "anomaly_scaling", "24 and 50 images, no fovea-only size")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.fovea_only_sizes = "24,50", ""
    import torch

    torch.set_num_threads(args.threads)  # the jobs run with --threads; the doc's machine line says so too
    run_info = Run(args, full_command=".venv/bin/python benchmarks/anomaly_scaling.py")
    if args.report_only:
        rows = load_rows(Path(args.out))
    else:
        run(args)
        rows = load_rows(Path(args.out).resolve())
    for extra in args.merge_from:
        rows += load_rows(Path(extra))
    body = report(rows, args.anomalib_timeout_min)
    if args.report_only:
        body = [f"**Rendered from `{args.out}/scaling_results*.json`** with --report-only: the rows measured so far "
                "(a run may still be going or have stopped); load figures are per job.", ""] + body
    body += ["", *side_summary(rows)]
    body += [f"- Jobs rerun with MALLOC_MMAP_THRESHOLD_={A.MMAP_THRESHOLD} after outgrowing glibc's default allocator "
             f"(> {A.RSS_LIMIT_MB:,} MB or killed for memory): {A.retry_text(rows)}."]
    body += [f"- Threads per job: {args.threads} for the sizes both sides run; fovea alone "
             f"({args.fovea_only_sizes or 'none'}): {args.fovea_only_threads} (rows' thread counts: "
             + ", ".join(f"{k}: {v}" for k, v in sorted(_thread_counts(rows).items())) + ")."]
    png = (Path(args.doc).parent if args.doc != "-" else Path(args.out)) / "anomaly_scaling.png"
    plot(rows, png)
    body += ["", f"![fit and predict time against training images (log-log)]({png.name})", "",
             f"Test set per data set: {TEST_GOOD} good + {TEST_BAD} defective images, half of them the validation "
             "split (thresholds), the other half scored. fit s = the whole fit call (backbone, features, coreset or "
             "Gaussians, validation pass); peak RSS of the job's process. Predict CPU = "
             "process CPU time per image (p50): on a shared machine wall latency mostly measures the share of a "
             "core a job got, CPU time the work it did."]
    run_info.write(f"Anomaly detection by training-set size: fovea vs Anomalib {A.ANOMALIB_VERSION}", body)


if __name__ == "__main__":
    main()
