"""Training sections of benchmarks/compress.py: LoRA vs full fine-tuning vs peft and ternary QAT, on the
synthetic apples (classifier), bricks and the grass texture (PatchCore); the int8 sections are in
_compress_int8.py.

Everything trains through `fovea.engine.train.fit` (the classifier's `ClassificationTask`); the
fp32 full fine-tune is cached under runs/compress_bench/ so the QAT and int8 sections start from the
same model. One torch thread; CPU seconds are this process's.
"""

from __future__ import annotations

import copy
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
# PatchCore reads blocks.2 (stride 8) and blocks.4 (stride 16): blocks 0-2 (40 k weights, 6 % of the
# feature path) stay fp32, so the finer feature layer is exact; the pointwise convs of blocks 3+ are ternary
PATCHCORE_TERNARY = dict(include=LITE0_TERNARY["include"], exclude=("blocks.0.*", "blocks.1.*", "blocks.2.*"))
PATCHCORE_FP32_PREFIXES = ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2.")  # not trained in QAT


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


def _holdout_accuracy(pipe, data, quick: bool) -> float:
    """Accuracy on the test split plus the 600 held-out crops of _compress_int8 (one crop = 0.15 points)."""
    from _compress_int8 import classifier_test_images

    images, targets = classifier_test_images(data, quick)
    with torch.inference_mode():
        pred = [int(pipe.network(pipe.preprocess(torch.from_numpy(im)[None])).argmax()) for im in images]
    return float((np.asarray(pred) == targets).mean())


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
    big = {k: _holdout_accuracy(m.eval(), data, quick) for k, m in (("fp32", fp32), ("ptq", ptq), ("qat", qat))}
    rows = [["classifier: fp32 full fine-tune (accuracy)", f"{full['test_acc']:.3f}", "-", f"{big['fp32']:.3f}", "-", "-"],
            ["classifier: ternary, no fine-tuning (PTQ)", f"{ptq_acc:.3f}", f"{100 * (ptq_acc - full['test_acc']):+.1f}",
             f"{big['ptq']:.3f}", f"{100 * (big['ptq'] - big['fp32']):+.1f}", "-"],
            ["classifier: ternary QAT (STE, from the fp32 model)", f"{rec['test_acc']:.3f}",
             f"{100 * (rec['test_acc'] - full['test_acc']):+.1f}", f"{big['qat']:.3f}",
             f"{100 * (big['qat'] - big['fp32']):+.1f}", f"{rec['cpu_s']:.0f}"]]
    met = big["qat"] >= big["fp32"] - 0.02
    body = [f"Classifier: the pointwise convs of Lite0 (`conv_pw`, `conv_pwl`, `conv_head`: {len(rep.converted)} "
            f"layers, {n_tern / n_all:.0%} of the parameters) ternary with int8 per-pixel activations; stem, depthwise "
            "convs and head stay float; QAT = `ternarize` then `fit` (AdamW 1e-3, cosine, 10 epochs) on the apples; "
            "accuracy on the 60-crop test split and on 660 crops (plus 600 held out, another generator seed; one "
            "crop is 0.15 points). PatchCore: the `qat_patchcore` section.", "",
            *table(["model", "test acc (60)", "vs fp32 (points)", "acc, 660 crops", "vs fp32 (points)", "QAT CPU s"],
                   rows),
            "", f"Done-when (classifier QAT within 2 points of fp32, 660 crops): {'MET' if met else 'NOT met'} in this run."]
    run.write("Compression", body, tag="qat")


def qat_patchcore_section(run, quick: bool) -> None:
    rows, descs, met = [], [], True
    for splits, desc in (bricks(quick), grass(quick)):
        pc = patchcore_qat(splits, quick)
        descs.append(desc)
        d = lambda v: f"{100 * (v - pc['fp32']):+.1f}"  # noqa: E731
        rows += [[desc, "fp32 Lite0 backbone", f"{pc['fp32']:.3f}", "-", "-"],
                 [desc, "every pointwise conv ternary, no fine-tuning", f"{pc['ptq_all']:.3f}", d(pc["ptq_all"]), "-"],
                 [desc, "blocks 3+ pointwise ternary, no fine-tuning", f"{pc['ptq']:.3f}", d(pc["ptq"]), "-"],
                 [desc, "blocks 3+ pointwise ternary, QAT (feature distillation)", f"{pc['qat']:.3f}", d(pc["qat"]),
                  f"{pc['cpu_s']:.0f}"]]
        met &= pc["qat"] >= pc["fp32"] - 0.02
    body = ["PatchCore reads blocks.2 (stride 8) and blocks.4 (stride 16) of Lite0. Ternary: the pointwise convs "
            "of blocks 3+ (blocks 0-2, 40 k weights, stay fp32, so the stride-8 feature layer is exact; "
            f"{patchcore_ternary_share():.0%} of the weights PatchCore's features depend on are ternary), int8 "
            "per-pixel activations. QAT = feature distillation on the normal training images only (no labels): the "
            "ternary layers (blocks 3+; the fp32 layers before them stay frozen) fitted to the fp32 backbone's "
            "3x3-pooled feature maps (per layer MSE / mean square + 1 - cosine), random 128 px crops and flips, AdamW "
            f"one-cycle 1e-3, {10 if quick else 40} epochs, BN statistics kept; then PatchCore builds its memory bank "
            f"with that backbone. Data: {'; '.join(descs)}. With 20-30 test images per class the set-to-set spread "
            "of AUROC is several points: read the grass rows as +-0.03.", "",
            *table(["data", "backbone", "image AUROC", "vs fp32 (points)", "QAT CPU s"], rows),
            "", f"Done-when (PatchCore QAT within 2 points of fp32 on both sets): {'MET' if met else 'NOT met'} in this run."]
    run.write("Compression", body, tag="qat_patchcore")


