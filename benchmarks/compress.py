"""Issue 17: ternary kernel speed, packed checkpoint size, tiled-attention memory, and (in
benchmarks/_compress_train.py) QAT, int8 ONNX and LoRA on the apples. Writes docs/benchmarks/compress.md.

Sections (`--section`, default all):
* kernel: packed-ternary x int8 (the C kernel, `fovea.compress.packed_ternary_linear`) vs fp32
  `nn.Linear` at batch 1 (GEMV) and 64 tokens, for 3072x3072 and the linear shapes of VMamba-T
  and the 1x1 convs of EfficientNet-Lite0; one torch thread, medians; the torch fallback beside.
* storage: `save_packed` of ternarized Lite0 / VMamba-T / a ViT-S: packed vs fp32 bytes of the
  ternarized layers, and the whole file vs the fp32 safetensors checkpoint.
* attention: extra peak RSS (fresh process per method) of naive attention, the tiled reference
  and SDPA at growing sequence length.
* model: whole ternarized models (ViT-S, Lite0) packed vs fp32 forward.
* qat, lora: training on the apples, bricks and grass (see _compress_train.py).
* int8, torch_int8: ONNX Runtime static int8 of classifier / PatchCore / segmenter, and torch.ao int8
  (see _compress_int8.py).

    .venv/bin/python benchmarks/compress.py [--quick] [--section all|kernel|model|storage|attention|qat|qat_patchcore|int8|torch_int8|lora]
        [--variants A,B,...] [--stored-only]   (qat: QAT variants, stored per variant; see _compress_train.py)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _doc import Run, add_doc_args, table

from fovea.compress import PackedBitLinear, _native, load_packed, pack_ternary, packed_ternary_linear, save_packed, ternarize
from fovea.nn.ternary import absmean_ternary

KERNEL_SHAPES = [  # (out, in, where)
    (3072, 3072, "FLUX hidden size"),
    (1536, 384, "VMamba-T stage 3 in_proj"),
    (384, 1536, "VMamba-T stage 3 MLP fc2"),
    (384, 384, "VMamba-T stage 3 out_proj"),
    (3072, 768, "VMamba-T stage 4 MLP fc1"),
    (768, 3072, "VMamba-T stage 4 MLP fc2"),
    (1152, 192, "Lite0 1x1 expand (7x7 stage)"),
    (192, 1152, "Lite0 1x1 project (7x7 stage)"),
]


def interleaved_median_ms(fns: dict, repeats: int) -> dict:
    """Median thread-CPU ms of each fn (one torch thread, so CPU time = compute time; wall time on a
    loaded machine counts preemptions, which hit long calls more often than short ones); the calls
    alternate (a, b, c, a, b, c, ...) so cache and frequency changes hit all alike."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            fn()  # warm: the previous variant's call may have evicted this one's weights from the caches
            t0 = time.thread_time()
            fn()
            times[k].append(time.thread_time() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def kernel_section(run: Run, quick: bool) -> None:
    shapes = KERNEL_SHAPES[:3] if quick else KERNEL_SHAPES
    repeats = 9 if quick else 31
    rows = []
    avx2 = _native.load_variant(["-mavx2"]) if "avx2" in _native._cpu_flags() else None  # the CI machines' loop
    for n, k, where in shapes:
        g = torch.Generator().manual_seed(n * k)
        weight = torch.randn(n, k, generator=g) * 0.02
        codes, scale = absmean_ternary(weight)
        packed = pack_ternary(codes)
        w_fp32 = codes.float() * scale  # fp32 baseline multiplies the same (dequantised) weight
        fp32_layer = torch.nn.Linear(k, n, bias=False)
        fp32_layer.weight.data = w_fp32  # both sides are module calls, as in a model
        layer = PackedBitLinear(k, n, bias=False, backend="native")
        layer.packed.copy_(packed)
        layer.scale.copy_(scale)
        avx2_plan = _native.LinearPlan(packed, scale, n, None, lib=avx2) if avx2 is not None else None
        for m in (1, 64):
            x = torch.randn(m, k, generator=g)
            fns = {"fp32": lambda: fp32_layer(x), "kernel": lambda: layer(x),
                   "rowloop": lambda: packed_ternary_linear(x, packed, scale, n, backend="native"),
                   "fallback": lambda: packed_ternary_linear(x, packed, scale, n, backend="torch")}
            if avx2_plan is not None:
                fns["avx2"] = lambda: avx2_plan(x)
            ms = interleaved_median_ms(fns, repeats)
            fp32, native, rowloop, fallback = ms["fp32"], ms["kernel"], ms["rowloop"], ms["fallback"]
            a2 = f"{ms['avx2']:.3f} ({fp32 / ms['avx2']:.1f}x)" if avx2_plan is not None else "-"
            y_ref = F.linear(x, w_fp32)
            rel = ((packed_ternary_linear(x, packed, scale, n, backend="native") - y_ref).norm() / y_ref.norm()).item()
            rows.append([f"{n}x{k}", where, m, f"{fp32:.3f}", f"{native:.3f}", f"**{fp32 / native:.1f}x**",
                         f"{rowloop:.3f}", a2, f"{fallback:.2f}", f"{rel:.1e}"])
            print(rows[-1], flush=True)
    body = table(["W (out x in)", "where", "tokens", "fp32 nn.Linear CPU ms", "packed kernel CPU ms", "speed-up",
                  "HF-layout row loop CPU ms", "AVX2 loop CPU ms (vs fp32)", "torch fallback CPU ms",
                  "rel. err vs fp32"], rows)
    body += ["", f"Kernel: `{_native.isa()}` (compiled with -march=native on this CPU). 'packed kernel' = a "
             "`PackedBitLinear` call (what a loaded model runs: one ctypes call through the layer's cached plan, "
             "which quantises the tokens with AVX-512, multiplies and rescales in C): for 1 token and from 4 "
             "tokens on the register-tile loop (16 outputs x 16 inputs per 64-byte "
             "tile, no horizontal sums; AVX512-VNNI only), for 2-3 tokens the 'HF-layout row loop' (the product "
             "straight from the stored layout, horizontal sums per output; also the AVX2 / scalar path); the fp32 "
             "side is an `nn.Linear` call with the same (dequantised ternary) weight, i.e. both are module calls. "
             "The row-loop and fallback columns are `packed_ternary_linear` function calls; the AVX2 column is, on this CPU, the "
             "library built with -mavx2 (what an AVX2-only CI machine compiles), called through its plan. "
             f"One torch thread; median single-thread CPU time of {repeats} rounds (CPU time, not wall: the "
             "machine is shared), the four variants called in turn, each timed on its second consecutive call "
             "(warm caches for all). Kernel times include the per-token int8 quantisation of the input and the "
             "fp32 rescale. Weights: 2 bits (HF layout) vs 4 bytes. The error column is the int8 activation "
             "rounding (the fp32 baseline multiplies the same ternary weight with the unquantised input)."]
    run.write("Compression: ternary kernel, packed storage, tiled attention, QAT, int8, LoRA", body, tag="kernel")


def _storage_models():
    import timm

    import fovea.models  # noqa: F401

    return {
        "EfficientNet-Lite0 (apple classifier backbone)": lambda: timm.create_model("efficientnet_lite0", num_classes=2),
        "VMamba-T (vmamba_tiny_s1l8)": lambda: timm.create_model("vmamba_tiny_s1l8"),
        "ViT-S/16 (timm)": lambda: timm.create_model("vit_small_patch16_224"),
    }


def storage_section(run: Run, quick: bool) -> None:
    from safetensors.torch import save_file

    rows = []
    models = _storage_models()
    for name, build in list(models.items())[: 1 if quick else None]:
        model = build().eval()
        with tempfile.TemporaryDirectory() as tmp:
            fp32_path = Path(tmp) / "fp32.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(fp32_path))
            report = ternarize(model, exclude=("classifier", "head", "head.*", "conv_stem", "patch_embed.*"))
            sizes = save_packed(model, Path(tmp) / "packed.safetensors")
            fp32_file = fp32_path.stat().st_size
        ratio = sizes["fp32_bytes_of_ternary"] / sizes["packed_bytes"]
        share = sizes["fp32_bytes_of_ternary"] / fp32_file
        rows.append([name, len(report.converted), len(report.skipped), f"{share:.1%}",
                     f"{sizes['fp32_bytes_of_ternary'] / 2**20:.2f} -> {sizes['packed_bytes'] / 2**20:.3f}",
                     f"**{ratio:.2f}x**", f"{fp32_file / 2**20:.2f} -> {sizes['file_bytes'] / 2**20:.2f}",
                     f"{fp32_file / sizes['file_bytes']:.2f}x"])
        print(rows[-1], flush=True)
    body = table(["model", "ternary layers", "matching layers left alone", "share of fp32 bytes",
                  "ternary layers MiB (fp32 -> packed)", "ratio", "whole file MiB (fp32 -> packed)", "whole ratio"], rows)
    body += ["", "Ternarized: every Linear (VMamba's per-pixel Linear2d included) and Conv2d (depthwise included) "
             "except the stem / patch embedding and the classifier head (kept in float as BitNet keeps lm_head). "
             "Packed = 2-bit codes (HF layout) + one fp32 scale per layer; 'whole file' also holds the float layers, "
             "norms, biases and buffers (safetensors header included). 'Left alone' counts matching layers whose "
             "class has its own forward (none here). Storage only: accuracy after ternarizing is the QAT section."]
    run.write("Compression", body, tag="storage")


def _model_cases(quick: bool):
    """(name, build fp32 model, input, ternarize kwargs): whole models the per-layer table comes from."""
    import timm

    import fovea.models  # noqa: F401

    vit = dict(exclude=("head", "patch_embed.*"))
    lite0 = dict(include=("blocks.*.conv_pw", "blocks.*.conv_pwl", "conv_head"))
    cases = [("ViT-S/16, 224 px (197 tokens), batch 1", lambda: timm.create_model("vit_small_patch16_224"),
              (1, 3, 224, 224), vit),
             ("EfficientNet-Lite0, 224 px, batch 1 (pointwise convs)",
              lambda: timm.create_model("efficientnet_lite0", num_classes=2), (1, 3, 224, 224), lite0)]
    if not quick:
        cases.insert(1, ("ViT-S/16, 224 px, batch 8", lambda: timm.create_model("vit_small_patch16_224"),
                         (8, 3, 224, 224), vit))
    return cases


def model_section(run: Run, quick: bool) -> None:
    """Whole ternarized models: fp32 forward vs the `load_packed` model (PackedBitLinear / PackedBitConv2d on the
    C kernel), one thread, CPU ms; and the packed model's output against the fake-quant (BitLinear) model."""
    rows = []
    repeats = 5 if quick else 15
    for name, build, shape, pattern in _model_cases(quick):
        torch.manual_seed(0)
        fp32 = build().eval()
        qat = build().eval()
        qat.load_state_dict(fp32.state_dict())
        report = ternarize(qat, **pattern)
        with tempfile.TemporaryDirectory() as tmp:
            save_packed(qat, Path(tmp) / "m.safetensors")
            packed = load_packed(build().eval(), Path(tmp) / "m.safetensors")
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            ms = interleaved_median_ms({"fp32": lambda: fp32(x), "packed": lambda: packed(x),
                                        "fake": lambda: qat(x)}, repeats)
            ref, out = qat(x), packed(x)
            ref64 = copy.deepcopy(qat).double()(x.double()).float()
        rel = ((out - ref).norm() / ref.norm()).item()
        rel64 = ((ref64 - ref).norm() / ref64.norm()).item()
        rows.append([name, len(report.converted), f"{ms['fp32']:.1f}", f"{ms['packed']:.1f}",
                     f"**{ms['fp32'] / ms['packed']:.2f}x**", f"{ms['fake']:.1f}", f"{rel:.1e}", f"{rel64:.1e}"])
        print(rows[-1], flush=True)
    body = table(["model", "packed layers", "fp32 forward CPU ms", "packed ternary forward CPU ms", "speed-up",
                  "fake-quant (BitLinear, training form) CPU ms", "packed vs fake-quant rel. err",
                  "fake-quant fp32 vs float64 rel. err"], rows)
    body += ["", "Whole forward passes, `torch.inference_mode`, one torch thread, median single-thread CPU time of "
             f"{repeats} rounds, the three models called in turn (each timed on its second consecutive call). "
             "Packed = `ternarize` (ViT: every Linear but the head; Lite0: the pointwise convs, as the QAT section) "
             "-> `save_packed` -> `load_packed` into a fresh model, so the layers are PackedBitLinear / "
             "PackedBitConv2d running the C kernel; everything else (attention, norms, GELU, depthwise convs) is "
             "the same fp32 code in both. Random-init weights (speed does not depend on their values). The error "
             "column compares the packed model with the fake-quant model it was saved from (same ternary "
             "weights; the kernel sums exact integers, fake-quant sums floats); the last column is the same model in "
             "float64 vs fp32: every layer re-quantises its input, so any rounding difference can move an int8 code by "
             "one step, and through 12 blocks that alone gives the same order of difference."]
    run.write("Compression", body, tag="model")


_ATTN_CHILD = r"""
import sys, torch, torch.nn.functional as F
from fovea.nn.attention_ref import naive_attention, tiled_attention
torch.set_num_threads(1)
method, n = sys.argv[1], int(sys.argv[2])
q, k, v = (torch.randn(1, 4, n, 64) for _ in range(3))
def status_kib(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status_kib("VmRSS:")
import time; t0 = time.perf_counter()
fn = {"naive": naive_attention, "tiled": lambda a, b, c: tiled_attention(a, b, c, block_q=256, block_k=256),
      "sdpa": F.scaled_dot_product_attention}[method]
with torch.no_grad():
    out = fn(q, k, v)
dt = time.perf_counter() - t0
print((status_kib("VmHWM:") - base) / 1024, dt * 1e3)
"""


def attention_section(run: Run, quick: bool) -> None:
    rows = []
    for n in (1024, 2048) if quick else (1024, 2048, 4096, 8192):
        cells = {}
        for method in ("naive", "tiled", "sdpa"):
            out = subprocess.run([sys.executable, "-c", _ATTN_CHILD, method, str(n)], capture_output=True,
                                 text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
            mib, ms = (float(v) for v in out.stdout.split())
            cells[method] = (mib, ms)
        score_mib = 4 * n * n * 4 / 2**20
        rows.append([n, f"{score_mib:.0f}"] + [f"+{cells[m][0]:.0f} / {cells[m][1]:.0f}" for m in ("naive", "tiled", "sdpa")])
        print(rows[-1], flush=True)
    body = table(["N", "one fp32 score tensor MiB (4 heads)", "naive: extra peak RSS MiB / ms",
                  "tiled reference (256x256 blocks)", "F.scaled_dot_product_attention"], rows)
    body += ["", "B=1, 4 heads, d=64, fp32, forward only, one thread, a fresh process per cell (peak RSS, VmHWM "
             "reset through /proc/self/clear_refs after the inputs were made, minus the RSS at that point; Linux). Naive attention holds the N x N scores (and softmax output); "
             "the tiled reference holds blocks only, so its growth is linear in N; SDPA is PyTorch's fused "
             "flash kernel on CPU. Exactness of the tiled reference is tested (tests/nn/test_attention_ref.py)."]
    run.write("Compression", body, tag="attention")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--section", default="all",
                    choices=("all", "kernel", "model", "storage", "attention", "qat", "qat_patchcore", "int8", "torch_int8",
                             "lora"))
    ap.add_argument("--variants", default="", help="qat section: comma-separated QAT variant letters (default all)")
    ap.add_argument("--stored-only", action="store_true",
                    help="qat section: leave out (and name) variants whose stored result does not exist yet")
    add_doc_args(ap, "compress", "3 kernel shapes, Lite0 storage only, N <= 2048, short training")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/compress.py")
    sections = (("kernel", "model", "storage", "attention", "qat", "qat_patchcore", "int8", "torch_int8", "lora")
                if args.section == "all" else (args.section,))
    for section in sections:
        if section == "kernel":
            kernel_section(run, args.quick)
        elif section == "model":
            model_section(run, args.quick)
        elif section == "storage":
            storage_section(run, args.quick)
        elif section == "attention":
            attention_section(run, args.quick)
        elif section in ("int8", "torch_int8"):
            import _compress_int8

            getattr(_compress_int8, f"{section}_section")(run, args.quick)
        elif section == "qat":
            import _compress_train

            _compress_train.qat_section(run, args.quick, [v for v in args.variants.split(",") if v], args.stored_only)
        else:
            import _compress_train

            getattr(_compress_train, f"{section}_section")(run, args.quick)
    print(json.dumps({"sections": sections}))


if __name__ == "__main__":
    main()
