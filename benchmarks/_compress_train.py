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
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _doc import table

from fovea.classify.data import Augment, ImageClassDataset, load_samples
from fovea.classify.model import ClassifierRecipe, build_classifier
from fovea.classify.train import ClassificationTask, predict_loader
from fovea.compress import lora, ternarize
from fovea.engine.train import TrainConfig, fit
from fovea.nn.ternary import EPS, BitConv2d, fake_quant_activations, fake_quant_weights
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


def _fresh_accuracy(pipe, data, quick: bool) -> float:
    """Accuracy on 600 (quick: 120) more crops of generator seed 2, used by no choice of the QAT recipe."""
    root = ROOT / f"apples_fresh_{60 if quick else 300}"
    if not (root / "test").is_dir():
        generate_apple_crops(root, n_per_class=60 if quick else 300, size=128, seed=2, split=(0.0, 0.0, 1.0))
    samples, _ = load_samples(root / "test", data[3])
    return accuracy(pipe, ImageClassDataset(samples, data[3], (INPUT, INPUT)))


def _holdout_accuracy(pipe, data, quick: bool) -> float:
    """Accuracy on the test split plus the 600 held-out crops of _compress_int8 (one crop = 0.15 points)."""
    from _compress_int8 import classifier_test_images

    images, targets = classifier_test_images(data, quick)
    with torch.inference_mode():
        pred = [int(pipe.network(pipe.preprocess(torch.from_numpy(im)[None])).argmax()) for im in images]
    return float((np.asarray(pred) == targets).mean())


@dataclass(frozen=True)
class QatVariant:
    """One classifier QAT recipe: training schedule, loss and quantiser granularity (all from the fp32 model)."""

    label: str
    epochs: int = 10
    lr: float = 1e-3
    warmup_epochs: int = 1
    kd: float = 0.0            # weight of the KL to the fp32 model's softened logits (1 - kd on the labels' CE)
    temperature: float = 2.0
    weight_scale: str = "tensor"   # "tensor": one absmean per layer (BitNet) | "channel": one per output channel
    activations: str = "pixel"     # "pixel": int8 absmax per pixel (BitNet's per token) | "image" | "none"
    float_layers: tuple = ()       # exclude patterns kept float besides stem, depthwise convs and head
    freeze_bn: bool = False        # BN layers normalise with the fp32 model's running statistics throughout
    recipe: bool = False           # the recommended recipe: the done-when verdict is read from this row


QAT_VARIANTS = (
    QatVariant("A: STE, AdamW 1e-3, 10 epochs (previous recipe)"),
    QatVariant("B: as A, 30 epochs", epochs=30),
    QatVariant("C: as A, lr 3e-4, 2 warm-up epochs", lr=3e-4, warmup_epochs=2),
    QatVariant("D: as A + KD from fp32 logits (T 2, weight 0.7)", kd=0.7),
    QatVariant("E: as A, per-channel weight scale", weight_scale="channel"),
    QatVariant("F: as A, blocks 0-1 and conv_head float", float_layers=("blocks.0.*", "blocks.1.*", "conv_head")),
    QatVariant("G: as A, activations int8 per image", activations="image"),
    QatVariant("H: as A, weights only (activations float)", activations="none"),
    QatVariant("I: as A, BN statistics frozen (fp32 running stats)", freeze_bn=True),
)


def _channel_absmean_fake_quant(weight: torch.Tensor) -> torch.Tensor:
    """Ternary fake-quant with one absmean scale per output channel (dim 0), straight-through gradient."""
    dims = tuple(range(1, weight.ndim))
    scale = weight.detach().abs().mean(dims, keepdim=True).clamp(min=EPS)
    dequant = (weight.detach() / scale).round().clamp(-1, 1) * scale
    return weight + (dequant - weight).detach()


