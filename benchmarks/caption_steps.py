"""Where a Medusa step's CPU time goes, this code against an earlier commit's `fovea.nn.medusa` (issue 19): the
same captioner, heads and tree decoded by both versions of `medusa_generate` in one run (interleaved passes),
each step split into its parts (`medusa_generate(timings=...)`), next to cached greedy decoding.

The heads are trained once (`--prepare`: as `benchmarks/caption.py` trains its headline heads: 7 heads, 1000 steps
on the decoder's greedy captions of 2000 fresh apples, seed 2) and saved to --heads-file, so the timing run
(`/work/briefs/s8/bench.sh`-style quiet window) trains nothing. The tree: nodes in the order of their joint path
frequency on calibration apples (seed 3), the first --nodes of them (no test apple is looked at for any choice).
Decoding is timed on the held-out apples of `benchmarks/caption.py` (seed 1): batch 1, one torch thread, image
encoding excluded, this thread's CPU time. The earlier version is read with `git show <commit>:src/fovea/nn/medusa.py`
and imported as its own module; both versions decode with the same model and heads objects.
Quick version: `--quick` (a few minutes): trains the quick captioner and heads of `benchmarks/caption.py --quick`
in the run (no --model-dir / --heads-file needed), 40 held-out apples, one pass.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import ROOT, Run, add_doc_args, table  # noqa: E402
from caption import _train_or_load, add_captioner_args  # noqa: E402


def _medusa_at(commit: str):
    """`fovea.nn.medusa` as it was at `commit`, imported as a separate module."""
    source = subprocess.run(["git", "show", f"{commit}:src/fovea/nn/medusa.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"medusa_{commit[:8]}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def _pass(text, decode, memories, prompt, max_new, eos) -> tuple[float, int, dict, list]:
    """One pass: (thread CPU s, steps, per-part CPU s, outputs) of decode(memory) over the images."""
    timings: dict[str, float] = {}
    outs, steps, cpu = [], 0, 0.0
    for memory in memories:
        c0 = time.thread_time()
        ids, n = decode(memory, None)
        cpu += time.thread_time() - c0
        outs.append(ids.tolist())
        steps += n
    for memory in memories:  # a second pass with the parts clocked (the clock reads cost a little)
        decode(memory, timings)
    return cpu, steps, timings, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_captioner_args(ap)
    ap.add_argument("--heads-file", default=None,
                    help="safetensors file of the Medusa heads (written by --prepare; default: train them in this run)")
    ap.add_argument("--prepare", action="store_true", help="train the heads, save them to --heads-file and stop")
    ap.add_argument("--heads", type=int, default=7)
    ap.add_argument("--medusa-steps", type=int, default=1000)
    ap.add_argument("--head-apples", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=500, help="calibration apples (seed 3) the tree is taken from")
    ap.add_argument("--nodes", type=int, default=9, help="tree nodes (path-frequency order)")
    ap.add_argument("--test", type=int, default=200, help="held-out apples (seed 1) decoded")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="93afd2f",
                    help="git commit whose fovea.nn.medusa is the 'before' row (default: the session-7 code)")
    add_doc_args(ap, "caption", "captioner and heads as benchmarks/caption.py --quick, trained here unless given; "
                                "200 calibration and 40 held-out apples, 1 pass")
    args = ap.parse_args()
    if args.quick:
        args.test, args.repeats, args.calib = 40, 1, 200
        args.train, args.steps, args.medusa_steps, args.head_apples = 300, 300, 300, 600
    torch.set_num_threads(1)

    from safetensors.torch import load_file, save_file

    from fovea.caption.train import apple_caption_set, medusa_path_probabilities, train_medusa_heads
    from fovea.caption.vocab import BOS, EOS
    from fovea.models.text_decoder import greedy_decode
    from fovea.nn import medusa as current
    from fovea.nn.medusa import MedusaHeads, tree_buffers

    pipe, info = _train_or_load(args, apple_caption_set(args.train, seed=0))
    cap = pipe.captioner
    if args.prepare and args.heads_file is None:
        ap.error("--prepare needs --heads-file (where to save the heads)")
    if args.prepare or args.heads_file is None:
        heads = train_medusa_heads(pipe, apple_caption_set(args.head_apples, seed=2), num_heads=args.heads,
                                   steps=args.medusa_steps)
        state = {k: v.contiguous() for k, v in heads.state_dict().items()}
        if args.prepare:
            save_file(state, args.heads_file)
            print(f"saved {args.heads} heads to {args.heads_file}")
            return
    else:
        state = load_file(args.heads_file)
    heads = MedusaHeads(cap.text.cfg.dim, len(pipe.vocab), state["res_weight"].shape[1], state["res_weight"].shape[0])
    heads.load_state_dict(state)
    heads.eval()
    ranked = medusa_path_probabilities(pipe, heads, apple_caption_set(args.calib, seed=3))
    choices = [c for c, _ in ranked[:args.nodes]]
    run = Run(args, full_command=".venv/bin/python benchmarks/caption_steps.py --model-dir DIR --heads-file FILE "
                                 "--baseline COMMIT")
    old = _medusa_at(args.baseline)
    old_heads = old.MedusaHeads(cap.text.cfg.dim, len(pipe.vocab), heads.num_heads, state["res_weight"].shape[0])
    old_heads.load_state_dict(state)
    old_heads.eval()
    text, max_new, prompt = cap.text, cap.cfg.max_caption_len, torch.tensor([BOS])
    memories = [cap.image_tokens(pipe.preprocess(torch.from_numpy(s.image)[None]))
                for s in apple_caption_set(args.test, seed=1)]
    trees = {"old": old.tree_buffers(choices), "new": tree_buffers(choices)}

    def greedy(memory, timings):
        ids = greedy_decode(text, prompt, max_new, eos=EOS, memory=memory)
        return ids, len(ids)

    def medusa(module, h, key):
        def decode(memory, timings):
            ids, stats = module.medusa_generate(text, h, prompt, max_new, tree=trees[key], eos=EOS, memory=memory,
                                                timings=timings)
            return ids, stats.steps
        return decode

    decoders = [("greedy + KV cache (baseline)", greedy),
                (f"Medusa, commit {args.baseline[:7]} (before)", medusa(old, old_heads, "old")),
                ("Medusa, this code (after)", medusa(current, heads, "new"))]
    results = {name: [] for name, _ in decoders}
    for _ in range(args.repeats):
        for name, fn in decoders:
            results[name].append(_pass(text, fn, memories, prompt, max_new, EOS))
    g_outs = results[decoders[0][0]][0][3]
    g_cpu = statistics.median(r[0] for r in results[decoders[0][0]])
    rows, part_rows = [], []
    for name, _ in decoders:
        cpu = statistics.median(r[0] for r in results[name])
        cpu_s, steps, timings, outs = results[name][0]
        tokens = sum(len(o) for o in outs)
        rows.append([name, f"{sum(a == b for a, b in zip(outs, g_outs))} / {len(outs)}", tokens, steps,
                     f"{cpu * 1e6 / steps:.0f}", f"{cpu:.3f}", f"**{g_cpu / cpu:.2f}x**"])
        if timings:
            parts = {k: statistics.median(r[2][k] for r in results[name]) for k in timings}
            part_rows.append([name, *[f"{parts[k] * 1e6 / steps:.0f}" for k in
                                      ("candidates", "tree forward", "acceptance", "cache move")],
                              f"{sum(parts.values()) * 1e6 / steps:.0f}"])
    body = [f"Captioner {('loaded from `' + info['loaded_from'] + '`') if 'loaded_from' in info else 'trained in this run'}"
            f" ({args.train} apples, {args.steps} steps); {heads.num_heads} heads "
            f"{'from `' + args.heads_file + '`' if args.heads_file else 'trained in this run'} "
            f"(`--prepare`: {args.medusa_steps} steps on {args.head_apples} fresh apples, seed 2); tree: the first "
            f"{args.nodes} nodes by path frequency on {args.calib} calibration apples (seed 3): {choices}. Decoding "
            f"{len(memories)} held-out apples (seed 1), {args.repeats} interleaved passes per decoder, medians of this "
            "thread's CPU time; steps = base-model forwards after the prompt (tree steps for Medusa).", "",
            *table(["decoding", "equal to greedy", "tokens", "steps", "CPU us per step (whole caption / steps)",
                    "median CPU s", "vs greedy (CPU)"], rows), "",
            "Per part of a tree step, inside decoding (a clocked pass beside each timed pass; mean CPU us per step, "
            "median over the passes):", "",
            *table(["decoding", "candidates", "tree forward", "acceptance", "cache move", "sum of parts"], part_rows)]
    run.write("Captioning and Medusa decoding", body, tag="steps-quick" if args.quick else "steps")


if __name__ == "__main__":
    main()
