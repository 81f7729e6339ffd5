"""How many Medusa heads, and how much self-distillation, for the captioner (issue 19): each configuration's
heads are trained on the decoder's own greedy captions of fresh apples (seed 2), their tree is chosen on the
calibration apples (seed 3) exactly as `benchmarks/caption.py` chooses the headline tree (path frequencies,
sized by a step-cost model measured by decoding calibration apples), and decoding is timed against cached
greedy decoding on development apples (seed 4): neither the test apples of `benchmarks/caption.py` (seed 1)
nor any apple the heads or trees were fitted on. The configuration the main benchmark uses is picked here.

Timing as in `benchmarks/caption.py`: batch 1, one torch thread, image encoding excluded, --repeats interleaved
passes (greedy, then each configuration), medians of this thread's CPU time. Heads' training CPU time is this
process's CPU time for `train_medusa_heads` (including the greedy captions it distils from).
Quick version: `--quick` (captioner of `benchmarks/caption.py --quick`, 2 configurations, 40 dev apples).
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
from caption import _train_or_load, loop_step_costs  # noqa: E402


def _configs(text: str) -> list[tuple[int, int, int]]:
    """'7:1000:2000,9:1000:2000' -> [(heads, steps, apples), ...]."""
    out = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"--configs item {item!r}: expected heads:steps:apples, e.g. 7:1000:2000")
        out.append(tuple(int(p) for p in parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1000, help="captioner training apples (as benchmarks/caption.py)")
    ap.add_argument("--steps", type=int, default=1200, help="captioner training steps (as benchmarks/caption.py)")
    ap.add_argument("--model-dir", default=None, help="the captioner folder of benchmarks/caption.py --model-dir")
    ap.add_argument("--configs", default="7:1000:2000,9:1000:2000,11:1000:2000,7:2000:4000,11:2000:4000",
                    help="heads:steps:apples per configuration (apples: fresh apples, seed 2, distilled from)")
    ap.add_argument("--calib", type=int, default=500, help="calibration apples (seed 3) for the trees")
    ap.add_argument("--cost-apples", type=int, default=100, help="calibration apples decoded for the step-cost model")
    ap.add_argument("--dev", type=int, default=200, help="development apples (seed 4) decoding is timed on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-nodes", type=int, default=48, help="largest tree considered")
    ap.add_argument("--tag", default=None, help="name of this run's block in the doc (several sweeps side by side)")
    add_doc_args(ap, "caption", "captioner of caption.py --quick, configurations 7:300:600 and 9:300:600, "
                                "40 dev apples, 200 calibration apples")
    args = ap.parse_args()
    if args.quick:
        args.train, args.steps, args.configs, args.dev, args.calib, args.cost_apples = \
            300, 300, "7:300:600,9:300:600", 40, 200, 40
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/caption_heads.py")

    from fovea.caption.train import (apple_caption_set, decode_captions, medusa_head_logits, medusa_tree_for_cost,
                                     train_medusa_heads)
    from fovea.nn.medusa import head_accuracies, head_rank_paths, path_probabilities

    configs = _configs(args.configs)
    pipe, info = _train_or_load(args, apple_caption_set(args.train, seed=0))
    calib, dev = apple_caption_set(args.calib, seed=3), apple_caption_set(args.dev, seed=4)
    head_apples = apple_caption_set(max(a for _, _, a in configs), seed=2)
    images = [s.image for s in dev]
    prepared = []
    for k, steps, apples in configs:
        c0 = time.process_time()
        heads = train_medusa_heads(pipe, head_apples[:apples], num_heads=k, steps=steps)
        train_cpu = time.process_time() - c0
        logits, labels = medusa_head_logits(pipe, heads, calib)
        accuracy = head_accuracies(logits, labels, 8)
        ranked = path_probabilities(head_rank_paths(logits, labels, 8), 8)
        sizes = (4, 8, 16, 32, 48)
        _, fixed, per_token = loop_step_costs(pipe, heads, ranked, [s.image for s in calib[:args.cost_apples]],
                                              [n for n in sizes if n <= args.max_nodes])
        tree = medusa_tree_for_cost(heads, ranked, fixed, per_token, max_nodes=args.max_nodes)
        expected = 1 + sum(dict(ranked).get(c, 0.0) for c in tree.choices)
        prepared.append((k, steps, apples, heads, tree, train_cpu, accuracy, expected, fixed, per_token))
        print(f"heads {k}, {steps} steps, {apples} apples: {train_cpu:.0f} CPU s, tree {tree.size - 1} nodes, "
              f"expected {expected:.2f} tokens per step, step cost {fixed:.0f} + {per_token:.1f} us per token, "
              f"{expected / (fixed + per_token * tree.size) * 1e3:.3f} tokens per ms of steps", flush=True)
    greedy_cpu, medusa_cpu = [], [[] for _ in prepared]
    for _ in range(args.repeats):
        texts, g = decode_captions(pipe, images)
        greedy_cpu.append(g["decode_cpu_s"])
        results = []
        for p, times in zip(prepared, medusa_cpu):
            results.append(decode_captions(pipe, images, p[3], tree=p[4]))
            times.append(results[-1][1]["decode_cpu_s"])
    g_cpu = statistics.median(greedy_cpu)
    rows = [["greedy + KV cache (baseline)", "-", "-", "-", "-", "-", "-", "-", g["forwards"], "-",
             f"{len(dev)} / {len(dev)}", f"{g_cpu:.3f}", "**1.00x**"]]
    for (k, steps, apples, heads, tree, train_cpu, accuracy, expected, fixed, per_token), times, (texts_m, m) in \
            zip(prepared, medusa_cpu, results):
        m_cpu = statistics.median(times)
        rows.append([f"Medusa, {k} heads", steps, apples, f"{train_cpu:.0f}",
                     " / ".join(f"{float(a):.2f}" for a in accuracy[:, 0]), f"{fixed:.0f} + {per_token:.1f}",
                     f"{tree.size - 1} (depth {int(tree.depth.max())})", f"{expected:.2f}", m["forwards"],
                     f"{(m['forwards'] - len(dev)) / len(dev):.2f}",
                     f"{sum(a == b for a, b in zip(texts, texts_m))} / {len(dev)}", f"{m_cpu:.3f}",
                     f"**{g_cpu / m_cpu:.2f}x**"])
    body = [f"Captioner: {info['train_apples']} apples, {info['steps']} steps"
            + (f", loaded from `{info['loaded_from']}` (--model-dir)" if "loaded_from" in info else "")
            + f". Trees on {len(calib)} calibration apples (seed 3), step-cost model from decoding "
              f"{min(args.cost_apples, len(calib))} of them; decoding timed on {len(dev)} development apples (seed 4),"
              f" {args.repeats} interleaved passes (medians, this thread's CPU time).", "",
            *table(["decoding", "heads' training steps", "fresh apples distilled from", "heads' training CPU s",
                    "rank-0 accuracy per head (calibration apples)", "step cost model (CPU us: fixed + per token)",
                    "tree nodes", "expected tokens / step", "base-model forwards", "tree steps per caption",
                    "captions equal to greedy", "median CPU s", "vs greedy (CPU)"], rows)]
    run.write("Captioning and Medusa decoding", body, tag=args.tag or ("quick" if args.quick else None))


if __name__ == "__main__":
    main()