class _VariantBitConv2d(BitConv2d):
    """BitConv2d with the quantiser granularity of a QatVariant (benchmark-only: measures what it buys)."""

    weight_scale = "tensor"
    activations = "pixel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations == "pixel":
            x = fake_quant_activations(x, dim=1)
        elif self.activations == "image":
            x = fake_quant_activations(x.flatten(1), dim=1).view_as(x)
        w = _channel_absmean_fake_quant(self.weight) if self.weight_scale == "channel" else fake_quant_weights(self.weight)
        return self._conv_forward(x, w, self.bias)


def _eval_mode_only(module: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(module, False)


def _ternarize_variant(network: torch.nn.Module, v: QatVariant):
    exclude = tuple(LITE0_TERNARY.get("exclude", ())) + v.float_layers
    report = ternarize(network, include=LITE0_TERNARY["include"], exclude=exclude)
    for name in report.converted:
        layer = network.get_submodule(name)
        layer.__class__ = _VariantBitConv2d
        layer.weight_scale, layer.activations = v.weight_scale, v.activations
    return report


class _DistilledClassificationTask(ClassificationTask):
    """Cross-entropy on the labels blended with the KL to a frozen teacher's softened logits (Hinton et al.)."""

    def __init__(self, model, teacher, kd: float, temperature: float):
        super().__init__(model)
        self.__dict__["teacher"] = teacher.eval()
        self.kd, self.temperature = kd, temperature

    def training_loss(self, model, batch) -> torch.Tensor:
        logits = model(batch["image"]).float()
        with torch.no_grad():
            target = self.teacher(batch["image"]).float()
        t = self.temperature
        kl = torch.nn.functional.kl_div(torch.log_softmax(logits / t, 1), torch.softmax(target / t, 1),
                                        reduction="batchmean") * t * t
        return self.kd * kl + (1 - self.kd) * torch.nn.functional.cross_entropy(logits, batch["target"])


def run_qat_variant(fp32, data, v: QatVariant, quick: bool) -> dict:
    """Ternarize a copy of the fp32 classifier as `v` says, fine-tune it through `fit`, measure it."""
    qat = copy.deepcopy(fp32).train()
    report = _ternarize_variant(qat.network, v)
    if v.freeze_bn:  # fit switches the model to train mode after each validation: pin BN layers to eval
        for m in qat.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
                m.train = types.MethodType(_eval_mode_only, m)
    epochs = max(2, v.epochs // 3) if quick else v.epochs
    cfg = TrainConfig(optimizer="adamw", lr=v.lr, weight_decay=0.01, batch_size=32, max_epochs=epochs,
                      schedule="cosine", warmup_epochs=v.warmup_epochs, seed=0, monitor="val_acc", mode="max",
                      out_dir=str(ROOT / "fit" / f"qat_{v.label.split(':')[0]}"))
    task = (_DistilledClassificationTask(qat, fp32, v.kd, v.temperature) if v.kd
            else ClassificationTask(qat))
    train_ds, val_ds, test_ds, _ = data
    c0 = _cpu()
    result = fit(task, train_ds, val_ds, cfg)
    cpu_s = _cpu() - c0
    n_tern = sum(qat.network.get_submodule(n).weight.numel() for n in report.converted)
    return {"test_acc": accuracy(qat, test_ds), "big": _holdout_accuracy(qat.eval(), data, quick),
            "fresh": _fresh_accuracy(qat, data, quick),
            "val_acc": result.best_metric, "cpu_s": cpu_s, "epochs": epochs, "kept_epoch": (result.best_epoch or 0) + 1,
            "layers": len(report.converted), "ternary_share": n_tern / sum(p.numel() for p in qat.parameters())}


@dataclass(frozen=True)
class RecalQatVariant(QatVariant):
    """A QatVariant whose BN running statistics are re-estimated on the training crops after `ternarize` (the
    fp32 statistics do not fit the ternary layers' outputs) and again after the fine-tuning."""

    bn_recal: bool = True


def recalibrate_bn(pipe, ds) -> None:
    """Re-estimate every BatchNorm's running mean / variance as the plain average over `ds` (no gradients)."""
    bns = [m for m in pipe.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    pipe.train()
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(ds, batch_size=32):
            pipe(batch["image"])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    pipe.eval()


def run_recal_qat_variant(fp32, data, v: RecalQatVariant, quick: bool) -> dict:
    """run_qat_variant with the BN statistics re-estimated after ternarizing and after the fine-tuning."""
    qat = copy.deepcopy(fp32)
    report = _ternarize_variant(qat.network, v)
    train_ds, val_ds, test_ds, _ = data
    recalibrate_bn(qat, train_ds)
    qat.train()
    epochs = max(2, v.epochs // 3) if quick else v.epochs
    cfg = TrainConfig(optimizer="adamw", lr=v.lr, weight_decay=0.01, batch_size=32, max_epochs=epochs,
                      schedule="cosine", warmup_epochs=v.warmup_epochs, seed=0, monitor="val_acc", mode="max",
                      out_dir=str(ROOT / "fit" / f"qat_{v.label.split(':')[0]}"))
    task = _DistilledClassificationTask(qat, fp32, v.kd, v.temperature) if v.kd else ClassificationTask(qat)
    c0 = _cpu()
    result = fit(task, train_ds, val_ds, cfg)
    recalibrate_bn(qat, train_ds)
    cpu_s = _cpu() - c0
    n_tern = sum(qat.network.get_submodule(n).weight.numel() for n in report.converted)
    return {"test_acc": accuracy(qat, test_ds), "big": _holdout_accuracy(qat.eval(), data, quick),
            "fresh": _fresh_accuracy(qat, data, quick), "val_acc": result.best_metric, "cpu_s": cpu_s,
            "epochs": epochs, "kept_epoch": (result.best_epoch or 0) + 1, "layers": len(report.converted),
            "ternary_share": n_tern / sum(p.numel() for p in qat.parameters())}


QAT_VARIANTS += (  # added while A-I ran (their validation curves showed the BN statistics problem; before F ended)
    RecalQatVariant("K: as A, BN statistics re-estimated after ternarizing and after QAT"),
    RecalQatVariant("J: recipe: as K, 20 epochs, blocks 0-1 and conv_head float", epochs=20,
                    float_layers=("blocks.0.*", "blocks.1.*", "conv_head"), recipe=True),
)


def _qat_code_key(v: QatVariant, quick: bool) -> str:
    """Hash of the variant, the fp32 model file and the source of every function a QAT row depends on."""
    import hashlib
    import inspect
    import sys

    from fovea.classify import data as classify_data
    from fovea.classify import train as classify_train
    from fovea.engine import train as engine_train
    from fovea.nn import ternary as nn_ternary

    parts = [repr(v), str(quick), (ROOT / f"full_ft_{'quick' if quick else 'full'}.pt").read_bytes()]
    if isinstance(v, RecalQatVariant):
        parts += [inspect.getsource(o) for o in (recalibrate_bn, run_recal_qat_variant)]
    parts += [inspect.getsource(o) for o in (run_qat_variant, _ternarize_variant, _VariantBitConv2d,
                                             _channel_absmean_fake_quant, _DistilledClassificationTask,
                                             _holdout_accuracy, _fresh_accuracy, accuracy, apples, nn_ternary, engine_train,
                                             classify_train, classify_data, sys.modules[ternarize.__module__])]
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
    return h.hexdigest()[:16]


def cached_qat_variant(fp32, data, v: QatVariant, quick: bool) -> dict:
    """run_qat_variant, its result stored under runs/compress_bench/qat_variants/ keyed by `_qat_code_key`, so
    variants can run in parallel processes (`--section qat` then collects them; any code change reruns)."""
    import datetime
    import json

    from _doc import load_average

    path = ROOT / "qat_variants" / f"{_qat_code_key(v, quick)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    load0 = load_average()
    r = (run_recal_qat_variant if isinstance(v, RecalQatVariant) else run_qat_variant)(fp32, data, v, quick)
    r.update(label=v.label, load=f"{load0:.0f}-{load_average():.0f}",
             finished=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(r))
    path.with_suffix(".tmp").replace(path)
    return r


def qat_section(run, quick: bool, variants=None, stored_only: bool = False) -> None:
    """The classifier QAT table: fp32, PTQ, and every QatVariant (default QAT_VARIANTS; `variants` = their letters).
    stored_only: rows whose result is not stored yet (a parallel process still runs them) are left out and named."""
    data = apples(quick)
    fp32, full = fp32_classifier(data, quick)
    fp32.eval()
    ptq = copy.deepcopy(fp32)
    rep = ternarize(ptq.network, **LITE0_TERNARY)
    ptq_acc = accuracy(ptq, data[2])
    n_tern = sum(ptq.network.get_submodule(n).weight.numel() for n in rep.converted)
    n_all = sum(p.numel() for p in fp32.network.parameters())
    ptq_bn = copy.deepcopy(ptq)
    recalibrate_bn(ptq_bn, data[0])
    ptq_bn_acc = accuracy(ptq_bn, data[2])
    models = (("fp32", fp32), ("ptq", ptq), ("ptq_bn", ptq_bn))
    big = {k: _holdout_accuracy(m.eval(), data, quick) for k, m in models}
    fresh = {k: _fresh_accuracy(m, data, quick) for k, m in models}
    pts = lambda a, b: f"{100 * (a - b):+.1f}"  # noqa: E731
    rows = [["fp32 full fine-tune", "-", f"{full['test_acc']:.3f}", "-", f"{big['fp32']:.3f}", "-",
             f"{fresh['fp32']:.3f}", "-", "-", "-", "-", "-"],
            ["ternary, no fine-tuning (PTQ)", f"{n_tern / n_all:.0%}", f"{ptq_acc:.3f}", pts(ptq_acc, full["test_acc"]),
             f"{big['ptq']:.3f}", pts(big["ptq"], big["fp32"]), f"{fresh['ptq']:.3f}", pts(fresh["ptq"], fresh["fp32"]),
             "-", "-", "-", "-"],
            ["ternary, no fine-tuning, BN statistics re-estimated on the training crops", f"{n_tern / n_all:.0%}",
             f"{ptq_bn_acc:.3f}", pts(ptq_bn_acc, full["test_acc"]), f"{big['ptq_bn']:.3f}",
             pts(big["ptq_bn"], big["fp32"]), f"{fresh['ptq_bn']:.3f}", pts(fresh["ptq_bn"], fresh["fp32"]),
             "-", "-", "-", "-"]]
    verdict = None
    variants = [v for v in QAT_VARIANTS if not variants or v.label.split(":")[0] in variants]
    stored = {}
    if stored_only:  # results of parallel runs, matched by label (keys also cover code outside this file)
        import json

        for f in sorted((ROOT / "qat_variants").glob("*.json")):
            r = json.loads(f.read_text())
            stored[r["label"]] = r
    missing = [v.label.split(":")[0] for v in variants if stored_only and v.label not in stored]
    variants = [v for v in variants if v.label.split(":")[0] not in missing]
    for v in variants:
        r = stored[v.label] if stored_only else cached_qat_variant(fp32, data, v, quick)
        print(v.label, r, flush=True)
        rows.append([f"**{v.label}**" if v.recipe else v.label, f"{r['ternary_share']:.0%}", f"{r['test_acc']:.3f}",
                     pts(r["test_acc"], full["test_acc"]), f"{r['big']:.3f}", f"**{pts(r['big'], big['fp32'])}**",
                     f"{r['fresh']:.3f}", pts(r["fresh"], fresh["fp32"]), f"{r['val_acc']:.3f}",
                     f"{r['kept_epoch']} / {r['epochs']}", f"{r['cpu_s']:.0f}", r["load"]])
        if v.recipe or (verdict is None and v is variants[0]):
            verdict = (v, r)
    if verdict is None:
        raise SystemExit(f"no QAT variant to report (left out: {missing}); run them first")
    v, r = verdict
    met = r["big"] >= big["fp32"] - 0.02 and r["fresh"] >= fresh["fp32"] - 0.02
    deployable = [(x, stored[x.label] if stored_only else cached_qat_variant(fp32, data, x, quick)) for x in variants
                  if x.weight_scale == "tensor" and x.activations == "pixel"]
    bv, br = max(deployable, key=lambda t: t[1]["big"])
    best_line = (f"Best deployable row on the 660 crops: {bv.label.split(':')[0]} ({pts(br['big'], big['fp32'])} points; "
                 f"on the fresh 600, which chose nothing, {pts(br['fresh'], fresh['fp32'])}): "
                 f"{'within' if br['big'] >= big['fp32'] - 0.02 and br['fresh'] >= fresh['fp32'] - 0.02 else 'not within'} "
                 "2 points on both.")
    body = [f"Classifier: EfficientNet-Lite0 apple model; ternary = its pointwise convs (`conv_pw`, `conv_pwl`, "
            f"`conv_head`: {len(rep.converted)} layers, {n_tern / n_all:.0%} of the parameters) with int8 activations; "
            "stem, depthwise convs and the linear head stay float. Every QAT row starts from the same fp32 model, "
            "`ternarize`s it and fine-tunes through `fit` (AdamW, weight decay 0.01, batch 32, cosine with linear "
            "warm-up, the epoch of best validation accuracy kept: 60 val crops); rows differ from A only where the "
            "label says. KD: loss = w T^2 KL(teacher || student, temperature T) + (1 - w) CE, the teacher the fp32 "
            "model in eval mode on the same augmented batch. Per-channel scale: absmean per output channel instead "
            "of per layer, and activations per image: one absmax per image instead of per pixel; neither is what "
            "the packed format and the C kernel compute (one weight scale per layer, int8 per pixel), so those rows "
            "only measure what the granularity would buy. Accuracy on the 60-crop test split (one crop = 1.7 "
            "points), on 660 crops (the test split plus 600 crops of generator seed 1; one crop = 0.15 points), "
            "which were used to compare the rows and choose the recipe (bold), and on 600 fresh crops (seed 2) that "
            "chose nothing. CPU s = this process's CPU time for the fine-tuning, one torch thread, nice 19; rows are "
            "stored per variant under runs/compress_bench/qat_variants/ (keyed by the variant, the fp32 model and "
            "the source of the training code) so that variants run in parallel processes; 'load' = the 1-minute "
            "load average at the start and end of that row's run.", "",
            *table(["QAT variant", "ternary share of params", "test acc (60)", "vs fp32 (points)", "acc, 660 crops",
                    "vs fp32, 660 (points)", "acc, 600 fresh", "vs fp32, fresh (points)", "kept val acc",
                    "kept epoch / epochs", "QAT CPU s", "load"], rows),
            "", f"Done-when (classifier QAT within 2 points of fp32; read from {'the recipe row ' + v.label.split(':')[0] if v.recipe else 'row ' + v.label.split(':')[0] + ' (no recipe row in this run)'}: "
                f"{pts(r['big'], big['fp32'])} points on the 660 crops, {pts(r['fresh'], fresh['fp32'])} on the fresh "
                f"600): {'MET' if met else 'NOT met'} in this run. " + best_line]
    if stored_only:
        body += ["", "QAT rows: the results stored by parallel processes running this code (finished "
                     f"{min(r['finished'] for r in stored.values())} to {max(r['finished'] for r in stored.values())}), "
                     "matched by label; fp32 and PTQ rows computed in this run."]
    if missing:
        body += ["", f"Variants still running in other processes when this table was written (left out): "
                     f"{', '.join(missing)}."]
    run.write("Compression", body, tag="qat")


def qat_patchcore_section(run, quick: bool) -> None:
    rows, descs, verdicts = [], [], []
    for splits, desc in (bricks(quick), grass(quick)):
        pc = patchcore_qat(splits, quick)
        descs.append(desc)
        fp32 = pc["fp32"]["auroc"]
        d = lambda v: f"{100 * (v - fp32):+.1f}"  # noqa: E731
        err = lambda r: [f"{r['errors'][k]:.4f}" for k in ("fit", "held", "normal", "anomalous")]  # noqa: E731
        rows += [[desc, "fp32 Lite0 backbone", f"{fp32:.3f}", "-", "-", "-", "-", "-", "-", "-"],
                 [desc, "every pointwise conv ternary, no fine-tuning", f"{pc['ptq_all']['auroc']:.3f}",
                  d(pc["ptq_all"]["auroc"]), *err(pc["ptq_all"]), "-", "-"],
                 [desc, "blocks 3+ pointwise ternary, no fine-tuning (PTQ)", f"{pc['ptq']['auroc']:.3f}",
                  d(pc["ptq"]["auroc"]), *err(pc["ptq"]), "-", "-"]]
        rows += [[desc, f"blocks 3+ pointwise ternary, {r['label']}", f"{r['auroc']:.3f}", d(r["auroc"]), *err(r),
                  f"{r['kept_epoch']} / {len(r['held_out_error']) - 1 if r['held_out_error'] else r['kept_epoch']}",
                  f"{r['cpu_s']:.0f}"] for r in pc["qat"]]
        chosen = min((r for r in pc["qat"] if r["held_out_error"]), key=lambda r: r["held_out_error"][r["kept_epoch"]])
        verdicts.append((desc.split(",")[0], chosen, fp32, pc["ptq"]["auroc"]))
    met = all(c["auroc"] >= f - 0.02 for _, c, f, _ in verdicts)
    body = ["PatchCore reads blocks.2 (stride 8) and blocks.4 (stride 16) of Lite0. Ternary: the pointwise convs "
            "of blocks 3+ (blocks 0-2, 40 k weights, stay fp32, so the stride-8 feature layer is exact; "
            f"{patchcore_ternary_share():.0%} of the weights PatchCore's features depend on are ternary), int8 "
            "per-pixel activations. QAT = feature distillation on normal training images only (no labels): the "
            "ternary layers (blocks 3+; the fp32 layers before them stay frozen) fitted to the fp32 backbone's "
            "features (loss 'pooled': the 3x3-pooled map of each feature layer, MSE / mean square + 1 - cosine; "
            "'embedding': MSE / mean square of the PatchCore embedding the k-NN compares), random 128 px crops and "
            f"flips, AdamW one-cycle (peak lr 1e-3 unless said), {10 if quick else 40} epochs, BN statistics kept. Held-out selection: "
            "the first 3/4 of the normal train images are distilled on, the last 1/4 are not; the epoch (0 = the "
            "PTQ weights) with the lowest relative embedding error on those held-out images is kept (test AUROC "
            "never selects anything). Every memory bank is built from all normal train images. Error columns: "
            "sum |e - e_fp32|^2 / sum |e_fp32|^2 of the PatchCore embeddings (the previous recipe trained on the "
            f"held-out images too). Data: {'; '.join(descs)}. With 20-30 test images per class the set-to-set "
            "spread of AUROC is several points: read the grass rows as +-0.03.", "",
            *table(["data", "backbone", "image AUROC", "vs fp32 (points)", "emb. error: distilled images",
                    "held-out normal train", "test normal", "test anomalous", "kept epoch", "QAT CPU s"], rows), ""]
    for name, c, f, ptq in verdicts:
        body.append(f"- {name}: QAT judged = the held-out-selected recipe with the lowest held-out error, "
                    f"{c['label'].split(' ')[0]}: AUROC {c['auroc']:.3f} vs fp32 {f:.3f} "
                    f"({100 * (c['auroc'] - f):+.1f} points; PTQ {100 * (ptq - f):+.1f}).")
    body += ["", f"Done-when (PatchCore QAT within 2 points of fp32 on both sets): {'MET' if met else 'NOT met'} in "
                 "this run."]
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


def _distill(student_pc, teacher_pc, train_x: torch.Tensor, epochs: int, lr: float, frozen=(),
             held_out: torch.Tensor | None = None, loss: str = "pooled") -> dict:
    """Fit the ternary backbone of PatchCore `student_pc` to the fp32 `teacher_pc`'s features on normal images.

    loss "pooled": PatchCore's 3x3-average-pooled map of each feature layer, per layer MSE / mean(teacher^2) +
    (1 - cosine over channels); "embedding": MSE / mean(teacher^2) of the PatchCore embedding itself (pooled,
    upsampled, concatenated: the vectors the k-NN distance compares). Random 128 px crops and flips (features
    are local), AdamW one-cycle; BN statistics stay the fp32 ones. Parameters whose names start with a prefix
    in `frozen` (the fp32 layers before the first ternary one, which already equal the teacher's) are not
    trained. With `held_out` (normal images not trained on), the relative embedding error on them is measured
    before training (epoch 0 = the PTQ weights) and after every epoch, and the epoch with the lowest error is
    kept. Returns {"cpu_s", "kept_epoch", "held_out_error": per-epoch curve}."""
    import torch.nn.functional as F

    student, teacher = student_pc.extractor.net, teacher_pc.extractor.net.eval()
    for name, p in student.named_parameters():
        p.requires_grad_(not name.startswith(tuple(frozen)))
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    batches = (len(train_x) + 7) // 8
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * batches, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    c0 = _cpu()
    target_held = _embeddings(teacher_pc, held_out) if held_out is not None else None
    curve = [feature_error(student_pc, held_out, target_held)] if held_out is not None else []
    best_state, kept = copy.deepcopy(student.state_dict()), 0
    for epoch in range(1, epochs + 1):
        student.train()
        for m in student.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        for xb in train_x[torch.randperm(len(train_x), generator=g)].split(8):
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(3)
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(2)
            top, left = (int(v) for v in torch.randint(0, xb.shape[-1] - 127, (2,), generator=g))
            xb = xb[:, :, top:top + 128, left:left + 128]
            if loss == "embedding":
                with torch.no_grad():
                    t = teacher_pc.embed(xb)
                s = student_pc.embed(xb)
                value = F.mse_loss(s, t) / t.pow(2).mean()
            else:
                with torch.no_grad():
                    target = [F.avg_pool2d(f, 3, 1, 1) for f in teacher(xb)]
                value = sum(F.mse_loss(s, t) / t.pow(2).mean() + (1 - F.cosine_similarity(s, t, dim=1)).mean()
                            for s, t in zip((F.avg_pool2d(f, 3, 1, 1) for f in student(xb)), target))
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
        student.eval()
        if held_out is not None:
            curve.append(feature_error(student_pc, held_out, target_held))
            if curve[-1] < min(curve[:-1]):
                best_state, kept = copy.deepcopy(student.state_dict()), epoch
    if held_out is None:
        kept = epochs
    else:
        student.load_state_dict(best_state)
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    student_pc.extractor._frozen.clear()  # the extractor's cached inference graph holds the old weights
    return {"cpu_s": _cpu() - c0, "kept_epoch": kept, "held_out_error": curve}


def _embeddings(pc, x: torch.Tensor) -> torch.Tensor:
    """PatchCore embeddings (N, C, h, w) of images x, eager (the weights change between calls: no frozen graph)."""
    import os

    pc.extractor._frozen.clear()
    before = os.environ.get("FOVEA_FROZEN_GRAPH")
    os.environ["FOVEA_FROZEN_GRAPH"] = "0"
    try:
        with torch.no_grad():
            return torch.cat([pc.embed(xb) for xb in x.split(8)])
    finally:
        if before is None:
            del os.environ["FOVEA_FROZEN_GRAPH"]
        else:
            os.environ["FOVEA_FROZEN_GRAPH"] = before


def feature_error(student_pc, x: torch.Tensor, target: torch.Tensor) -> float:
    """Relative squared error sum |e_s - e_t|^2 / sum |e_t|^2 of the student's PatchCore embeddings of x."""
    return float((_embeddings(student_pc, x) - target).pow(2).sum() / target.pow(2).sum())


def patchcore_ternary_share() -> float:
    """Share of the weights PatchCore's features depend on (stem .. blocks.4) that PATCHCORE_TERNARY makes ternary."""
    net = _patchcore().model.extractor.net
    unused = ("blocks.5.", "blocks.6.", "conv_head.", "bn2.")
    total = sum(p.numel() for n, p in net.named_parameters() if not n.startswith(unused))
    report = ternarize(net, **PATCHCORE_TERNARY)
    return sum(net.get_submodule(n).weight.numel() for n in report.converted if not n.startswith(unused)) / total


PATCHCORE_QAT = (  # (label, distil on the first 3/4 of the normal train images and keep the epoch of lowest
    # embedding error on the last 1/4 (else: distil on all, keep the last epoch), loss, peak lr)
    ("(a) QAT, previous recipe: distilled on all train images, last epoch", False, "pooled", 1e-3),
    ("(b) QAT: distilled on 3/4 of the train images, epoch kept by held-out embedding error", True, "pooled", 1e-3),
    ("(c) QAT: as (b), loss = MSE of the PatchCore embedding", True, "embedding", 1e-3),
    ("(d) QAT: as (b), peak lr 1e-4", True, "pooled", 1e-4),
)


def patchcore_qat(splits, quick: bool) -> dict:
    """fp32 / ternary PTQ (all pointwise convs, and blocks 3+ only) / ternary QAT variants (blocks 3+) PatchCore
    AUROC; every memory bank is built from all normal train images. Beside AUROC, the relative embedding error
    vs fp32 on the images distilled on, the held-out normal train images, and the normal / anomalous test images."""
    fp32 = _patchcore()
    train_x, test_x = _images(fp32, splits.train), _images(fp32, splits.test)
    labels = torch.tensor([int(s.label) for s in splits.test])
    n_fit = int(round(0.75 * len(train_x)))
    fit_x, held_x = train_x[:n_fit], train_x[n_fit:]
    sets = {"fit": fit_x, "held": held_x, "normal": test_x[labels == 0], "anomalous": test_x[labels == 1]}
    target = {k: _embeddings(fp32.model, x) for k, x in sets.items()}
    errors = lambda pipe: {k: feature_error(pipe.model, x, target[k]) for k, x in sets.items()}  # noqa: E731
    state = fp32.model.extractor.net.state_dict()
    out = {"fp32": {"auroc": _auroc(fp32, train_x, splits.test, test_x)}, "n_fit": n_fit, "n_train": len(train_x)}
    ptq_all = _patchcore(state, ternary=LITE0_TERNARY)
    out["ptq_all"] = {"auroc": _auroc(ptq_all, train_x, splits.test, test_x), "errors": errors(ptq_all)}
    ptq = _patchcore(state, ternary=PATCHCORE_TERNARY)
    out["ptq"] = {"auroc": _auroc(ptq, train_x, splits.test, test_x), "errors": errors(ptq)}
    out["qat"] = []
    for label, select, loss, lr in PATCHCORE_QAT:
        student = _patchcore(state, ternary=PATCHCORE_TERNARY)
        info = _distill(student.model, fp32.model, fit_x if select else train_x, epochs=10 if quick else 40, lr=lr,
                        frozen=PATCHCORE_FP32_PREFIXES, held_out=held_x if select else None, loss=loss)
        info.update(label=label, errors=errors(student), auroc=_auroc(student, train_x, splits.test, test_x))
        print(label, {k: v for k, v in info.items() if k != "held_out_error"}, flush=True)
        out["qat"].append(info)
    return out