def bricks(quick: bool):
    from fovea.data import load_mvtec
    from fovea.synth.bricks import generate_bricks

    n_train, n_good, n_bad = (30, 16, 16) if quick else (40, 24, 24)
    root = ROOT / f"bricks_{n_train}"
    if not (root / "one_up" / "train").is_dir():
        generate_bricks(root, "one_up", n_train, n_good, n_bad, 256, 0)
    return load_mvtec(root, "one_up", val_split_ratio=0.5, seed=0), f"bricks one_up, {n_train} normal train images"


def grass(quick: bool):
    """The grass texture (fovea.synth.textures): PatchCore is far from 1.0 AUROC there (0.88 in
    docs/benchmarks/anomaly.md), so a change in the backbone shows. Full test split (no val taken)."""
    from fovea.data import load_mvtec
    from fovea.synth.textures import generate_textures

    n_train, n_good, n_bad = (30, 16, 16) if quick else (40, 20, 30)
    root = ROOT / f"grass_{n_train}"
    if not (root / "grass" / "train").is_dir():
        generate_textures(root, "grass", n_train, n_good, n_bad, 256, 0)
    return (load_mvtec(root, "grass", val_split_ratio="same_as_test", seed=0),
            f"grass texture, {n_train} normal train images, {n_good} + {n_bad} test")


def _patchcore(backbone_state=None, ternary: dict | None = None):
    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline

    model = build_model("patchcore", backbone="efficientnet_lite0", layers=(2, 3), coreset_ratio=0.1,
                        num_neighbors=9, seed=0)
    if ternary:
        ternarize(model.extractor.net, **ternary)
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


def _distill(student, teacher, train_x: torch.Tensor, epochs: int, lr: float, frozen=()) -> float:
    """Fit the ternary backbone `student` to the fp32 `teacher`'s pooled feature maps (PatchCore's 3x3 average
    over each feature layer) on normal images: per layer MSE / mean(teacher^2) + (1 - cosine over channels),
    random 128 px crops and flips (features are local), AdamW one-cycle; BN statistics stay the fp32 ones.
    Parameters whose names start with a prefix in `frozen` (the fp32 layers before the first ternary one,
    which already equal the teacher's) are not trained. Returns CPU seconds."""
    import torch.nn.functional as F

    student.train()
    for name, p in student.named_parameters():
        p.requires_grad_(not name.startswith(tuple(frozen)))
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    batches = (len(train_x) + 7) // 8
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * batches, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    c0 = _cpu()
    for _ in range(epochs):
        for xb in train_x[torch.randperm(len(train_x), generator=g)].split(8):
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(3)
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(2)
            top, left = (int(v) for v in torch.randint(0, xb.shape[-1] - 127, (2,), generator=g))
            xb = xb[:, :, top:top + 128, left:left + 128]
            with torch.no_grad():
                target = [F.avg_pool2d(f, 3, 1, 1) for f in teacher(xb)]
            loss = sum(F.mse_loss(s, t) / t.pow(2).mean() + (1 - F.cosine_similarity(s, t, dim=1)).mean()
                       for s, t in zip((F.avg_pool2d(f, 3, 1, 1) for f in student(xb)), target))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return _cpu() - c0


def patchcore_ternary_share() -> float:
    """Share of the weights PatchCore's features depend on (stem .. blocks.4) that PATCHCORE_TERNARY makes ternary."""
    net = _patchcore().model.extractor.net
    unused = ("blocks.5.", "blocks.6.", "conv_head.", "bn2.")
    total = sum(p.numel() for n, p in net.named_parameters() if not n.startswith(unused))
    report = ternarize(net, **PATCHCORE_TERNARY)
    return sum(net.get_submodule(n).weight.numel() for n in report.converted if not n.startswith(unused)) / total


def patchcore_qat(splits, quick: bool) -> dict:
    """fp32 / ternary PTQ (all pointwise convs, and blocks 3+ only) / ternary QAT (blocks 3+) PatchCore AUROC."""
    fp32 = _patchcore()
    train_x, test_x = _images(fp32, splits.train), _images(fp32, splits.test)
    state = fp32.model.extractor.net.state_dict()
    out = {"fp32": _auroc(fp32, train_x, splits.test, test_x)}
    out["ptq_all"] = _auroc(_patchcore(state, ternary=LITE0_TERNARY), train_x, splits.test, test_x)
    out["ptq"] = _auroc(_patchcore(state, ternary=PATCHCORE_TERNARY), train_x, splits.test, test_x)
    student = _patchcore(state, ternary=PATCHCORE_TERNARY)
    out["cpu_s"] = _distill(student.model.extractor.net, fp32.model.extractor.net.eval(), train_x,
                            epochs=10 if quick else 40, lr=1e-3, frozen=PATCHCORE_FP32_PREFIXES)
    student.model.extractor._frozen.clear()  # the extractor's cached inference graph holds the old weights
    out["qat"] = _auroc(student, train_x, splits.test, test_x)
    return out
