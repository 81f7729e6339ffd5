"""The captioner (issue 19): BLEU-4, CIDEr-D and read-back attribute accuracy on held-out generated apples,
and Medusa decoding vs plain cached greedy decoding (baseline) in the same run: same output (checked
caption by caption) and decoding tokens per second.

Training: generated apples (alternating damaged / good, captions from the generator's ground truth), the
captioner's defaults (frozen offline EfficientNet-Lite0 at 96 px, stride-16 tokens, 2-layer text transformer),
ITC + ITM + LM; then --heads Medusa heads (5) on the frozen decoder, self-distilled (trained on the decoder's own
greedy captions of the training apples, the Medusa paper's self-distillation). Test apples come from another seed.
Decoding speed: one image at a time (batch 1), image encoding excluded (identical for both; the image tokens'
cross-attention keys/values, computed once per image by both decoders, are included), median of --repeats
interleaved passes over the test set, one torch thread; wall time and the decoding thread's CPU time (the
machine is shared: CPU time leaves out the time other jobs held the cores). Medusa trees: the most probable
paths under the heads' top-k accuracies measured teacher-forced on the training apples
(`choices_from_accuracies`, as the Medusa paper chooses its sparse trees), --tree-nodes sizes, the first one
fixed before the run as the headline (6: the best of 6 / 10 / 16 in a development run on the quick model), and
the cost prior (`default_choices`, 24 nodes).
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


def _cpu_us(fn, repeats: int = 300) -> float:
    """Median thread-CPU microseconds of fn() over `repeats` calls."""
    times = []
    for _ in range(repeats):
        c0 = time.thread_time()
        fn()
        times.append(time.thread_time() - c0)
    return statistics.median(times) * 1e6


@torch.no_grad()
def step_costs(pipe, heads, trees, image) -> list[list[str]]:
    """Thread-CPU cost of the parts of one decoding step at batch 1 (median microseconds): a single-token
    forward with the cache (greedy), each tree's forward, the heads, the logits, the cache compaction after
    acceptance, the image tokens' cross keys/values (once per image), and what recomputing those keys/values
    in every forward (the previous code) would add per step."""
    from fovea.caption.vocab import BOS

    cap = pipe.captioner
    text = cap.text
    memory = cap.image_tokens(pipe.preprocess(torch.from_numpy(image)[None]))
    cache = text.new_cache(1, 64, memory)
    text(torch.tensor([[BOS, 5, 6, 7, 8, 9]]), cache=cache)
    last = torch.zeros(text.cfg.dim)

    def forward(ids, **kw):
        cache.length = 6
        text(ids, cache=cache, **kw)

    single = _cpu_us(lambda: forward(torch.tensor([[5]])))
    rows = [["single-token forward (greedy step)", f"{single:.0f}", "1.00"]]
    for name, tree in trees:
        ids, window = torch.randint(0, 4, (1, tree.size)), tree.attention_window(64)
        us = _cpu_us(lambda: forward(ids, positions=tree.depth + 6, mask=window[:, 64 - 6:]))
        rows.append([f"tree forward, {tree.size} tokens ({name})", f"{us:.0f}", f"{us / single:.2f}"])
    for name, fn in [("Medusa heads, packed decoding weights (decode_logits)", lambda: heads.decode_logits(last)),
                     ("Medusa heads, training forward", lambda: heads(last)),
                     ("base logits + argmax of one hidden state", lambda: text.logits(last).argmax(-1)),
                     ("cache compaction after acceptance (keep, 4-token path)",
                      lambda: (setattr(cache, "length", 12), cache.keep(6, torch.tensor([0, 1, 3, 5])))),
                     ("new cache + image cross keys/values, once per image", lambda: text.new_cache(1, 40, memory)),
                     ("cross keys/values of the 36 image tokens, one layer (was: every forward, every layer)",
                      lambda: text.layers[0].cross.keys_values(memory))]:
        us = _cpu_us(fn)
        rows.append([name, f"{us:.0f}", f"{us / single:.2f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--medusa-steps", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--heads", type=int, default=5, help="Medusa heads (the reference code's default: 5)")
    ap.add_argument("--tree-nodes", default="6,10,16",
                    help="sizes of the accuracy-chosen trees (comma-separated); the first is the headline row")
    add_doc_args(ap, "caption", "300 train / 60 test apples, 300 + 200 steps")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.steps, args.medusa_steps = 300, 60, 300, 200
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/caption.py")

    from fovea.caption.train import (CaptionTrainConfig, apple_caption_set, decode_captions, evaluate_captions,
                                     medusa_head_accuracies, medusa_tree, train_captioner, train_medusa_heads)
    from fovea.nn.medusa import default_choices, expected_tokens_per_step, tree_buffers

    train, test = apple_caption_set(args.train, seed=0), apple_caption_set(args.test, seed=1)
    t0 = time.perf_counter()
    pipe, history = train_captioner(train, cfg=CaptionTrainConfig(steps=args.steps))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    heads = train_medusa_heads(pipe, train, num_heads=args.heads, steps=args.medusa_steps)
    heads_s = time.perf_counter() - t0
    accuracy = medusa_head_accuracies(pipe, heads, train, topk=8)
    sizes = [int(n) for n in args.tree_nodes.split(",")]
    trees = [(f"measured accuracies, {n} nodes" + (" (headline)" if i == 0 else ""), medusa_tree(accuracy, n))
             for i, n in enumerate(sizes)]
    trees += [("cost prior, 24 nodes", tree_buffers(default_choices(args.heads)))]
    images = [s.image for s in test]
    greedy_t, medusa_t = [], [[] for _ in trees]  # (wall s, CPU s) per pass
    for _ in range(args.repeats):  # interleaved, so load changes hit every decoder alike
        texts, g = decode_captions(pipe, images)
        greedy_t.append((g["decode_s"], g["decode_cpu_s"]))
        runs = []
        for (_, tree), times in zip(trees, medusa_t):
            runs.append(decode_captions(pipe, images, heads, tree=tree))
            times.append((runs[-1][1]["decode_s"], runs[-1][1]["decode_cpu_s"]))
    costs = table(["part of a decoding step (batch 1, 1 thread)", "median CPU us", "vs single-token forward"],
                  step_costs(pipe, heads, trees, images[0]))
    metrics = evaluate_captions(texts, test)
    g_s, g_cpu = (statistics.median(t[i] for t in greedy_t) for i in (0, 1))
    quality = table(["held-out apples", "BLEU-4", "CIDEr-D", "damaged/good right", "damage kind right",
                     "position right", "size right"],
                    [[len(test), f"{metrics['bleu4']:.3f}", f"{metrics['cider_d']:.2f}", f"{metrics['acc_damaged']:.3f}",
                      f"{metrics['acc_kind']:.3f}", f"{metrics['acc_position']:.3f}", f"{metrics['acc_size']:.3f}"]])
    acc_table = table(["head (predicts t + k)", *[f"rank {r}" for r in range(4)], "top-4"],
                      [[f"{i} (t + {i + 2})", *[f"{float(a):.3f}" for a in row[:4]], f"{float(row[:4].sum()):.3f}"]
                       for i, row in enumerate(accuracy)])
    rows = [["greedy + KV cache (baseline)", 1, f"{len(test)} / {len(test)}", g["tokens"], g["forwards"],
             f"{g['tokens'] / g['forwards']:.2f}", "1.00", f"{g_s:.3f}", f"{g['tokens'] / g_s:.0f}", "**1.00x**",
             f"{g_cpu:.3f}", "1.00x"]]
    for (name, tree), times, (texts_m, m) in zip(trees, medusa_t, runs):
        m_s, m_cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
        rows.append([f"Medusa, {args.heads} heads, greedy acceptance, {name}", tree.size,
                     f"{sum(a == b for a, b in zip(texts, texts_m))} / {len(test)}", m["tokens"], m["forwards"],
                     f"{m['tokens'] / m['forwards']:.2f}", f"{expected_tokens_per_step(tree.choices, accuracy):.2f}",
                     f"{m_s:.3f}", f"{m['tokens'] / m_s:.0f}", f"**{g_s / m_s:.2f}x**", f"{m_cpu:.3f}",
                     f"{g_cpu / m_cpu:.2f}x"])
    speed = table(["decoding", "tokens per base forward (tree + root)", "captions equal to greedy", "tokens",
                   "base-model forwards", "tokens / forward", "expected tokens / step (from accuracies)",
                   "median wall s", "tokens / s (wall)", "tokens/s vs greedy (wall)", "median CPU s",
                   "vs greedy (CPU)"], rows)
    body = [f"Training: {len(train)} apples, {args.steps} steps in {train_s:.0f} s (final losses "
            + ", ".join(f"{k} {history[-1][k]:.3f}" for k in ("itc", "itm", "lm"))
            + f"); Medusa heads {args.medusa_steps} steps in {heads_s:.0f} s.", "", *quality, "",
            "Medusa heads' top-k accuracies, teacher-forced on the decoder's greedy captions of the training apples "
            "(the trees' input):", "",
            *acc_table, "", f"Decoding, {args.repeats} interleaved passes over the {len(test)} held-out apples "
            f"(medians; greedy wall s over the passes: min {min(t[0] for t in greedy_t):.3f}, max "
            f"{max(t[0] for t in greedy_t):.3f}; CPU s = this thread's CPU time):", "",
            *speed, "", "Where a step's time goes (medians of 300 calls each, thread CPU time):", "", *costs, "",
            "Examples (held-out truth -> caption):", ""]
    body += [f"- `{s.captions[0]}` -> `{t}`" for s, t in list(zip(test, texts))[:6]]
    run.write("Captioning and Medusa decoding", body, tag="quick" if args.quick else None)


if __name__ == "__main__":
    main()
