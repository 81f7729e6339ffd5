"""The captioner (issue 19): BLEU-4, CIDEr-D and read-back attribute accuracy on held-out generated apples,
and Medusa decoding vs plain cached greedy decoding (baseline) in the same run: same output (checked
caption by caption) and decoding tokens per second.

Training: generated apples (alternating damaged / good, captions from the generator's ground truth), the
captioner's defaults (frozen offline EfficientNet-Lite0 at 96 px, stride-16 tokens, 2-layer text transformer),
ITC + ITM + LM (or the captioner --model-dir holds, trained earlier by this code with the same settings); then
--heads Medusa heads (7: the good captions are 8 tokens, so 1 base + 7 head tokens can finish one in a single
step) on the frozen decoder, self-distilled: trained on the decoder's own greedy captions of --head-apples fresh
apples (the Medusa paper's self-distillation; fresh apples need no labels and keep the heads from over-fitting the
captioner's training set). Test apples come from another seed (1), calibration apples from a third (3).
Trees: the headline tree takes nodes by their joint path frequency on the calibration apples (how often greedy
acceptance walks through each node: keeps the heads' correlated errors, which the product of per-head accuracies
misses) and is sized by a step-cost model measured in the run (fixed + per-token microseconds of a tree step) for
the most expected tokens per cost; its nodes are laid out depth first, most frequent child first, so accepting
any prefix of the most frequent path leaves the KV cache in place (`tree_buffers(order="chain")`). Comparison
rows: the same tree laid out by depth (the previous layout, whose accepted paths beyond depth 1 are moved in the
cache), the most probable paths under the per-head accuracies (the Medusa paper's construction) at --tree-nodes
sizes, and the previous setup (5 heads on the captioner's training apples, 6-node accuracy tree).
Medusa-2 (the headline since session 9): copies of the decoder and of the Medusa-1 heads trained jointly
(`train_medusa2`: self-distillation KL to the original decoder on its own greedy captions of --joint-apples
apples of the heads' seed, plus 0.2 x the heads' loss, head i weighted 0.8 ** i), then measured like Medusa-1 on
the calibration apples (the same step-cost model: it depends on the decoder's shape, not its weights), its speed
against greedy decoding of the same tuned decoder (the baseline it must equal), and its quality against the
original decoder's on the held-out apples.
Decoding speed: one image at a time (batch 1), image encoding excluded (identical for both; the image tokens'
cross-attention keys/values, computed once per image by both decoders, are included), median of --repeats
interleaved passes over the test set, one torch thread; wall time and the decoding thread's CPU time (the
machine is shared: CPU time leaves out the time other jobs held the cores). Where a step's time goes: one more
pass with each part of a step clocked inside decoding (`medusa_generate(timings=...)`), and each part alone in
a tight loop.
Quick version: `--quick` (300 training apples, 60 test, 300 + 300 steps, 600 head apples, 200 calibration apples).
"""

from __future__ import annotations

import argparse
import datetime
import json
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


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


