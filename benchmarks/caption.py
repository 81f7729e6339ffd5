"""The captioner (issue 19): BLEU-4, CIDEr-D and read-back attribute accuracy on held-out generated apples,
and Medusa decoding vs plain cached greedy decoding (baseline) in the same run: same output (checked
caption by caption) and decoding tokens per second.

Training: generated apples (alternating damaged / good, captions from the generator's ground truth), the
captioner's defaults (frozen offline EfficientNet-Lite0 at 96 px, stride-16 tokens, 2-layer text transformer),
ITC + ITM + LM; then 4 Medusa heads on the frozen decoder. Test apples come from another seed.
Decoding speed: one image at a time (batch 1), image encoding excluded (identical for both), median of
--repeats passes over the test set, one torch thread.
Quick version: `--quick` (300 training apples, 60 test, 300 + 200 steps; a few minutes on an idle machine).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--medusa-steps", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    add_doc_args(ap, "caption", "300 train / 60 test apples, 300 + 200 steps")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.steps, args.medusa_steps = 300, 60, 300, 200
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/caption.py")

    from fovea.caption.train import (CaptionTrainConfig, apple_caption_set, decode_captions, evaluate_captions,
                                     train_captioner, train_medusa_heads)

    train, test = apple_caption_set(args.train, seed=0), apple_caption_set(args.test, seed=1)
    t0 = time.perf_counter()
    pipe, history = train_captioner(train, cfg=CaptionTrainConfig(steps=args.steps))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    heads = train_medusa_heads(pipe, train, num_heads=4, steps=args.medusa_steps)
    heads_s = time.perf_counter() - t0
    images = [s.image for s in test]
    greedy_t, medusa_t = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        texts, g = decode_captions(pipe, images)
        texts_m, m = decode_captions(pipe, images, heads)
        greedy_t.append(g["decode_s"])
        medusa_t.append(m["decode_s"])
    same = sum(a == b for a, b in zip(texts, texts_m))
    metrics = evaluate_captions(texts, test)
    g_tps, m_tps = g["tokens"] / statistics.median(greedy_t), m["tokens"] / statistics.median(medusa_t)
    quality = table(["held-out apples", "BLEU-4", "CIDEr-D", "damaged/good right", "damage kind right",
                     "position right", "size right"],
                    [[len(test), f"{metrics['bleu4']:.3f}", f"{metrics['cider_d']:.2f}", f"{metrics['acc_damaged']:.3f}",
                      f"{metrics['acc_kind']:.3f}", f"{metrics['acc_position']:.3f}", f"{metrics['acc_size']:.3f}"]])
    speed = table(["decoding", "tokens", "base-model forwards", "tokens / forward", "median s", "tokens / s",
                   "vs greedy"],
                  [["greedy + KV cache (baseline)", g["tokens"], g["forwards"], f"{g['tokens'] / g['forwards']:.2f}",
                    f"{statistics.median(greedy_t):.3f}", f"{g_tps:.0f}", "1.00x"],
                   ["Medusa, 4 heads, greedy acceptance", m["tokens"], m["forwards"],
                    f"{m['tokens'] / m['forwards']:.2f}", f"{statistics.median(medusa_t):.3f}", f"{m_tps:.0f}",
                    f"{m_tps / g_tps:.2f}x"]])
    body = [f"Training: {len(train)} apples, {args.steps} steps in {train_s:.0f} s (final losses "
            + ", ".join(f"{k} {history[-1][k]:.3f}" for k in ("itc", "itm", "lm"))
            + f"); Medusa heads {args.medusa_steps} steps in {heads_s:.0f} s.", "", *quality, "",
            f"Medusa output equals greedy output for {same} of {len(test)} captions.", "", *speed, "",
            "Examples (held-out truth -> caption):", ""]
    body += [f"- `{s.captions[0]}` -> `{t}`" for s, t in list(zip(test, texts))[:6]]
    run.write("Captioning and Medusa decoding", body)


if __name__ == "__main__":
    main()
