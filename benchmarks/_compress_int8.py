"""int8 sections of benchmarks/compress.py: ONNX Runtime static int8 of the exported classifier, PatchCore and
segmenter (accuracy change and latency beside fp32, same run), and the torch int8 paths (torch.ao FX static
int8 of the classifier's convs, dynamic int8 of ViT-S's linears) beside ONNX int8 and fp32.

One thread everywhere; latencies are medians of per-image process-CPU time with the variants interleaved.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _compress_train import ROOT, INPUT, apples, bricks, fp32_classifier, grass
from _doc import table

HOLDOUT = ROOT / "apples_holdout_300"  # 600 more test crops, another generator seed: finer accuracy steps


def _paired_median_ms(fns: dict, xs, rounds: int = 1) -> dict:
    """Median process-CPU ms per call of each fn over xs, calls interleaved (fn_a(x), fn_b(x), ...)."""
    for fn in fns.values():
        fn(xs[0])
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for x in xs:
            for k, fn in fns.items():
                t0 = time.process_time()
                fn(x)
                times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _ort(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda im: sess.run(None, {name: im[None]})


def _uint8(samples):
    from fovea.io import read_image

    return [np.ascontiguousarray(read_image(s.path)) for s in samples]


def classifier_test_images(data, quick: bool):
    """The apple test split plus (full run) 600 held-out crops of generator seed 1: (uint8 images, targets)."""
    from fovea.classify.data import ImageClassDataset, load_samples
    from fovea.synth.apples import generate_apple_crops

    sets = [data[2]]
    if not quick:
        if not (HOLDOUT / "test").is_dir():
            generate_apple_crops(HOLDOUT, n_per_class=300, size=128, seed=1, split=(0.0, 0.0, 1.0))
        samples, _ = load_samples(HOLDOUT / "test", data[3])
        sets.append(ImageClassDataset(samples, data[3], (INPUT, INPUT)))
    images = [np.ascontiguousarray(ds.image(i).numpy()) for ds in sets for i in range(len(ds))]
    return images, np.concatenate([np.asarray(ds.targets) for ds in sets])


def calibration_images(train_ds, n: int = 32) -> list[np.ndarray]:
    """n training crops spread evenly over the (class-sorted) training set, so both classes calibrate."""
    return [np.ascontiguousarray(train_ds.image(int(i)).numpy()) for i in np.linspace(0, len(train_ds) - 1, n)]


CLASSIFIER_VARIANTS = (  # (label, quantize_onnx_static options)
    ("every conv + Gemm int8", dict(keep_first_conv_float=False)),
    ("stem conv kept fp32 (default)", dict()),
    ("stem + depthwise convs kept fp32", dict(keep_depthwise_float=True)),
    ("stem fp32, percentile calibration", dict(calibration="percentile")),
)


def _classifier_rows(quick: bool, out: Path) -> tuple[list, list, str]:
    from fovea.compress.int8 import quantize_onnx_static
    from fovea.engine.export import export_onnx

    data = apples(quick)
    pipe, _ = fp32_classifier(data, quick)
    fp32_path = export_onnx(pipe.eval(), out / "classifier.onnx")
    calib = calibration_images(data[0])
    images, targets = classifier_test_images(data, quick)
    paths = {"fp32": fp32_path}
    for i, (_, opts) in enumerate(CLASSIFIER_VARIANTS[:2] if quick else CLASSIFIER_VARIANTS):
        paths[i] = quantize_onnx_static(fp32_path, out / f"classifier.int8_{i}.onnx", calib, **opts)
    fns = {k: _ort(p) for k, p in paths.items()}
    acc = {k: float((np.concatenate([fn(im)[0] for im in images]).argmax(1) == targets).mean()) for k, fn in fns.items()}
    lat = _paired_median_ms(fns, images[:60])
    rows, ok = [], []
    for k, path in paths.items():
        if k == "fp32":
            continue
        if acc[k] >= acc["fp32"] - 0.01:
            ok.append(CLASSIFIER_VARIANTS[k][0])
        rows.append([f"classify (Lite0, apples), {CLASSIFIER_VARIANTS[k][0]}", "accuracy", f"{acc['fp32']:.3f}",
                     f"{acc[k]:.3f}", f"{100 * (acc[k] - acc['fp32']):+.1f} points", f"{lat['fp32']:.1f}",
                     f"{lat[k]:.1f}", f"{fp32_path.stat().st_size / 2**20:.1f} -> {path.stat().st_size / 2**20:.1f}"])
    return rows, ok, f"{len(images)} test crops"


def _patchcore_rows(quick: bool, out: Path) -> tuple[list, bool]:
    from sklearn.metrics import roc_auc_score

    from _compress_train import _images, _patchcore
    from fovea.compress.int8 import quantize_onnx_static
    from fovea.engine.export import export_onnx

    rows, ok = [], True
    for tag, (splits, desc) in (("bricks", bricks(quick)), ("grass", grass(quick))):
        pc = _patchcore()
        pc.model.fit(iter(_images(pc, splits.train).split(8)))
        fp32_path = export_onnx(pc, out / f"patchcore_{tag}.onnx")
        calib = _uint8(splits.train)[:32]
        int8_path = quantize_onnx_static(fp32_path, out / f"patchcore_{tag}.int8.onnx", calib, op_types=("Conv",))
        test, labels = _uint8(splits.test), [int(s.label) for s in splits.test]
        fns = {"fp32": _ort(fp32_path), "int8": _ort(int8_path)}
        au = {k: float(roc_auc_score(labels, [float(np.ravel(fn(im)[2])[0]) for im in test])) for k, fn in fns.items()}
        lat = _paired_median_ms(fns, test[:16])
        ok &= au["int8"] >= au["fp32"] - 0.005
        rows.append([f"anomaly (PatchCore, {desc})", "image AUROC", f"{au['fp32']:.4f}", f"{au['int8']:.4f}",
                     f"{au['int8'] - au['fp32']:+.4f}", f"{lat['fp32']:.1f}", f"{lat['int8']:.1f}",
                     f"{fp32_path.stat().st_size / 2**20:.1f} -> {int8_path.stat().st_size / 2**20:.1f}"])
    return rows, ok


SEG_RUN = Path(__file__).resolve().parents[1] / "runs" / "bench_segment_apples" / "quick"


def segmenter(quick: bool):
    """(checkpoint folder, test data set, train images folder): benchmarks/segment_apples.py --quick's model when
    it is there, else one trained here the same way but shorter (8 epochs)."""
    from fovea.engine.train import TrainConfig
    from fovea.segment.data import MaskFolderDataset
    from fovea.segment.train import train_segmenter
    from fovea.synth.apples import CLASS_NAMES, generate_apple_scenes

    root = SEG_RUN if (SEG_RUN / "run" / "model" / "recipe.json").is_file() else ROOT / "segment"
    for split, n, seed in (("train", 240, 100), ("val", 40, 200), ("test", 60, 300)):
        if not (root / "data" / split / "images" / f"{n - 1:05d}.png").is_file():
            generate_apple_scenes(root / "data" / split, n=n, size=128, seed=seed, n_apples=(1, 2),
                                  radius_frac=(0.25, 0.38))
    ds = {s: MaskFolderDataset(root / "data" / s / "images", root / "data" / s / "masks", size=(128, 128),
                               augment=s == "train") for s in ("train", "val", "test")}
    if not (root / "run" / "model" / "recipe.json").is_file():
        cfg = TrainConfig(optimizer="adamw", lr=2e-3, batch_size=8, max_epochs=8, schedule="cosine", warmup_epochs=1,
                          monitor="val_miou", mode="max", seed=0, out_dir=str(root / "run"))
        train_segmenter(ds["train"], ds["val"], len(CLASS_NAMES), CLASS_NAMES, "efficientnet_lite0", cfg,
                        input_size=(128, 128), low_index=0)
    return root / "run" / "model", ds["test"], root / "data" / "train" / "images"


def _segment_rows(quick: bool, out: Path) -> tuple[list, str]:
    import fovea
    from fovea.compress.int8 import quantize_onnx_static
    from fovea.io import list_images, read_image
    from fovea.segment.train import evaluate_segmenter

    ckpt, test_ds, train_dir = segmenter(quick)
    fp32_path = fovea.load_predictor(ckpt).export(out / "segment", formats=("onnx",))["onnx"]
    calib = [np.ascontiguousarray(read_image(p)) for p in list(list_images(train_dir))[:32]]
    int8_path = quantize_onnx_static(fp32_path, out / "segment" / "model.int8.onnx", calib)
    miou = {k: evaluate_segmenter(fovea.load_predictor(p), test_ds).metrics["mean_iou"]
            for k, p in (("fp32", fp32_path), ("int8", int8_path))}
    images = [np.ascontiguousarray(test_ds.load(i)[0]) for i in range(min(len(test_ds), 30))]
    lat = _paired_median_ms({"fp32": _ort(fp32_path), "int8": _ort(int8_path)}, images)
    row = ["segment (LRASPP + Lite0, apple scenes 128 px)", "mean IoU", f"{miou['fp32']:.3f}", f"{miou['int8']:.3f}",
           f"{miou['int8'] - miou['fp32']:+.3f}", f"{lat['fp32']:.1f}", f"{lat['int8']:.1f}",
           f"{fp32_path.stat().st_size / 2**20:.1f} -> {int8_path.stat().st_size / 2**20:.1f}"]
    src = "benchmarks/segment_apples.py --quick's checkpoint" if SEG_RUN in ckpt.parents else "trained here (8 epochs)"
    return [row], f"segmenter: {src}, {len(test_ds)} test scenes through `fovea.load_predictor` on each ONNX file"


def int8_section(run, quick: bool) -> None:
    out = ROOT / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    cls_rows, ok_cls, cls_desc = _classifier_rows(quick, out)
    pc_rows, ok_pc = _patchcore_rows(quick, out)
    seg_rows, seg_desc = _segment_rows(quick, out)
    body = ["Exported fovea ONNX graphs (uint8 in, pre- and post-processing inside) quantized by "
            "`fovea.compress.int8.quantize_onnx_static` (ONNX Runtime static QDQ, int8 weights per output channel, "
            "uint8 activations, MinMax calibration unless named) on 32 normal training images (classifier: 32 training crops spread over both classes); evaluated with "
            "onnxruntime, one thread, batch 1; latency = median process-CPU ms per image (fp32 and int8 calls "
            f"interleaved). Classifier accuracy on {cls_desc} (the 60-crop test split plus 600 held-out crops of "
            "another generator seed: one crop is 0.15 points). PatchCore quantizes its backbone convs only (the "
            f"memory-bank distances stay fp32); the grass texture is not trivially separable. {seg_desc}.", "",
            *table(["task", "metric", "fp32 ONNX", "int8 ONNX", "change", "fp32 CPU ms", "int8 CPU ms", "file MiB"],
                   cls_rows + pc_rows + seg_rows),
            "", f"Done-when: PatchCore AUROC within 0.005 (both sets): {'MET' if ok_pc else 'NOT met'}; classifier "
                f"within 1 point: {'MET with ' + ' / '.join(ok_cls) if ok_cls else 'NOT met'} (this run)."]
    run.write("Compression", body, tag="int8")


def _fx_int8(network: torch.nn.Module, calib: list[torch.Tensor]) -> torch.nn.Module:
    """torch.ao FX static int8 (x86 backend: fbgemm/oneDNN) of a conv net, stem conv kept fp32 as in ONNX."""
    from torch.ao.quantization import QConfigMapping, get_default_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    mapping = QConfigMapping().set_global(get_default_qconfig("x86")).set_module_name("conv_stem", None)
    prepared = prepare_fx(copy.deepcopy(network).eval(), mapping, example_inputs=(calib[0],))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    return convert_fx(prepared)


def torch_int8_section(run, quick: bool) -> None:
    import warnings

    import timm

    from fovea.compress.int8 import quantize_onnx_static
    from fovea.engine.export import export_onnx

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    out = ROOT / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    data = apples(quick)
    pipe, _ = fp32_classifier(data, quick)
    pipe.eval()
    images, targets = classifier_test_images(data, quick)
    prep = [pipe.preprocess(torch.from_numpy(im)[None]) for im in images]
    calib_u8 = calibration_images(data[0])
    calib = [pipe.preprocess(torch.from_numpy(im)[None]) for im in calib_u8]
    net = pipe.network.eval()
    fx = _fx_int8(net, calib)
    fp32_onnx = export_onnx(pipe, out / "classifier.onnx")
    int8_onnx = quantize_onnx_static(fp32_onnx, out / "classifier.int8_1.onnx", calib_u8)
    ort32, ort8 = _ort(fp32_onnx), _ort(int8_onnx)
    with torch.inference_mode():
        pred = {"torch fp32 (eager)": [net(x).argmax(1).item() for x in prep],
                "torch int8 (torch.ao FX static, x86)": [fx(x).argmax(1).item() for x in prep]}
        idx = list(range(min(60, len(prep))))
        lat = _paired_median_ms({"torch fp32 (eager)": lambda i: net(prep[i]),
                                 "torch int8 (torch.ao FX static, x86)": lambda i: fx(prep[i]),
                                 "ONNX fp32": lambda i: ort32(images[i]), "ONNX int8 (stem fp32)": lambda i: ort8(images[i])},
                                idx)
    pred["ONNX fp32"] = [int(ort32(im)[0].argmax()) for im in images]
    pred["ONNX int8 (stem fp32)"] = [int(ort8(im)[0].argmax()) for im in images]
    acc = {k: float((np.asarray(v) == targets).mean()) for k, v in pred.items()}
    base = acc["torch fp32 (eager)"]
    rows = [[f"Lite0 apple classifier, 128 px, batch 1: {k}", f"{acc[k]:.3f}", f"{100 * (acc[k] - base):+.1f}",
             f"{lat[k]:.2f}", f"{lat['torch fp32 (eager)'] / lat[k]:.2f}x"] for k in pred]
    vit = timm.create_model("vit_small_patch16_224").eval()
    dyn = torch.ao.quantization.quantize_dynamic(copy.deepcopy(vit), {torch.nn.Linear}, dtype=torch.qint8)
    xs = [torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(4 if quick else 8)]
    with torch.inference_mode():
        vlat = _paired_median_ms({"fp32": vit, "int8": dyn}, xs, rounds=2)
        rel = float(np.mean([((dyn(x) - vit(x)).norm() / vit(x).norm()).item() for x in xs]))
    rows.append(["ViT-S/16 (random init), 224 px, batch 1: torch fp32 (eager)", "-", "-", f"{vlat['fp32']:.1f}", "1.00x"])
    rows.append([f"ViT-S/16: torch int8 (torch.ao dynamic, Linear layers; logits rel. err {rel:.1e})", "-", "-",
                 f"{vlat['int8']:.1f}", f"{vlat['fp32'] / vlat['int8']:.2f}x"])
    body = ["The torch int8 paths beside ONNX Runtime int8 and fp32, one thread, same run. Classifier: the trained "
            f"Lite0 apple model; accuracy on {len(images)} test crops; latency = median process-CPU ms per image over "
            "60 crops, the four variants interleaved (torch rows time the network on the preprocessed tensor; the "
            "ONNX graphs include the uint8 preprocessing, a small part at 128 px). torch.ao FX static int8: "
            "x86 default qconfig (per-channel int8 weights, histogram-calibrated uint8 activations) on 32 training "
            "images, stem conv fp32. ViT-S: dynamic int8 (weights int8 per tensor, activations quantized per call) "
            "on random-init weights, so only latency and the output error are meaningful. "
            "torch.ao quantization is deprecated in torch 2.14 (moved to torchao), which is not a fovea dependency.", "",
            *table(["model / path", "accuracy", "vs torch fp32 (points)", "CPU ms", "speed-up vs torch fp32"], rows)]
    run.write("Compression", body, tag="torch_int8")
