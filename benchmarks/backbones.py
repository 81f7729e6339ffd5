"""Batch-1 224x224 CPU forward latency of VMamba-T / SparX-Mamba-T next to ConvNeXt-T and Swin-T.

    .venv/bin/python benchmarks/backbones.py [--repeats 5] [--threads 2] [--scan] [--out docs/benchmarks/backbones.md]

All models are built with random weights in one process and timed round-robin (one forward of
each model per round, so load spikes hit every model alike); the table reports the median per
model and its ratio to ConvNeXt-T measured in the same run. `--scan` also runs
benchmarks/scan.py's `bench_scan` (fast scan vs the reference loop at VMamba-T stage-1 size).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

MODELS = ("convnext_tiny", "swin_tiny_patch4_window7_224", "vmamba_tiny_s1l8", "sparx_mamba_t")
BASELINE = "convnext_tiny"


def bench_backbones(names=MODELS, repeats: int = 5, size: int = 224) -> dict[str, dict]:
    """Median forward seconds per model (no_grad, eval), timed round-robin; plus params and GFLOPs."""
    import timm

    import fovea.models  # noqa: F401  (registers vmamba_* / sparx_*)
    from fovea.models.flops import count_flops

    x = torch.randn(1, 3, size, size)
    models = {n: timm.create_model(n, pretrained=False).eval() for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for m in models.values():  # warm-up (native scan kernel build, allocator)
            m(x)
        for _ in range(repeats):
            for n, m in models.items():
                t0, c0 = time.perf_counter(), time.process_time()
                m(x)
                times[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
    out = {}
    for n, m in models.items():
        flops = count_flops(m, (1, 3, size, size)) if n.startswith(("vmamba", "sparx")) else None
        out[n] = {
            "median_s": statistics.median(times[n]),
            "min_s": min(times[n]),
            "cpu_median_s": statistics.median(cpu[n]),
            "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
            "gflops": flops / 1e9 if flops else None,
        }
    base = out[BASELINE]["median_s"] if BASELINE in out else None
    base_cpu = out[BASELINE]["cpu_median_s"] if BASELINE in out else None
    for r in out.values():
        r["ratio_vs_convnext"] = r["median_s"] / base if base else None
        r["cpu_ratio_vs_convnext"] = r["cpu_median_s"] / base_cpu if base_cpu else None
    return out


def markdown(res: dict, repeats: int, scan: dict | None) -> str:
    lines = [
        "# Backbones: CPU forward latency",
        "",
        f"`python benchmarks/backbones.py --repeats {repeats}`: batch 1, 3x224x224, no_grad, random weights, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()} "
        "(a shared 2-core machine with other jobs running: absolute times are noisy, ratios were measured "
        "round-robin in one run).",
        "",
        "| model | params (M) | GFLOPs (ours) | median wall (ms) | best wall (ms) | wall vs ConvNeXt-T "
        "| median CPU (ms) | CPU vs ConvNeXt-T |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, r in res.items():
        g = f"{r['gflops']:.2f}" if r["gflops"] else "-"
        ratio = f"{r['ratio_vs_convnext']:.2f}x" if r["ratio_vs_convnext"] else "-"
        cr = f"{r['cpu_ratio_vs_convnext']:.2f}x" if r["cpu_ratio_vs_convnext"] else "-"
        lines.append(f"| {n} | {r['params_M']:.2f} | {g} | {r['median_s'] * 1e3:.0f} | {r['min_s'] * 1e3:.0f} | {ratio} "
                     f"| {r['cpu_median_s'] * 1e3:.0f} | {cr} |")
    if scan:
        lines += ["", "## Selective scan at VMamba-T stage-1 size (benchmarks/scan.py `bench_scan`)", "",
                  "| case | K*D | N | ref fwd (ms) | fast fwd (ms) | fwd speed-up | ref fwd+bwd (ms) | fast fwd+bwd (ms) "
                  "| fwd+bwd speed-up |", "|---|---|---|---|---|---|---|---|---|"]
        def w(v):  # bench_scan reports (wall, cpu) pairs; keep wall
            return v[0] if isinstance(v, (tuple, list)) else v

        for name, r in scan.items():
            r = {k: w(v) for k, v in r.items()}
            b = "native" if "native_fwd_s" in r else "chunked"
            lines.append(
                f"| {name} ({b}) | {r['K*D']} | {r['N']} | {r['ref_fwd_s'] * 1e3:.1f} | {r[f'{b}_fwd_s'] * 1e3:.2f} "
                f"| {r[f'{b}_fwd_speedup']:.1f}x | {r['ref_fwdbwd_s'] * 1e3:.0f} | {r[f'{b}_fwdbwd_s'] * 1e3:.2f} "
                f"| {r[f'{b}_fwdbwd_speedup']:.1f}x |"
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--scan", action="store_true", help="also run benchmarks/scan.py bench_scan")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = bench_backbones(repeats=args.repeats)
    print(json.dumps(res, indent=1))
    scan = None
    if args.scan:
        sys.path.insert(0, str(Path(__file__).parent))
        try:
            from scan import CASES, bench_scan
        except ImportError:
            print("benchmarks/scan.py not found: scan benchmark skipped")
        else:
            scan = bench_scan(cases=CASES[:1], repeats=3, ref_repeats=1, official_style=False)
    text = markdown(res, args.repeats, scan)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
