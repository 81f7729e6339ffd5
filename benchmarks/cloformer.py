"""CloFormer XXS / XS / S beside timm's MobileViT XXS / XS / S and EfficientNet-Lite0: parameters,
FLOPs (fovea.models.flops.count_flops, fvcore convention, 1 MAC = 1 FLOP) and CPU latency.

All models random-initialised (no weights matter for speed), eval mode, 224 x 224, batch 1, one
torch thread, `torch.no_grad`; models are timed round-robin (each repeat runs every model once) so
machine load hits all alike; medians. The baseline for the ratio column is EfficientNet-Lite0.
Quick version: `--quick` (5 repeats instead of 30).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402

MODELS = ("cloformer_xxs", "cloformer_xs", "cloformer_s", "mobilevit_xxs", "mobilevit_xs", "mobilevit_s",
          "efficientnet_lite0")
PAPER = {"cloformer_xxs": "4.2 M / 0.6 G / 77.0", "cloformer_xs": "7.2 M / 1.1 G / 79.8",
         "cloformer_s": "12.3 M / 2.0 G / 81.6"}


def shortcut_k5_macs(model, x: torch.Tensor) -> int:
    """MACs of the dense k x k stride-2 convolution that opens each downsampling block's shortcut."""
    from fovea.models.cloformer import CloBlock

    total = []
    convs = [b.downsample[0] for b in model.modules() if isinstance(b, CloBlock) and len(b.downsample._modules) > 0]
    hooks = [c.register_forward_hook(lambda c, i, o: total.append(o.numel() * c.in_channels // c.groups
                                                                  * c.kernel_size[0] * c.kernel_size[1]))
             for c in convs]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return int(sum(total))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    add_doc_args(ap, "cloformer", "5 repeats")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 5
    import timm

    import fovea.models  # noqa: F401  (registers cloformer_*)
    from fovea.models.flops import count_flops

    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/cloformer.py")
    models = {n: timm.create_model(n, pretrained=False).eval() for n in MODELS}
    x = torch.randn(1, 3, args.size, args.size)
    times: dict[str, list[float]] = {n: [] for n in MODELS}
    with torch.no_grad():
        for m in models.values():
            for _ in range(3):
                m(x)
        for _ in range(args.repeats):
            for n, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[n].append(time.perf_counter() - t0)
    base = statistics.median(times["efficientnet_lite0"])
    shortcut = {n: shortcut_k5_macs(m, x) for n, m in models.items() if n.startswith("cloformer")}
    rows = []
    for n, m in models.items():
        med = statistics.median(times[n])
        params = sum(p.numel() for p in m.parameters()) / 1e6
        flops = count_flops(m, (1, 3, args.size, args.size))
        paper_conv = f"{(flops - shortcut[n]) / 1e9:.3f}" if n in shortcut else ""
        rows.append([n, f"{params:.2f}", f"{flops / 1e9:.3f}", paper_conv,
                     f"{1000 * med:.1f}", f"{med / base:.2f}x", PAPER.get(n, "")])
    body = table(["model", "params M", "GFLOPs (MACs, fvcore convention)", "GFLOPs without the shortcut 5x5 conv",
                  f"CPU ms (batch 1, {args.size} px, median of {args.repeats})", "time vs Lite0",
                  "paper params / FLOPs / IN-1k top-1"], rows)
    body += ["", "GFLOPs: `fovea.models.flops.count_flops` (convolutions, matmuls incl. the global branch's attention, "
             "norms; eval BatchNorm is not: torch 2.14 dispatches it as aten.native_batch_norm, which the counter does not "
             "list, so the BatchNorm-heavy MobileViT and Lite0 figures are slightly low). The paper's FLOPs (no counter published) "
             "equal, to the printed digit, the count without the dense 5x5 stride-2 convolution of the three "
             "downsampling shortcuts (column 4; see fovea/models/cloformer.py). No ImageNet weights exist for CloFormer "
             "(none released)."]
    run.write("CloFormer vs MobileViT and EfficientNet-Lite0: size and CPU latency", body)


if __name__ == "__main__":
    main()