@torch.no_grad()
def step_costs(pipe, heads, trees, image, chain_sizes=(2, 8, 16, 32)) -> list[list[str]]:
    """Thread-CPU cost of the parts of one decoding step at batch 1, each in a tight loop (median microseconds):
    a single-token forward with the cache (greedy), each tree's forward and chains of `chain_sizes` tokens, the
    heads, the logits, the cache compaction after acceptance, the image tokens' cross keys/values (once per
    image)."""
    from fovea.caption.vocab import BOS
    from fovea.nn.medusa import tree_buffers

    cap = pipe.captioner
    text = cap.text
    memory = cap.image_tokens(pipe.preprocess(torch.from_numpy(image)[None]))
    cache = text.new_cache(1, 80, memory)
    text(torch.tensor([[BOS, 5, 6, 7, 8, 9]]), cache=cache)
    last = torch.zeros(text.cfg.dim)

    def forward(ids, **kw):
        cache.length = 6
        text(ids, cache=cache, **kw)

    def tree_forward_us(tree):
        ids, window = torch.randint(0, 4, (1, tree.size)), tree.attention_window(80)
        return _cpu_us(lambda: forward(ids, positions=tree.depth + 6, mask=window[:, 80 - 6:]))

    single = _cpu_us(lambda: forward(torch.tensor([[5]])))
    rows = [["single-token forward (greedy step)", f"{single:.0f}", "1.00"]]
    for name, tree in trees:
        us = tree_forward_us(tree)
        rows.append([f"tree forward, {tree.size} tokens ({name})", f"{us:.0f}", f"{us / single:.2f}"])
    chain_us = []
    for n in chain_sizes:
        chain_us.append(tree_forward_us(tree_buffers([(0,) * d for d in range(1, n)] if n > 1 else [(0,)])))
        rows.append([f"tree forward, chain of {n} tokens", f"{chain_us[-1]:.0f}", f"{chain_us[-1] / single:.2f}"])
    intercept, per_token = _fit_line([float(n) for n in chain_sizes], chain_us)
    hidden = torch.zeros(max(t.size for _, t in trees), text.cfg.dim)
    for name, fn in [("Medusa heads, packed decoding weights (decode_logits)", lambda: heads.decode_logits(last)),
                     ("Medusa heads, training forward", lambda: heads(last)),
                     ("base logits + argmax of one hidden state", lambda: text.logits(last).argmax(-1)),
                     ("base logits + argmax at every node of the largest tree",
                      lambda: text.logits(hidden).argmax(-1).tolist()),
                     ("cache compaction after acceptance (keep, 4-token path)",
                      lambda: (setattr(cache, "length", 12), cache.keep(6, torch.tensor([0, 1, 3, 5])))),
                     ("new cache + image cross keys/values, once per image", lambda: text.new_cache(1, 40, memory)),
                     ("cross keys/values of the 36 image tokens, one layer (was: every forward, every layer)",
                      lambda: text.layers[0].cross.keys_values(memory))]:
        us = _cpu_us(fn)
        rows.append([name, f"{us:.0f}", f"{us / single:.2f}"])
    rows.append([f"tree forward, chains: intercept / per token (least squares)", f"{intercept:.0f} / {per_token:.1f}",
                 f"{intercept / single:.2f} / {per_token / single:.3f}"])
    return rows


@torch.no_grad()
def loop_step_costs(pipe, heads, ranked, images, sizes=(4, 8, 16, 32), passes=2):
    """The step-cost model the headline tree is sized with, measured inside real decoding (the isolated parts
    above miss what a step costs in the loop, where the heads' and the decoder's weights and code evict each
    other): the images are captioned with the first n path-frequency nodes for each n in `sizes` (`passes`
    interleaved passes); per tree, the per-caption CPU time regressed on the caption's tree steps gives the cost
    of a step (slope) beside the per-caption part (intercept: new cache, prompt forward); the steps' costs
    regressed on the tree's tokens give fixed + per-token microseconds. Returns (rows, fixed, per_token)."""
    from fovea.caption.vocab import BOS, EOS
    from fovea.nn.medusa import medusa_generate, tree_buffers

    cap = pipe.captioner
    memories = [cap.image_tokens(pipe.preprocess(torch.from_numpy(im)[None])) for im in images]
    trees = [tree_buffers([c for c, _ in ranked[:n]]) for n in sizes]
    timed = {n: [] for n in sizes}  # (tree steps, CPU us) per caption
    prompt = torch.tensor([BOS])
    for _ in range(passes):
        for n, tree in zip(sizes, trees):
            for memory in memories:
                c0 = time.thread_time()
                _, stats = medusa_generate(cap.text, heads, prompt, cap.cfg.max_caption_len, tree=tree, eos=EOS,
                                           memory=memory)
                timed[n].append((float(stats.steps), (time.thread_time() - c0) * 1e6))
    rows, step_us = [], []
    for n, tree in zip(sizes, trees):
        steps, us = zip(*timed[n])
        per_caption, per_step = _fit_line(list(steps), list(us)) if len(set(steps)) > 1 else (0.0, sum(us) / sum(steps))
        step_us.append(per_step)
        rows.append([n, tree.size, f"{statistics.fmean(steps):.2f}", f"{per_step:.0f}", f"{per_caption:.0f}"])
    fixed, per_token = _fit_line([float(t.size) for t in trees], step_us)
    return rows, fixed, per_token


