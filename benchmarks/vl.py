"""Zero-shot classification with the two-tower model trained on generated captions, and few-shot
adaptation (CoOp prompt learning, linear probe) beside it.

Model: `fovea.vl.pretrained.trained_two_tower()` (EfficientNet-Lite0, max-pooled, + MiniLM, locked towers,
projections trained with the CLIP loss on generated apples/bricks/textures/belt captions; trained
on first use and cached). Held-out images come from seeds the training never saw:
- apples (128 px crops): good vs damaged from the prompts "good apple" / "damaged apple";
  damaged ones by kind (bruise / spots / cut);
- bricks: correct vs one brick rotated 30/45/60 degrees; textures (test half of the photographs):
  clean vs scratch / stain / patch.
Few-shot (apples, 4 classes good / bruise / spots / cut): k labelled images per class from another
seed; CoOp by the paper's recipe (`fovea.vl.fewshot.fit_coop`: SGD lr 0.002 momentum 0.9, cosine, batch 32,
one warm-up epoch, 50 / 100 / 200 epochs for 1 / 4 / 16 shots, class token last, the model's own logit
scale) with 16 random context vectors (the paper's default) and with 4 initialised from "a photo of a",
and a linear probe (logistic regression on the image embeddings), against zero-shot on the same
held-out images: the 7-template ensemble and the single prompt "a photo of a {}." CoOp starts from.
Quick version: `--quick` (80 held-out apples, 40 bricks, 40 textures, k = 1, 4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import Run, add_doc_args, table  # noqa: E402

KINDS = ("bruise", "spot", "cut")
APPLE4 = ("good", *KINDS)
APPLE4_PROMPTS = ("good apple", "bruised apple", "apple with dark spots", "apple with a cut")


def features(model, samples, batch: int = 50) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.image_trunk_features(torch.from_numpy(np.stack([s.image for s in samples[i:i + batch]])))
                          for i in range(0, len(samples), batch)])


def zero_shot_acc(model, feats, prompts, labels, templates=None) -> float:
    from fovea.vl.zeroshot import INSPECTION_TEMPLATES, build_zero_shot_classifier

    clf = build_zero_shot_classifier(model, prompts, templates or INSPECTION_TEMPLATES)
    with torch.no_grad():
        pred = (model.project_image(feats) @ clf).argmax(1).numpy()
    return float((pred == np.asarray(labels)).mean())


def apple4_label(s) -> int:
    return 0 if not s.truth["damaged"] else 1 + KINDS.index(s.truth["main_kind"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apples", type=int, default=300)
    ap.add_argument("--others", type=int, default=120, help="held-out bricks and textures each")
    ap.add_argument("--shots", default="1,4,16")
    add_doc_args(ap, "vl", "80 held-out apples, 40 bricks, 40 textures, k = 1, 4")
    args = ap.parse_args()
    if args.quick:
        args.apples, args.others, args.shots = 80, 40, "1,4"
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/vl.py")
    from fovea.synth.captions import apple_caption_sample, brick_caption_sample, texture_caption_sample
    from fovea.vl.fewshot import fit_coop, fit_linear_probe
    from fovea.vl.pretrained import trained_two_tower

    t0 = time.perf_counter()
    model = trained_two_tower()
    t_model = time.perf_counter() - t0
    apples = [apple_caption_sample(np.random.default_rng([9, i]), 128) for i in range(args.apples)]
    bricks = [brick_caption_sample(np.random.default_rng([11, i]), 128) for i in range(args.others)]
    texs = [texture_caption_sample(np.random.default_rng([12, i]), 128, split="test") for i in range(args.others)]
    fa, fb, ft = features(model, apples), features(model, bricks), features(model, texs)
    y_dmg = [int(s.truth["damaged"]) for s in apples]
    dmg = np.array(y_dmg, bool)
    y_kind = [KINDS.index(s.truth["main_kind"]) for s in apples if s.truth["damaged"]]
    b_cls = ["good", "rot30", "rot45", "rot60"]
    y_b = [b_cls.index(s.truth["defect"]) for s in bricks]
    t_cls = ["good", "scratch", "stain", "patch"]
    y_t = [t_cls.index(s.truth["defect"]) for s in texs]
    rows = [
        ["apples: good / damaged", len(apples), "good apple; damaged apple", "50 %",
         f"{zero_shot_acc(model, fa, ['good apple', 'damaged apple'], y_dmg):.1%}"],
        ["damaged apples: bruise / spots / cut", int(dmg.sum()), "bruised apple; apple with dark spots; apple with a cut",
         "33 %", f"{zero_shot_acc(model, fa[torch.from_numpy(dmg)], list(APPLE4_PROMPTS[1:]), y_kind):.1%}"],
        ["bricks: correct / misplaced", len(bricks), "bricks correctly placed; a misplaced brick", "50 % (1:3 here)",
         f"{zero_shot_acc(model, fb, ['bricks correctly placed', 'a misplaced brick'], [int(v > 0) for v in y_b]):.1%}"],
        ["bricks: correct / rot30 / rot45 / rot60", len(bricks), "bricks correctly placed; a brick rotated N degrees",
         "25 %", f"{zero_shot_acc(model, fb, ['bricks correctly placed'] + [f'a brick rotated {d} degrees' for d in (30, 45, 60)], y_b):.1%}"],
        ["textures: clean / scratch / stain / patch", len(texs), "a clean surface; a surface with a scratch|stain|foreign patch",
         "25 %", f"{zero_shot_acc(model, ft, ['a clean surface', 'a surface with a scratch', 'a surface with a stain', 'a surface with a foreign patch'], y_t):.1%}"],
    ]
    body = ["Zero-shot on held-out generated images (class prompts only, prompt-template ensemble, no head trained "
            "on these labels):", ""]
    body += table(["task", "images", "class prompts", "chance", "top-1"], rows)
    # few-shot: apples, 4 classes
    y4 = np.array([apple4_label(s) for s in apples])
    zs4 = zero_shot_acc(model, fa, list(APPLE4_PROMPTS), y4)
    zs4_one = zero_shot_acc(model, fa, list(APPLE4_PROMPTS), y4, templates=("a photo of a {}.",))
    pool = [apple_caption_sample(np.random.default_rng([10, i]), 128, damaged=i % 4 != 0) for i in range(400)]
    by_class = {c: [s for s in pool if apple4_label(s) == c] for c in range(4)}
    few_rows = []
    with torch.no_grad():
        img = model.project_image(fa)
    for k in [int(v) for v in args.shots.split(",")]:
        shots = [s for c in range(4) for s in by_class[c][:k]]
        fs, ys = features(model, shots), [apple4_label(s) for s in shots]
        accs = []
        for n_ctx, init in ((16, None), (4, "a photo of a")):
            t1 = time.perf_counter()
            coop = fit_coop(model, APPLE4_PROMPTS, fs, ys, n_ctx=n_ctx, init=init)
            with torch.no_grad():
                accs.append(f"{float(((img @ coop().T).argmax(1).numpy() == y4).mean()):.1%} "
                            f"({time.perf_counter() - t1:.0f} s)")
        probe = fit_linear_probe(model, fs, ys, 4)
        with torch.no_grad():
            acc_probe = float((probe(img).argmax(1).numpy() == y4).mean())
        few_rows.append([k, f"{zs4:.1%}", f"{zs4_one:.1%}", *accs, f"{acc_probe:.1%}"])
        print(few_rows[-1], flush=True)
    body += ["", f"Few-shot, apples in 4 classes (good / bruise / spots / cut), {len(apples)} held-out images "
             f"(chance 25 %, majority class {np.bincount(y4).max() / len(y4):.0%}):", ""]
    body += table(["shots per class", "zero-shot (7 templates)", "zero-shot (\"a photo of a {}.\")",
                   "CoOp, 16 random context vectors (train time)", "CoOp, 4 from \"a photo of a\" (train time)",
                   "linear probe"], few_rows)
    body += ["", f"Model: {model.config.image_backbone} + {model.config.text_tower}, embed_dim {model.config.embed_dim}, "
             f"learned temperature {float(model.logit().detach()):.1f}; loaded or trained in {t_model:.0f} s."]
    run.write("Vision-language: zero-shot and few-shot", body)


if __name__ == "__main__":
    main()
