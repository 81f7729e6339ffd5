"""What Medusa-2 costs in caption quality, by the weight of the heads' loss (issue 19): the decoder tuned jointly
with its heads (`fovea.caption.train.train_medusa2`) against the original decoder it is copied from.

For each --head-weights value (0.2 is `train_medusa2`'s default, the headline of benchmarks/caption.py): BLEU-4,
CIDEr-D and the read-back attribute accuracies of the tuned decoder's greedy captions on two held-out sets (the
200 apples of seed 1 that benchmarks/caption.py reports, and 300 more of seed 6, which no choice was made on), how
many captions are word for word the original's, the heads' mean rank-0 accuracy on the calibration apples (seed
3), and the tokens per forward of Medusa decoding on the seed-1 apples (tree: path frequencies on the calibration
apples sized by the step-cost model --step-cost, no timing here: token counts do not depend on the machine).
The first row is the original decoder with Medusa-1 heads (frozen decoder). Same captioner, heads and apples as
benchmarks/caption.py (--model-dir loads the captioner it trained).
Quick version: `--quick` (the quick captioner trained here, 600 head apples, 1200 joint apples x 300 steps, two
weights, 60 + 100 held-out apples).
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
from caption import _train_or_load, add_captioner_args  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_captioner_args(ap)
    ap.add_argument("--heads", type=int, default=7)
    ap.add_argument("--medusa-steps", type=int, default=1000)
    ap.add_argument("--head-apples", type=int, default=2000)
    ap.add_argument("--joint-apples", type=int, default=4000)
    ap.add_argument("--joint-steps", type=int, default=1000)
    ap.add_argument("--head-weights", default="0.05,0.1,0.2", help="weights of the heads' loss to compare")
    ap.add_argument("--calib", type=int, default=500)
    ap.add_argument("--test", type=int, default=200, help="held-out apples of seed 1")
    ap.add_argument("--more", type=int, default=300, help="held-out apples of seed 6")
    ap.add_argument("--step-cost", default="634,15.4",
                    help="fixed,per-token CPU us of a tree step for sizing the trees (default: the cost model "
                         "measured by benchmarks/caption.py's 07:55 UTC 2026-12-05 run)")
    add_doc_args(ap, "caption", "quick captioner trained here, 600 head apples, 1200 x 300 joint, weights 0.1,0.2")
    args = ap.parse_args()
    if args.quick:
        args.train, args.steps, args.medusa_steps, args.head_apples = 300, 300, 300, 600
        args.joint_apples, args.joint_steps, args.head_weights = 1200, 300, "0.1,0.2"
        args.calib, args.test, args.more = 200, 60, 100
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/caption_medusa2.py --model-dir DIR")

    from fovea.caption.train import (apple_caption_set, decode_captions, evaluate_captions, medusa_head_logits,
                                     train_medusa2, train_medusa_heads)
    from fovea.nn.medusa import choices_for_cost, head_accuracies, head_rank_paths, path_probabilities, tree_buffers

    fixed, per_token = (float(x) for x in args.step_cost.split(","))
    pipe, info = _train_or_load(args, apple_caption_set(args.train, seed=0))
    heads = train_medusa_heads(pipe, apple_caption_set(args.head_apples, seed=2), num_heads=args.heads,
                               steps=args.medusa_steps)
    calib = apple_caption_set(args.calib, seed=3)
    sets = [("seed 1", apple_caption_set(args.test, seed=1)), ("seed 6", apple_caption_set(args.more, seed=6))]
    joint = apple_caption_set(args.joint_apples, seed=2)

    def measure(p, h):
        logits, labels = medusa_head_logits(p, h, calib)
        ranked = path_probabilities(head_rank_paths(logits, labels, 8), 8)
        tree = tree_buffers(choices_for_cost(ranked, fixed, per_token, 48))
        texts = {name: decode_captions(p, [s.image for s in ss])[0] for name, ss in sets}
        medusa, m = decode_captions(p, [s.image for s in sets[0][1]], h, tree=tree)
        if medusa != texts["seed 1"]:
            raise AssertionError("Medusa captions differ from greedy: a decoding bug")
        rank0 = statistics.mean(float(a) for a in head_accuracies(logits, labels, 8)[:, 0])
        return texts, rank0, tree.size - 1, m["tokens"] / m["forwards"]

    original, rank0, nodes, per_forward = measure(pipe, heads)
    rows = []

    def add_row(name, texts, rank0, nodes, per_forward, seconds):
        for set_name, samples in sets:
            q = evaluate_captions(texts[set_name], samples)
            same = sum(a == b for a, b in zip(texts[set_name], original[set_name]))
            rows.append([name, f"{set_name} ({len(samples)})", f"{q['bleu4']:.3f}", f"{q['cider_d']:.2f}",
                         f"{q['acc_damaged']:.3f}", f"{q['acc_kind']:.3f}", f"{q['acc_position']:.3f}",
                         f"{q['acc_size']:.3f}", f"{same} / {len(samples)}", f"{rank0:.3f}", nodes,
                         f"{per_forward:.2f}", seconds])

    add_row("original decoder, Medusa-1 heads (frozen decoder)", original, rank0, nodes, per_forward, "-")
    for weight in (float(w) for w in args.head_weights.split(",")):
        t0 = time.process_time()
        tuned, tuned_heads = train_medusa2(pipe, joint, heads, steps=args.joint_steps, head_weight=weight)
        seconds = f"{time.process_time() - t0:.0f}"
        add_row(f"Medusa-2, head weight {weight:g}", *measure(tuned, tuned_heads), seconds)
    body = [f"Captioner: {info.get('train_apples')} apples, {info.get('steps')} steps"
            + (f", loaded from `{info['loaded_from']}`" if "loaded_from" in info else ", trained in this run")
            + f"; Medusa-1 heads: {args.heads}, {args.medusa_steps} steps on {args.head_apples} apples (seed 2); "
            f"Medusa-2: {args.joint_steps} joint steps on {args.joint_apples} apples (seed 2), head i weighted "
            f"0.8 ** i; trees sized with {fixed:g} + {per_token:g} us per tree token (at most 48 nodes).", "",
            *table(["decoder", "held-out apples", "BLEU-4", "CIDEr-D", "damaged/good right", "damage kind right",
                    "position right", "size right", "captions the original's", "heads' mean rank-0 accuracy",
                    "tree nodes", "tokens / forward (Medusa, seed 1)", "joint training CPU s"], rows)]
    run.write("Captioning and Medusa decoding", body, tag="medusa2-quick" if args.quick else "medusa2")


if __name__ == "__main__":
    main()