@torch.no_grad()
def loop_step_parts(pipe, heads, tree, images) -> list[list[str]]:
    """Where a caption's CPU time goes inside real decoding (one pass over the images, each image encoded right
    before its caption as in the timed passes, so the decoder starts each caption with the encoder's traffic in
    the caches): Medusa's tree steps split by `medusa_generate(timings=...)`, greedy's steps by the same clock
    around the two parts of `greedy_decode`'s loop (this function repeats that loop: logits + argmax of the last
    hidden state, one-token forward), and per caption what lies outside the steps (greedy: new cache + prompt
    forward; Medusa: the whole call minus its tree steps)."""
    from fovea.caption.vocab import BOS, EOS
    from fovea.nn.medusa import medusa_generate

    cap = pipe.captioner
    text, max_new, prompt = cap.text, cap.cfg.max_caption_len, torch.tensor([BOS])

    def encode(im):
        return cap.image_tokens(pipe.preprocess(torch.from_numpy(im)[None]))

    greedy = {"logits + argmax": 0.0, "one-token forward": 0.0}
    greedy_steps, greedy_outside = 0, 0.0
    for im in images:
        memory = encode(im)
        c0 = time.thread_time()
        cache = text.new_cache(1, len(prompt) + max_new, memory)
        hidden, _ = text(prompt[None], cache=cache)
        greedy_outside += time.thread_time() - c0
        out = []
        for step in range(max_new):
            c0 = time.thread_time()
            token = text.logits(hidden[:, -1]).argmax(-1)
            out.append(int(token))
            c1 = time.thread_time()
            greedy["logits + argmax"] += c1 - c0
            if out[-1] == EOS or step == max_new - 1:
                break
            hidden, _ = text(token[None], cache=cache)
            greedy["one-token forward"] += time.thread_time() - c1
            greedy_steps += 1
    timings: dict[str, float] = {}
    steps = moves = 0
    medusa_total = 0.0
    for im in images:
        memory = encode(im)
        c0 = time.thread_time()
        _, stats = medusa_generate(text, heads, prompt, max_new, tree=tree, eos=EOS, memory=memory, timings=timings)
        medusa_total += time.thread_time() - c0
        steps, moves = steps + stats.steps, moves + stats.cache_moves
    g_total = sum(greedy.values()) / greedy_steps * 1e6
    m_total = sum(timings.values()) / steps * 1e6
    rows = [[f"greedy: {k}", f"{v / greedy_steps * 1e6:.0f}", f"{v / greedy_steps * 1e6 / g_total:.2f}"]
            for k, v in greedy.items()]
    rows.append(["greedy: step", f"{g_total:.0f}", "1.00"])
    rows += [[f"Medusa ({tree.size} tokens): {k}" + (f" ({moves} of {steps} steps moved a path)" if k == "cache move"
                                                    else ""),
              f"{v / steps * 1e6:.0f}", f"{v / steps * 1e6 / g_total:.2f}"] for k, v in timings.items()]
    rows.append([f"Medusa ({tree.size} tokens): step", f"{m_total:.0f}", f"{m_total / g_total:.2f}"])
    n = len(images)
    g_out, m_out = greedy_outside / n * 1e6, (medusa_total - sum(timings.values())) / n * 1e6
    rows.append([f"greedy: per caption, outside the steps (new cache + prompt forward; {greedy_steps / n:.2f} steps "
                 "per caption)", f"{g_out:.0f}", f"{g_out / g_total:.2f}"])
    rows.append([f"Medusa: per caption, outside the tree steps (new cache, prompt forward, setup; {steps / n:.2f} "
                 "tree steps per caption)", f"{m_out:.0f}", f"{m_out / g_total:.2f}"])
    return rows


CIDER_MARGIN = 0.05  # Medusa-2's quality criterion: the tuned decoder's CIDEr-D at most this far below


def _quality_kept(cider_d: float, cider_d_tuned: float) -> bool:
    return cider_d_tuned >= cider_d - CIDER_MARGIN


def add_captioner_args(ap: argparse.ArgumentParser) -> None:
    """The arguments `_train_or_load` reads, for the scripts that reuse benchmarks/caption.py's captioner."""
    ap.add_argument("--model-dir", default=None,
                    help="the captioner folder of benchmarks/caption.py --model-dir (default: train one here)")
    ap.add_argument("--train", type=int, default=1000, help="captioner training apples (as benchmarks/caption.py)")
    ap.add_argument("--steps", type=int, default=1200, help="captioner training steps (as benchmarks/caption.py)")


