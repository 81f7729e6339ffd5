"""Batch-1 224x224 CPU forward latency of VMamba-T / SparX-Mamba-T next to ConvNeXt-T and Swin-T.

    .venv/bin/python benchmarks/backbones.py --threads 1            # 5 rounds -> docs/benchmarks/backbones.md
    .venv/bin/python benchmarks/backbones.py --threads 1 --quick    # 2 rounds

All models are built with random weights in one process and timed round-robin (one forward of
each model per round, so load spikes hit every model alike); the table reports the median per
model and its ratio to ConvNeXt-T measured in the same run. The selective-scan speed-ups are
benchmarks/scan.py's alone (docs/benchmarks/scan.md); this script does not re-measure them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _doc import Run, add_doc_args, table

MODELS = ("convnext_tiny", "swin_tiny_patch4_window7_224", "vmamba_tiny_s1l8", "sparx_mamba_t")
BASELINE = "convnext_tiny"


def bench_backbones(names=MODELS, repeats: int = 5, size: int = 224) -> dict[str, dict]:
    """Median forward seconds per model (no_grad, eval), timed round-robin; plus params and GFLOPs."""
    import timm

    import fovea.models  # noqa: F401  (registers vmamba_* / sparx_*)
    from fovea.models.flops import count_flops

    x = torch.randn(1, 3, size, size)
    models = {n: timm.create_model(n, pretrained=False).eval() for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for m in models.values():  # warm-up (native scan kernel build, allocator)
            m(x)
        for _ in range(repeats):
            for n, m in models.items():
                t0, c0 = time.perf_counter(), time.process_time()
                m(x)
                wall[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
    out = {}
    for n, m in models.items():
        flops = count_flops(m, (1, 3, size, size)) if n.startswith(("vmamba", "sparx")) else None
        out[n] = {"median_s": statistics.median(wall[n]), "min_s": min(wall[n]), "cpu_median_s": statistics.median(cpu[n]),
                  "params_M": sum(p.numel() for p in m.parameters()) / 1e6, "gflops": flops / 1e9 if flops else None}
    return out


def markdown(res: dict, repeats: int) -> list[str]:
    base, base_cpu = res[BASELINE]["median_s"], res[BASELINE]["cpu_median_s"]
    rows = [[n, f"{r['params_M']:.2f}", f"{r['gflops']:.2f}" if r["gflops"] else "-", f"{r['median_s'] * 1e3:.0f}",
             f"{r['min_s'] * 1e3:.0f}", f"{r['median_s'] / base:.2f}x", f"{r['cpu_median_s'] * 1e3:.0f}",
             f"{r['cpu_median_s'] / base_cpu:.2f}x"] for n, r in res.items()]
    return [
        f"Batch 1, 3x224x224, no_grad, random weights, {repeats} round-robin rounds after one warm-up forward "
        "(medians). GFLOPs counted by `fovea.models.flops` (the papers' convention) for fovea's models only. "
        "Selective-scan speed-ups: see docs/benchmarks/scan.md (benchmarks/scan.py).", "",
        *table(["model", "params (M)", "GFLOPs (ours)", "median wall (ms)", "best wall (ms)", "wall vs ConvNeXt-T",
                "median CPU (ms)", "CPU vs ConvNeXt-T"], rows),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    add_doc_args(parser, "backbones", "2 rounds instead of --repeats")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(args, full_command=".venv/bin/python benchmarks/backbones.py --threads 1")
    repeats = 2 if args.quick else args.repeats
    res = bench_backbones(repeats=repeats)
    run.write("Backbones: CPU forward latency", markdown(res, repeats))


if __name__ == "__main__":
    main()
