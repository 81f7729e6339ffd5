"""Training sections of benchmarks/compress.py: LoRA vs full fine-tuning vs peft, ternary QAT and
int8 ONNX Runtime static quantization, on the synthetic apples (classifier) and bricks (PatchCore).

Everything trains through `fovea.engine.train.fit` (the classifier's `ClassificationTask`); the
fp32 full fine-tune is cached under runs/compress_bench/ so the QAT and int8 sections start from the
same model. One torch thread; CPU seconds are this process's.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _doc import table

from fovea.classify.data import Augment, ImageClassDataset, load_samples
from fovea.classify.model import ClassifierRecipe, build_classifier
from fovea.classify.train import ClassificationTask, predict_loader
from fovea.compress import lora, ternarize
from fovea.engine.train import TrainConfig, fit
from fovea.synth.apples import generate_apple_crops

ROOT = Path(__file__).resolve().parents[1] / "runs" / "compress_bench"
INPUT = 128
LITE0_TERNARY = dict(include=("blocks.*.conv_pw", "blocks.*.conv_pwl", "conv_head"))  # pointwise convs


def _cpu() -> float:
    return time.process_time()


def apples(quick: bool):
    n = 120 if quick else 200
    data = ROOT / f"apples_{n}"
    if not (data / "test").is_dir():
        generate_apple_crops(data, n_per_class=n, size=128, seed=0)
    train, names = load_samples(data / "train")
    val, _ = load_samples(data / "val", names)
    test, _ = load_samples(data / "test", names)
    size = (INPUT, INPUT)
    aug = Augment(scale=(0.9, 1.0), hflip=True, vflip=True)
    return (ImageClassDataset(train, names, size, train=True, augment=aug), ImageClassDataset(val, names, size),
            ImageClassDataset(test, names, size), list(names))


def _config(quick: bool, lr: float, out: str, epochs: int | None = None) -> TrainConfig:
    return TrainConfig(optimizer="adamw", lr=lr, weight_decay=0.01, batch_size=32,
                       max_epochs=epochs or (3 if quick else 5), schedule="cosine", warmup_epochs=1, seed=0,
                       monitor="val_acc", mode="max", out_dir=str(ROOT / "fit" / out),
                       max_cpu_time_s=90 if quick else 150)


def accuracy(pipe, ds) -> float:
    probs, targets = predict_loader(pipe.eval(), torch.utils.data.DataLoader(ds, batch_size=64))
    return float((probs.argmax(1) == targets).mean())


def train(pipe, data, cfg) -> dict:
    train_ds, val_ds, test_ds, _ = data
    c0, t0 = _cpu(), time.perf_counter()
    result = fit(ClassificationTask(pipe), train_ds, val_ds, cfg)
    return {"test_acc": accuracy(pipe, test_ds), "val_acc": result.best_metric, "cpu_s": _cpu() - c0,
            "wall_s": time.perf_counter() - t0, "epochs": len(result.history),
            "trainable": sum(p.numel() for p in pipe.parameters() if p.requires_grad)}


def fp32_classifier(data, quick: bool):
    """The full fine-tune from offline ImageNet weights (cached) and its training record."""
    names = data[3]
    recipe = ClassifierRecipe(backbone="efficientnet_lite0", class_names=names, input_size=(INPUT, INPUT))
    torch.manual_seed(0)
    pipe = build_classifier(recipe)
    cache = ROOT / f"full_ft_{'quick' if quick else 'full'}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        pipe.load_state_dict(saved["state"])
        return pipe, saved["record"]
    record = train(pipe, data, _config(quick, 5e-4, "full"))
    torch.save({"state": pipe.state_dict(), "record": record}, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)  # atomic: parallel sections wait for this file
    return pipe, record


def _peft_pipe(names):
    import peft

    recipe = ClassifierRecipe(backbone="efficientnet_lite0", class_names=names, input_size=(INPUT, INPUT))
    torch.manual_seed(0)
    pipe = build_classifier(recipe)
    targets = [n for n, m in pipe.network.named_modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and n != "classifier"]
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0, modules_to_save=["classifier"])
    pipe.network = peft.get_peft_model(pipe.network, cfg)
    return pipe


def lora_section(run, quick: bool) -> None:
    data = apples(quick)
    names = data[3]
    rows = []
    _, full = fp32_classifier(data, quick)
    rows.append(["full fine-tuning (all weights)", full, "-"])
    recipe = ClassifierRecipe(backbone="efficientnet_lite0", class_names=names, input_size=(INPUT, INPUT))
    torch.manual_seed(0)
    pipe = build_classifier(recipe)
    report = lora.add_lora(pipe.network, rank=8, alpha=16, train_also=("classifier.*",))
    rec = train(pipe, data, _config(quick, 2e-3, "lora"))
    size = lora.save_lora(pipe.network, ROOT / "lite0_apples_lora.safetensors")
    rows.append([f"fovea LoRA r=8 ({len(report.wrapped)} convs; {len(report.skipped)} depthwise/head left)",
                 rec, f"{size / 1024:.0f} KB"])
    pipe = _peft_pipe(names)
    rec = train(pipe, data, _config(quick, 2e-3, "peft"))
    pipe.network.save_pretrained(str(ROOT / "peft_adapter"))
    peft_size = sum(f.stat().st_size for f in (ROOT / "peft_adapter").glob("*.safetensors"))
    rows.append(["peft LoRA r=8 (same convs, head saved)", rec, f"{peft_size / 1024:.0f} KB"])
    cells = [[name, f"{r['test_acc']:.3f}", f"{100 * (r['test_acc'] - full['test_acc']):+.1f}", f"{r['val_acc']:.3f}",
              f"{r['trainable']:,}", size, r["epochs"], f"{r['cpu_s']:.0f}"] for name, r, size in rows]
    body = [f"EfficientNet-Lite0 from offline ImageNet weights on the synthetic apples ({len(data[0])} train / "
            f"{len(data[1])} val / {len(data[2])} test crops, input {INPUT} px), AdamW (full lr 5e-4, adapters 2e-3), "
            "cosine, same epochs and CPU cap, best epoch by val accuracy, all through `fovea.engine.train.fit`.", "",
            *table(["method", "test acc", "vs full (points)", "val acc", "trainable params", "adapter file",
                    "epochs", "train CPU s"], cells),
            "", f"Done-when (adapters within 2 points of full fine-tuning): "
                f"{'MET' if rows[1][1]['test_acc'] >= full['test_acc'] - 0.02 else 'NOT met'} in this run."]
    run.write("Compression", body, tag="lora")


def qat_section(run, quick: bool) -> None:
    data = apples(quick)
    fp32, full = fp32_classifier(data, quick)
    ptq = copy.deepcopy(fp32)
    rep = ternarize(ptq.network, **LITE0_TERNARY)
    ptq_acc = accuracy(ptq, data[2])
    n_tern = sum(ptq.network.get_submodule(n).weight.numel() for n in rep.converted)
    n_all = sum(p.numel() for p in fp32.network.parameters())
    qat = copy.deepcopy(fp32)
    ternarize(qat.network, **LITE0_TERNARY)
    rec = train(qat, data, _config(quick, 1e-3, "qat", epochs=4 if quick else 10))
    rows = [["fp32 full fine-tune", f"{full['test_acc']:.3f}", "-", "-"],
            ["ternary, no fine-tuning (PTQ)", f"{ptq_acc:.3f}", f"{100 * (ptq_acc - full['test_acc']):+.1f}", "-"],
            ["ternary QAT (STE, from the fp32 model)", f"{rec['test_acc']:.3f}",
             f"{100 * (rec['test_acc'] - full['test_acc']):+.1f}", f"{rec['cpu_s']:.0f}"]]
    pc = patchcore_qat(quick)
    rows += [["PatchCore, fp32 Lite0 backbone (image AUROC)", f"{pc['fp32']:.3f}", "-", "-"],
             ["PatchCore, ternary backbone, no fine-tuning", f"{pc['ptq']:.3f}", f"{100 * (pc['ptq'] - pc['fp32']):+.1f}", "-"],
             ["PatchCore, ternary backbone QAT (feature distillation)", f"{pc['qat']:.3f}",
              f"{100 * (pc['qat'] - pc['fp32']):+.1f}", f"{pc['cpu_s']:.0f}"]]
    met = rec["test_acc"] >= full["test_acc"] - 0.02 and pc["qat"] >= pc["fp32"] - 0.02
    body = [f"Ternarized: the pointwise convs of Lite0 (`conv_pw`, `conv_pwl`, `conv_head`: {len(rep.converted)} "
            f"layers, {n_tern / n_all:.0%} of the parameters) with int8 per-pixel activations; stem, depthwise "
            "convs and head stay float. Classifier QAT: `ternarize` then `fit` (AdamW 1e-3, cosine, 10 epochs) on the apples; PatchCore QAT: 12 epochs, AdamW 2e-4. "
            f"PatchCore ({pc['desc']}): the backbone's same layers ternarized and fine-tuned to reproduce the fp32 "
            "backbone's feature maps (MSE over layers 2, 3) on the normal training images only; then PatchCore fits "
            "its memory bank with that backbone.", "",
            *table(["model", "test acc / AUROC", "vs fp32 (points)", "QAT CPU s"], rows),
            "", f"Done-when (QAT within 2 points of fp32 for both): {'MET' if met else 'NOT met'} in this run."]
    run.write("Compression", body, tag="qat")


def bricks(quick: bool):
    from fovea.data import load_mvtec
    from fovea.synth.bricks import generate_bricks

    n_train, n_good, n_bad = (30, 16, 16) if quick else (40, 24, 24)
    root = ROOT / f"bricks_{n_train}"
    if not (root / "one_up" / "train").is_dir():
        generate_bricks(root, "one_up", n_train, n_good, n_bad, 256, 0)
    return load_mvtec(root, "one_up", val_split_ratio=0.5, seed=0), f"bricks one_up, {n_train} normal train images"


def _patchcore(backbone_state=None, ternary=False):
    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline

    model = build_model("patchcore", backbone="efficientnet_lite0", layers=(2, 3), coreset_ratio=0.1,
                        num_neighbors=9, seed=0)
    if ternary:
        ternarize(model.extractor.net, **LITE0_TERNARY)
    if backbone_state is not None:
        model.extractor.net.load_state_dict(backbone_state)
    return AnomalyPipeline(model, (256, 256), 4.0).eval()


def _images(pipe, samples):
    from fovea.io import read_image

    return torch.cat([pipe.preprocess(torch.from_numpy(np.require(read_image(s.path), requirements="W"))[None])
                      for s in samples])


def _auroc(pipe, train_x, test_samples, test_x) -> float:
    from sklearn.metrics import roc_auc_score

    pipe.model.fit(iter(train_x.split(8)))
    with torch.no_grad():
        scores = torch.cat([pipe.core(x)[0] for x in test_x.split(8)]).numpy()
    return float(roc_auc_score([int(s.label) for s in test_samples], scores))


def patchcore_qat(quick: bool) -> dict:
    splits, desc = bricks(quick)
    fp32 = _patchcore()
    train_x, test_x = _images(fp32, splits.train), _images(fp32, splits.test)
    out = {"desc": desc, "fp32": _auroc(fp32, train_x, splits.test, test_x)}
    out["ptq"] = _auroc(_patchcore(fp32.model.extractor.net.state_dict(), ternary=True), train_x, splits.test, test_x)
    student = _patchcore(fp32.model.extractor.net.state_dict(), ternary=True)
    net, teacher = student.model.extractor.net, fp32.model.extractor.net.eval()
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    for m in net.modules():  # BN statistics stay those of the fp32 backbone
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-4)
    c0 = _cpu()
    for _ in range(3 if quick else 12):
        for xb in train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))].split(8):
            with torch.no_grad():
                target = teacher(xb)
            loss = sum(torch.nn.functional.mse_loss(s, t) / t.pow(2).mean() for s, t in zip(net(xb), target))
            opt.zero_grad()
            loss.backward()
            opt.step()
    out["cpu_s"] = _cpu() - c0
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    student.model.extractor._frozen.clear()  # the extractor's cached inference graph holds the old weights
    out["qat"] = _auroc(student, train_x, splits.test, test_x)
    return out


def _paired_median_ms(fns: dict, xs, rounds: int = 3) -> dict:
    """Median process-CPU ms per call of each fn over xs (single-threaded sessions: CPU time is the
    compute time; wall time on a shared machine counts preemptions), calls interleaved
    (fn_a(x), fn_b(x), ...) so cache and frequency changes hit every variant alike."""
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


def int8_section(run, quick: bool) -> None:
    from fovea.compress.int8 import quantize_onnx_static
    from fovea.engine.export import export_onnx

    out = ROOT / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    data = apples(quick)
    pipe, _ = fp32_classifier(data, quick)
    fp32_path = export_onnx(pipe.eval(), out / "classifier.onnx")
    train_imgs = [np.ascontiguousarray(data[0].image(i).numpy()) for i in range(0, len(data[0]), 4)][:32]
    int8_path = quantize_onnx_static(fp32_path, out / "classifier.int8.onnx", train_imgs)
    dw_path = quantize_onnx_static(fp32_path, out / "classifier.int8dw.onnx", train_imgs, keep_depthwise_float=True)
    test_imgs = [np.ascontiguousarray(data[2].image(i).numpy()) for i in range(len(data[2]))]
    targets = data[2].targets
    accs, fns = {}, {}
    for kind, path in (("fp32", fp32_path), ("int8", int8_path), ("int8dw", dw_path)):
        fns[kind] = _ort(path)
        probs = np.concatenate([fns[kind](im)[0] for im in test_imgs])
        accs[kind] = float((probs.argmax(1) == targets).mean())
    lats = _paired_median_ms(fns, test_imgs)
    for kind, path, label in (("int8", int8_path, "all convs + Gemm"), ("int8dw", dw_path, "depthwise kept fp32")):
        rows.append([f"classify (Lite0, apples), {label}", "accuracy", f"{accs['fp32']:.3f}", f"{accs[kind]:.3f}",
                     f"{100 * (accs[kind] - accs['fp32']):+.1f} points", f"{lats['fp32']:.1f}", f"{lats[kind]:.1f}",
                     f"{fp32_path.stat().st_size / 2**20:.1f} -> {path.stat().st_size / 2**20:.1f}"])
    ok_cls = max(accs["int8"], accs["int8dw"]) >= accs["fp32"] - 0.01
    splits, desc = bricks(quick)
    pc = _patchcore()
    pc.model.fit(iter(_images(pc, splits.train).split(8)))
    pc_fp32 = export_onnx(pc, out / "patchcore.onnx")
    pc_int8 = quantize_onnx_static(pc_fp32, out / "patchcore.int8.onnx", _uint8(splits.train)[:32], op_types=("Conv",))
    from sklearn.metrics import roc_auc_score

    test_imgs = _uint8(splits.test)
    labels = [int(s.label) for s in splits.test]
    au, fns = {}, {}
    for kind, path in (("fp32", pc_fp32), ("int8", pc_int8)):
        fns[kind] = _ort(path)
        au[kind] = float(roc_auc_score(labels, [float(np.ravel(fns[kind](im)[2])[0]) for im in test_imgs]))  # raw
    lat = _paired_median_ms(fns, test_imgs, rounds=1)
    rows.append([f"anomaly (PatchCore, {desc})", "image AUROC", f"{au['fp32']:.4f}", f"{au['int8']:.4f}",
                 f"{au['int8'] - au['fp32']:+.4f}", f"{lat['fp32']:.1f}", f"{lat['int8']:.1f}",
                 f"{pc_fp32.stat().st_size / 2**20:.1f} -> {pc_int8.stat().st_size / 2**20:.1f}"])
    ok_pc = au["int8"] >= au["fp32"] - 0.005
    body = ["Exported fovea ONNX graphs (uint8 in, pre- and post-processing inside) quantized by "
            "`fovea.compress.int8.quantize_onnx_static` (ONNX Runtime static QDQ, MinMax calibration, int8 weights "
            "per channel, uint8 activations) on 32 normal training images; evaluated with onnxruntime, one thread, "
            "batch 1, median process-CPU time per image over the test images (fp32 and int8 calls interleaved). PatchCore quantizes its backbone convs only (the "
            "memory-bank distances stay fp32).", "",
            *table(["task", "metric", "fp32 ONNX", "int8 ONNX", "change", "fp32 CPU ms", "int8 CPU ms", "file MiB"], rows),
            "", f"Done-when: PatchCore AUROC within 0.005: {'MET' if ok_pc else 'NOT met'}; classifier within 1 point: "
                f"{'MET' if ok_cls else 'NOT met'} (this run). Segmentation: not measured."]
    run.write("Compression", body, tag="int8")