def _train_or_load(args, train):
    """The captioner: trained here, or loaded from --model-dir when that folder holds one trained by this script
    with the same apples and steps (saved there after training). Returns (pipe, info)."""
    from fovea.caption.predictor import CaptionPredictor
    from fovea.caption.train import CaptionTrainConfig, train_captioner
    from fovea.engine.checkpoint import read_recipe

    want = {"train_apples": len(train), "steps": args.steps, "seed": 0}
    folder = Path(args.model_dir) if args.model_dir else None
    if folder is not None and (folder / "recipe.json").is_file():
        info = read_recipe(folder).info
        if {k: info.get(k) for k in want} == want:
            return CaptionPredictor.load(folder).pipeline.eval(), {**info, "loaded_from": str(folder)}
        print(f"{folder} holds a captioner trained with {({k: info.get(k) for k in want})}, not {want}: training anew")
    t0, c0 = time.perf_counter(), time.process_time()
    pipe, history = train_captioner(train, cfg=CaptionTrainConfig(steps=args.steps))
    info = {**want, "train_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - c0,
            "final_losses": {k: history[-1][k] for k in ("itc", "itm", "lm")}}
    if folder is not None:
        CaptionPredictor.from_pipeline(pipe).save(folder, info)
    return pipe, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--head-apples", type=int, default=2000,
                    help="fresh generated apples (seed 2) the heads are self-distilled on (the decoder's own captions)")
    ap.add_argument("--calib", type=int, default=500,
                    help="fresh apples (seed 3) the heads' accuracies and path frequencies (the trees) are measured on")
    ap.add_argument("--cost-apples", type=int, default=200,
                    help="calibration apples decoded to measure the step-cost model the headline tree is sized with")
    ap.add_argument("--medusa-steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--heads", type=int, default=7, help="Medusa heads (7: a good caption of 8 tokens fits one step)")
    ap.add_argument("--max-nodes", type=int, default=48, help="largest headline tree considered")
    ap.add_argument("--tree-nodes", default="16,32",
                    help="sizes of the comparison trees from the accuracies (comma-separated)")
    ap.add_argument("--compare-heads", type=int, default=5,
                    help="also train this many heads the previous way (the captioner's training apples) with its "
                         "6-node accuracy tree, as the previous configuration's row (0: skip)")
    ap.add_argument("--compare-steps", type=int, default=600, help="training steps of the previous-setup heads")
    ap.add_argument("--model-dir", default=None,
                    help="folder to save the trained captioner in, or to load it from if it holds one trained with "
                         "the same --train and --steps (the decoding comparison does not depend on where it came from)")
    ap.add_argument("--joint-apples", type=int, default=4000,
                    help="apples (seed 2: the head apples and more) the Medusa-2 joint training self-distils on")
    ap.add_argument("--joint-steps", type=int, default=1000, help="Medusa-2 joint training steps")
    ap.add_argument("--runs-log", default=None,
                    help="JSON-lines file: this run's headline is appended, and the block gets a table of every run "
                         "in the file (same command, separate processes) with the median as the verdict")
    add_doc_args(ap, "caption", "300 train / 60 test apples, 300 + 300 steps, 600 head apples, 200 calibration apples")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.steps, args.medusa_steps = 300, 60, 300, 300
        args.head_apples, args.calib, args.compare_steps, args.cost_apples = 600, 200, 200, 100
        args.joint_apples, args.joint_steps = 1200, 300
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/caption.py")

    from fovea.caption.train import (apple_caption_set, decode_captions, evaluate_captions, greedy_caption_ids,
                                     medusa_head_accuracies, medusa_head_logits, medusa_tree, medusa_tree_for_cost,
                                     train_medusa2, train_medusa_heads)
    from fovea.nn.medusa import (expected_tokens_per_step, frequent_openings, head_accuracies, head_rank_paths,
                                 path_probabilities, tree_buffers)

    train, test = apple_caption_set(args.train, seed=0), apple_caption_set(args.test, seed=1)
    head_apples, calib = apple_caption_set(args.head_apples, seed=2), apple_caption_set(args.calib, seed=3)
    pipe, info = _train_or_load(args, train)
    t0 = time.perf_counter()
    heads = train_medusa_heads(pipe, head_apples, num_heads=args.heads, steps=args.medusa_steps)
    heads_s = time.perf_counter() - t0
    head_logits, labels = medusa_head_logits(pipe, heads, calib)  # teacher-forced on the calibration apples
    accuracy = head_accuracies(head_logits, labels, 8)
    ranked = path_probabilities(head_rank_paths(head_logits, labels, 8), 8)
    images = [s.image for s in test]
    sizes = [int(n) for n in args.tree_nodes.split(",") if n]
    acc_trees = [(f"accuracy tree, {n} nodes", medusa_tree(accuracy, n)) for n in sizes]
    # the step-cost model measured by decoding calibration apples, then the headline tree sized with it
    sizes_for_cost = tuple(n for n in (4, 8, 16, 32, 48) if n <= args.max_nodes)
    loop_rows, fixed_us, per_token_us = loop_step_costs(
        pipe, heads, ranked, [s.image for s in calib[:args.cost_apples]], sizes_for_cost)
    tree = medusa_tree_for_cost(heads, ranked, fixed_us, per_token_us, max_nodes=max(sizes_for_cost))
    trees = [(heads, f"path-frequency tree for cost, {tree.size - 1} nodes (headline)", tree, None)]
    trees.append((heads, "the headline tree with its nodes laid out by depth (the previous layout: an accepted path "
                         "beyond depth 1 is moved in the cache)", tree_buffers(tree.choices, order="depth"), None))
    trees += [(heads, name, t, None) for name, t in acc_trees]
    # extension beyond Medusa: the calibration captions' frequent openings drafted in the prompt forward; a node
    # is kept when its frequency pays for its tokens: f * (cost of a step / tokens per step) > per-token cost
    expected = 1 + sum(dict(ranked).get(c, 0.0) for c in tree.choices)
    min_frequency = per_token_us * expected / (fixed_us + per_token_us * tree.size)
    opening = tree_buffers(frequent_openings(greedy_caption_ids(pipe, calib), max(min_frequency, 0.01), max_nodes=32))
    trees.append((heads, f"headline tree + calibration captions' openings drafted in the prompt forward "
                         f"({opening.size - 1} nodes, frequency >= {max(min_frequency, 0.01):.3f}; not Medusa)",
                  tree, opening))
    old_heads = None
    if args.compare_heads:
        t0 = time.perf_counter()
        old_heads = train_medusa_heads(pipe, train, num_heads=args.compare_heads, steps=args.compare_steps)
        old_s = time.perf_counter() - t0
        old_acc = medusa_head_accuracies(pipe, old_heads, train, topk=8)
        trees.append((old_heads, "previous setup: heads on the captioner's training apples, their accuracies' "
                                 "6-node tree", medusa_tree(old_acc, 6), None))
    # Medusa-2: copies of the decoder and heads trained jointly; measured on the calibration apples like Medusa-1
    t0 = time.perf_counter()
    pipe2, heads2 = train_medusa2(pipe, apple_caption_set(args.joint_apples, seed=2), heads, steps=args.joint_steps)
    joint_s = time.perf_counter() - t0
    head_logits2, labels2 = medusa_head_logits(pipe2, heads2, calib)
    accuracy2 = head_accuracies(head_logits2, labels2, 8)
    ranked2 = path_probabilities(head_rank_paths(head_logits2, labels2, 8), 8)
    tree2 = medusa_tree_for_cost(heads2, ranked2, fixed_us, per_token_us, max_nodes=max(sizes_for_cost))
    greedy_t, medusa_t, greedy2_t, medusa2_t = [], [[] for _ in trees], [], []  # (wall s, CPU s) per pass
    for _ in range(args.repeats):  # interleaved, so load changes hit every decoder alike
        texts, g = decode_captions(pipe, images)
        greedy_t.append((g["decode_s"], g["decode_cpu_s"]))
        runs = []
        for (h, _, t, o), times in zip(trees, medusa_t):
            runs.append(decode_captions(pipe, images, h, tree=t, opening=o))
            times.append((runs[-1][1]["decode_s"], runs[-1][1]["decode_cpu_s"]))
        texts2, g2 = decode_captions(pipe2, images)
        greedy2_t.append((g2["decode_s"], g2["decode_cpu_s"]))
        texts_m2, m2 = decode_captions(pipe2, images, heads2, tree=tree2)
        medusa2_t.append((m2["decode_s"], m2["decode_cpu_s"]))
    cost_rows = step_costs(pipe, heads, [(n, t) for _, n, t, o in trees[:2 + len(acc_trees)] if "layout" not in n],
                           images[0])
    part_rows = loop_step_parts(pipe2, heads2, tree2, images)
    loop_table = table(["nodes (path-frequency order)", "tokens per step", "mean tree steps per caption",
                        "CPU us per step (slope)", "CPU us per caption besides steps (intercept)"], loop_rows)
    costs = table(["part of a decoding step (batch 1, 1 thread)", "median CPU us", "vs single-token forward"],
                  cost_rows)
    parts = table(["part of a step, inside decoding (headline tree)", "mean CPU us per step", "vs greedy step"],
                  part_rows)
    metrics, metrics2 = evaluate_captions(texts, test), evaluate_captions(texts2, test)
    g_s, g_cpu = (statistics.median(t[i] for t in greedy_t) for i in (0, 1))
    g2_s, g2_cpu = (statistics.median(t[i] for t in greedy2_t) for i in (0, 1))
    m2_s, m2_cpu = (statistics.median(t[i] for t in medusa2_t) for i in (0, 1))
    quality_ok = _quality_kept(metrics["cider_d"], metrics2["cider_d"])
    quality = table(["decoder (greedy captions of the held-out apples)", "apples", "BLEU-4", "CIDEr-D",
                     "damaged/good right", "damage kind right", "position right", "size right"],
                    [[name, len(test), f"{q['bleu4']:.3f}", f"{q['cider_d']:.2f}", f"{q['acc_damaged']:.3f}",
                      f"{q['acc_kind']:.3f}", f"{q['acc_position']:.3f}", f"{q['acc_size']:.3f}"]
                     for name, q in [("trained captioner (Medusa-1 and greedy baseline)", metrics),
                                     (f"Medusa-2 tuned copy ({sum(a == b for a, b in zip(texts, texts2))} / "
                                      f"{len(test)} captions the same as the original's)", metrics2)]])
    acc_table = table(["head (predicts t + k)", *[f"Medusa-1 rank {r}" for r in range(4)], "Medusa-1 top-4",
                       "Medusa-2 rank 0", "Medusa-2 rank 1", "Medusa-2 top-4"],
                      [[f"{i} (t + {i + 2})", *[f"{float(a):.3f}" for a in row[:4]], f"{float(row[:4].sum()):.3f}",
                        f"{float(row2[0]):.3f}", f"{float(row2[1]):.3f}", f"{float(row2[:4].sum()):.3f}"]
                       for i, (row, row2) in enumerate(zip(accuracy, accuracy2))])
    rows = [["greedy + KV cache (baseline)", 1, f"{len(test)} / {len(test)}", g["tokens"], g["forwards"],
             f"{g['tokens'] / g['forwards']:.2f}", "1.00", "-", f"{g_s:.3f}", f"{g['tokens'] / g_s:.0f}", "**1.00x**",
             f"{g_cpu:.3f}", "**1.00x**"]]
    ranked_value = dict(ranked)
    medusa1 = None
    for (h, name, t, o), times, (texts_m, m) in zip(trees, medusa_t, runs):
        m_s, m_cpu = (statistics.median(x[i] for x in times) for i in (0, 1))
        expected = (f"{1 + sum(ranked_value.get(c, 0.0) for c in t.choices):.2f}" if h is heads
                    else f"{expected_tokens_per_step(t.choices, old_acc):.2f} (acc.)")
        rows.append([f"Medusa, {h.num_heads} heads, greedy acceptance, {name}", t.size,
                     f"{sum(a == b for a, b in zip(texts, texts_m))} / {len(test)}", m["tokens"], m["forwards"],
                     f"{m['tokens'] / m['forwards']:.2f}", expected,
                     f"{m['cache_moves']} / {m['forwards'] - len(test)}", f"{m_s:.3f}", f"{m['tokens'] / m_s:.0f}",
                     f"**{g_s / m_s:.2f}x**", f"{m_cpu:.3f}", f"**{g_cpu / m_cpu:.2f}x**"])
        medusa1 = medusa1 or (g_s / m_s, g_cpu / m_cpu, sum(a == b for a, b in zip(texts, texts_m)))
        if o is not None:
            drafted = (g_s / m_s, g_cpu / m_cpu, sum(a == b for a, b in zip(texts, texts_m)))
    equal2 = sum(a == b for a, b in zip(texts2, texts_m2))
    rows.append(["greedy + KV cache, Medusa-2 tuned decoder (the baseline of the row below; its CPU time vs the "
                 f"original greedy: {g_cpu / g2_cpu:.2f}x)", 1, f"{sum(a == b for a, b in zip(texts, texts2))} / "
                 f"{len(test)} (to the original)", g2["tokens"], g2["forwards"], f"{g2['tokens'] / g2['forwards']:.2f}",
                 "1.00", "-", f"{g2_s:.3f}", f"{g2['tokens'] / g2_s:.0f}", "**1.00x**", f"{g2_cpu:.3f}", "**1.00x**"])
    rows.append([f"Medusa-2 (headline): {heads2.num_heads} heads trained jointly with the decoder, greedy acceptance, "
                 f"path-frequency tree for cost, {tree2.size - 1} nodes", tree2.size,
                 f"{equal2} / {len(test)} (to the tuned greedy)", m2["tokens"], m2["forwards"],
                 f"{m2['tokens'] / m2['forwards']:.2f}",
                 f"{1 + sum(dict(ranked2).get(c, 0.0) for c in tree2.choices):.2f}",
                 f"{m2['cache_moves']} / {m2['forwards'] - len(test)}", f"{m2_s:.3f}", f"{m2['tokens'] / m2_s:.0f}",
                 f"**{g2_s / m2_s:.2f}x**", f"{m2_cpu:.3f}", f"**{g2_cpu / m2_cpu:.2f}x**"])
    headline = (g2_s / m2_s, g2_cpu / m2_cpu, equal2)
    speed = table(["decoding", "tokens per base forward (tree + root)", "captions equal to greedy", "tokens",
                   "base-model forwards", "tokens / forward", "expected tokens / step (path frequencies)",
                   "cache moves / tree steps", "median wall s", "tokens / s (wall)", "tokens/s vs greedy (wall)",
                   "median CPU s", "vs greedy (CPU)"], rows)
    met = "MET" if headline[1] >= 1.8 and headline[2] == len(test) and quality_ok else "NOT met"
    runs_rows, runs_verdict = [], []
    if args.runs_log:  # one line per full run; the verdict over runs is the median of their CPU headlines
        log = Path(args.runs_log)
        log.parent.mkdir(parents=True, exist_ok=True)
        rec = {"utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
               "cpu_x": round(headline[1], 4), "wall_x": round(headline[0], 4), "equal": headline[2],
               "captions": len(test), "tree_nodes": tree2.size - 1, "quick": bool(args.quick),
               "medusa1_cpu_x": round(medusa1[1], 4), "medusa1_equal": medusa1[2],
               "cider_d": round(metrics["cider_d"], 4), "cider_d_tuned": round(metrics2["cider_d"], 4),
               "command": " ".join(sys.argv[1:])}
        with log.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        recs = [r for r in recs if r["quick"] == bool(args.quick)]
        runs_rows = [[i + 1, r["utc"], r["tree_nodes"], f"{r['equal']} / {r['captions']}", f"{r['wall_x']:.2f}x",
                      f"{r['cpu_x']:.2f}x", f"{r['cider_d']:.2f} -> {r['cider_d_tuned']:.2f}",
                      f"{r['medusa1_cpu_x']:.2f}x"] for i, r in enumerate(recs)]
        med = statistics.median(r["cpu_x"] for r in recs)
        all_equal = all(r["equal"] == r["captions"] and r["medusa1_equal"] == r["captions"] for r in recs)
        all_quality = all(_quality_kept(r["cider_d"], r["cider_d_tuned"]) for r in recs)
        runs_verdict = [f"Over the {len(recs)} run(s) in `{log.name}` (each a separate process of this command): "
                        f"median {med:.2f}x CPU (min {min(r['cpu_x'] for r in recs):.2f}x, max "
                        f"{max(r['cpu_x'] for r in recs):.2f}x), every caption equal to greedy in every run: "
                        f"{'yes' if all_equal else 'NO'}, tuned CIDEr-D within {CIDER_MARGIN} of the original's or "
                        f"above in every run: {'yes' if all_quality else 'NO'}; Medusa-1 median "
                        f"{statistics.median(r['medusa1_cpu_x'] for r in recs):.2f}x. Goal >= 1.8x by the median over "
                        f"runs: **{'MET' if med >= 1.8 and all_equal and all_quality else 'NOT met'}**."]
    loss_text = ", ".join(f"{k} {v:.3f}" for k, v in info["final_losses"].items())
    trained = (f"Training: {info['train_apples']} apples, {info['steps']} steps in {info['train_s']:.0f} s "
               f"({info['train_cpu_s']:.0f} CPU s; final losses {loss_text})")
    if "loaded_from" in info:
        trained += (f", trained earlier by this script's training code with the same settings and loaded from "
                    f"`{info['loaded_from']}` (--model-dir)")
    body = [trained + f"; Medusa heads: {args.heads}, {args.medusa_steps} steps on the decoder's own greedy captions "
            f"of {args.head_apples} fresh apples (seed 2) in {heads_s:.0f} s; Medusa-2: copies of the decoder and "
            f"those heads trained jointly for {args.joint_steps} steps on {args.joint_apples} apples of seed 2 in "
            f"{joint_s:.0f} s"
            + (f"; previous-setup heads ({args.compare_heads}, {args.compare_steps} steps on the captioner's training "
               f"apples) in {old_s:.0f} s"
               if old_heads is not None else "") + ".", "", *quality, "",
            f"Medusa heads' top-k accuracies, teacher-forced on their decoder's greedy captions of {args.calib} "
            "calibration apples (seed 3; not the heads' training apples); Medusa-2: the tuned heads on the tuned "
            "decoder:", "",
            *acc_table, "",
            f"Trees (chosen before the test passes, on calibration apples only): nodes in the order of "
            f"their joint path frequency on the calibration apples (`path_probabilities`), sized for the most "
            f"expected tokens per unit of step cost (`choices_for_cost`, at most {max(sizes_for_cost)} nodes) with "
            f"the step-cost model measured by decoding {min(args.cost_apples, len(calib))} calibration apples "
            f"(2 interleaved passes per size): a step costs {fixed_us:.0f} + {per_token_us:.1f} CPU us per tree "
            f"token. Chosen for the Medusa-1 heads: {len(tree.choices)} nodes {tree.choices}; for the Medusa-2 "
            f"heads (their own path frequencies, the same cost model): {len(tree2.choices)} nodes {tree2.choices}.",
            "", *loop_table, "",
            f"Decoding, {args.repeats} interleaved passes over the {len(test)} held-out apples "
            f"(medians; greedy wall s over the passes: min {min(t[0] for t in greedy_t):.3f}, max "
            f"{max(t[0] for t in greedy_t):.3f}; CPU s = this thread's CPU time):", "",
            *speed, "",
            f"Goal >= 1.8x tokens/s on the CPU with captions equal to greedy (and, for Medusa-2, the tuned decoder's "
            f"CIDEr-D at most {CIDER_MARGIN} below the original's: {metrics2['cider_d']:.2f} vs "
            f"{metrics['cider_d']:.2f}, "
            f"{'yes' if quality_ok else 'NO'}): **{met}** (headline, Medusa-2 vs greedy of the same tuned decoder: "
            f"{headline[1]:.2f}x CPU, {headline[0]:.2f}x wall, {headline[2]} / {len(test)} equal; against the "
            f"original decoder's greedy: {g_cpu / m2_cpu:.2f}x CPU). Medusa-1 (heads on the frozen decoder, the "
            f"first Medusa row): {medusa1[1]:.2f}x CPU, {medusa1[0]:.2f}x wall, {medusa1[2]} / {len(test)} equal. "
            f"With the openings drafted in the prompt forward (an extension beyond Medusa, Medusa-1 heads and tree): "
            f"{drafted[1]:.2f}x CPU, {drafted[0]:.2f}x wall, {drafted[2]} / {len(test)} equal.", "",
            *(["Headline of every run of this command logged with `--runs-log` (this run last):", "",
               *table(["run", "UTC", "tree nodes", "captions equal to greedy", "vs greedy (wall)",
                       "vs greedy (CPU)", "CIDEr-D original -> tuned", "Medusa-1 vs greedy (CPU)"], runs_rows), "",
               *runs_verdict, ""] if runs_rows else []),
            "Where a step's time goes inside Medusa-2 decoding (the headline; one more pass over the held-out "
            "apples, each encoded right before its caption as in the timed passes; thread CPU time per part, mean "
            "per step, and the last two rows per caption; the clock reads themselves add about 1 us per part):", "",
            *parts, "",
            "The same parts each in a tight loop (medians of 300 calls each, thread CPU time; in the decoding loop "
            "the same parts cost more, see above):", "", *costs, "",
            "Examples (held-out truth -> caption):", ""]
    body += [f"- `{s.captions[0]}` -> `{t}`" for s, t in list(zip(test, texts))[:6]]
    run.write("Captioning and Medusa decoding", body, tag="quick" if args.quick else None)


if __name__ == "__main__":
    main()
