"""DiTCtrl multi-prompt generation (issue 19 part 3) with fovea's small latent video DiT: CSCV transition
smoothness of blended vs naive multi-prompt clips over seeded prompt pairs, and whether each segment still
follows its own prompt (read back by the generator's tracker), so a method that froze the video could not win.

Model: the checkpoint in --checkpoint (trained by `python -m fovea.gen.train --out runs/ditctrl`; trained here
first if it is missing). Single-prompt check: every caption of the vocabulary generated and read back.
Multi-prompt, per pair (A, B differ in one attribute: colour, direction or object), same seed for all methods:
- naive: A and B generated independently (their own noise), concatenated (2 L frames);
- naive-trim: the same two clips cut to the blended length, A's first L - o/2 frames then B's last L - o/2
  (the hard cut in the middle of where the overlap would be), so the frame count cannot explain a difference;
- blend: DiTCtrl latent blending only (segments of L frames, overlap o, L + (L - o) frames);
- ditctrl: blending + KV sharing (default schedule); ditctrl-mask: with the mask-guided variant;
- frozen: the first ditctrl frame repeated (a control: CSCV 1 but no motion).
Adherence: the first L - o frames read back vs A, the last L - o frames vs B (colour, object, direction all
right). CSCV = 1 / (1 + 10 std/mean) of adjacent-frame cosine similarities of ImageNet EfficientNet-Lite0
features (offline weights, frames resized to 224). Wins: pairs where the method's CSCV beats naive's.

    .venv/bin/python benchmarks/ditctrl.py --quick   # 8 pairs, 1 sample per caption; small model in runs/ditctrl_quick;
                                                     # its own block (ditctrl.py:quick) and ditctrl_examples_quick.png
    .venv/bin/python benchmarks/ditctrl.py           # 48 pairs, 4 samples per caption -> docs/benchmarks/ditctrl.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import DOCS, ROOT, Run, add_doc_args, load_average, table  # noqa: E402

METHODS = ("naive", "naive-trim", "blend", "ditctrl", "ditctrl-mask", "frozen")


def _load_or_train(path: Path, quick: bool):
    from fovea.gen.train import GenTrainConfig, load_generator, train_generator

    meta = path / "generator.json"
    if meta.is_file():  # a training stopped midway leaves a checkpoint of fewer DiT steps than it planned
        info = json.loads(meta.read_text())
        done, planned = info.get("dit_steps_done", 0), info.get("train", {}).get("dit_steps", 0)
        if done < planned:  # the quick generator is cheap: train it again; a full one is used as it is (shown)
            print(f"{path} holds an unfinished training ({done} of {planned} DiT steps): "
                  + ("training again" if quick else "used as it is"), flush=True)
            if quick:
                meta.unlink()
    if not meta.is_file():
        cfg = GenTrainConfig(clips=1000, ae_steps=300, dit_steps=600) if quick else GenTrainConfig()
        print(f"no checkpoint in {path}: training one ({cfg})", flush=True)
        train_generator(path, cfg, log=lambda s: print(s, flush=True))
    return load_generator(path)


def _rates(name: str, clips, captions: list[str]) -> list[object]:
    from fovea.gen.evaluate import adherence

    res = [adherence(np.asarray(clip), cap) for clip, cap in zip(clips, captions)]
    n = len(res)
    return [name, n, f"{sum(r.colour for r in res) / n:.3f}", f"{sum(r.object for r in res) / n:.3f}",
            f"{sum(r.direction for r in res) / n:.3f}", f"{sum(r.all for r in res) / n:.3f}"]


def _single_prompt(dit, ae, samples: int, steps: int, guidance: float,
                   start: str) -> tuple[list[list[object]], float]:
    """Rows: ground-truth clips, their autoencoder round trip (the ceiling of any generated clip) and generated
    clips, for every caption of the vocabulary x samples; and the generation seconds per clip."""
    from fovea.gen.multiprompt import generate_single
    from fovea.models.latent_ae import frames_to_unit, unit_to_frames
    from fovea.synth.moving_objects import COLOURS, DIRECTIONS, OBJECTS, make_clip, random_spec, tokenize

    captions = [f"a {c} {o} moves {d}" for c in COLOURS for o in OBJECTS for d in DIRECTIONS] * samples
    rng = np.random.default_rng(77)
    truth = [make_clip(random_spec(rng, dit.config.frames, 4 * dit.config.latent_size, colour=cap.split()[1],
                                   obj=cap.split()[2], direction=cap.split()[4], start=start)).frames for cap in captions]
    with torch.no_grad():
        round_trip = [unit_to_frames(ae.decode(ae.encode(frames_to_unit(torch.from_numpy(f))))).numpy()
                      for f in truth]
    tokens = torch.from_numpy(np.stack([tokenize(c) for c in captions]))
    g = torch.Generator().manual_seed(123)
    c = dit.config
    noise = torch.randn((len(captions), c.frames, c.latent_channels, c.latent_size, c.latent_size), generator=g)
    t0 = time.perf_counter()
    clips = torch.cat([generate_single(dit, ae, tokens[i:i + 16], noise[i:i + 16], steps, guidance)
                       for i in range(0, len(captions), 16)])
    per_clip_s = (time.perf_counter() - t0) / len(captions)
    rows = [_rates("ground truth", truth, captions), _rates("autoencoder round trip", round_trip, captions),
            _rates("generated", clips.numpy(), captions)]
    return rows, per_clip_s


def _strip(examples: list[tuple[str, str, dict[str, np.ndarray]]], path: Path, scale: int = 2) -> None:
    """PNG: per example, one row per method (naive, ditctrl), frames left to right."""
    import cv2

    rows = []
    for a, b, clips in examples:
        width = max(len(v) for v in clips.values())
        for name in ("naive-trim", "ditctrl"):
            v = clips[name]
            h, w = v.shape[1:3]
            pad = np.full((width - len(v), h, w, 3), 255, np.uint8)
            rows.append(np.concatenate(list(np.concatenate([v, pad])), axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    img = np.concatenate(rows)
    img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="generator folder (default runs/ditctrl, --quick: runs/ditctrl_quick)")
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--single-samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--png", default=None,
                    help="example strip (default docs/benchmarks/ditctrl_examples.png, --quick: ditctrl_examples_quick.png)")
    add_doc_args(ap, "ditctrl", "8 prompt pairs, 1 sample per caption, a small generator of its own (a few minutes)")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.single_samples = 8, 1
    if args.png is None:  # a quick run never replaces the full run's picture (nor its block: tag "quick" below)
        args.png = str(DOCS / ("ditctrl_examples_quick.png" if args.quick else "ditctrl_examples.png"))
    if args.checkpoint is None:
        args.checkpoint = str(ROOT / "runs" / ("ditctrl_quick" if args.quick else "ditctrl"))
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/ditctrl.py")

    from fovea.gen.evaluate import FrameEmbedder, adherence, prompt_pairs
    from fovea.gen.multiprompt import MultiPromptConfig, generate_ditctrl, generate_naive
    from fovea.nn.ditctrl import cscv
    from fovea.synth.moving_objects import tokenize

    ae, dit, info = _load_or_train(Path(args.checkpoint), args.quick)
    start = info["train"].get("start", "anywhere")
    single_rows, single_s = _single_prompt(dit, ae, args.single_samples, args.steps, args.guidance, start)
    embed = FrameEmbedder()
    base = MultiPromptConfig(steps=args.steps, guidance=args.guidance, overlap=args.overlap)
    configs = {"blend": MultiPromptConfig(steps=args.steps, guidance=args.guidance, overlap=args.overlap,
                                          kv_sharing=False),
               "ditctrl": base,
               "ditctrl-mask": MultiPromptConfig(steps=args.steps, guidance=args.guidance, overlap=args.overlap,
                                                 mask_guided=True)}
    window = dit.config.frames - args.overlap
    scores = {m: [] for m in METHODS}
    adh = {m: [] for m in METHODS}
    kinds, gen_s, examples = [], {m: [] for m in METHODS}, []
    for i, (cap_a, cap_b, kind) in enumerate(prompt_pairs(args.pairs, seed=0)):
        prompts = torch.from_numpy(np.stack([tokenize(cap_a), tokenize(cap_b)]))
        clips = {}
        t0 = time.perf_counter()
        clips["naive"] = generate_naive(dit, ae, prompts, torch.Generator().manual_seed(1000 + i), args.steps,
                                        args.guidance).numpy()
        gen_s["naive"].append(time.perf_counter() - t0)
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            clips[name] = generate_ditctrl(dit, ae, prompts, torch.Generator().manual_seed(1000 + i), cfg).numpy()
            gen_s[name].append(time.perf_counter() - t0)
        half = args.overlap // 2
        length = dit.config.frames
        clips["naive-trim"] = np.concatenate([clips["naive"][:length - half], clips["naive"][length + half:]])
        clips["frozen"] = np.repeat(clips["ditctrl"][:1], len(clips["ditctrl"]), axis=0)
        for name, v in clips.items():
            scores[name].append(cscv(embed(v)))
            adh[name].append((adherence(v[:window], cap_a).all, adherence(v[-window:], cap_b).all))
        kinds.append(kind)
        if i < 4:
            examples.append((cap_a, cap_b, clips))
        print(f"pair {i} {cap_a!r} -> {cap_b!r}: " + ", ".join(f"{m} {scores[m][-1]:.3f}" for m in METHODS)
              + f" (load {load_average():.1f})", flush=True)
    _strip(examples, Path(args.png))
    png_name = Path(args.png).relative_to(ROOT) if Path(args.png).is_relative_to(ROOT) else args.png

    n = len(kinds)
    rows = []
    for m in METHODS:
        s = scores[m]
        wins = {ref: sum(x > y for x, y in zip(s, scores[ref])) for ref in ("naive", "naive-trim")}
        fair = sum(x > y and b for x, y, (_, b) in zip(s, scores["naive-trim"], adh[m]))
        per = f"{statistics.median(gen_s[m]):.1f}" if gen_s[m] else "-"
        rows.append([m, f"{statistics.mean(s):.3f}", f"{statistics.pstdev(s):.3f}",
                     f"{wins['naive']}/{n}" if m != "naive" else "-",
                     f"{wins['naive-trim']}/{n}" if m != "naive-trim" else "-", f"{fair}/{n}" if m != "naive-trim" else "-",
                     f"{sum(a for a, _ in adh[m]) / n:.3f}", f"{sum(b for _, b in adh[m]) / n:.3f}",
                     f"{sum(a and b for a, b in adh[m]) / n:.3f}", per])
    record = Path(args.checkpoint) / "ditctrl_pairs.json"
    record.write_text(json.dumps({"pairs": prompt_pairs(args.pairs, seed=0), "cscv": scores,
                                  "adherence": {m: [list(map(bool, x)) for x in v] for m, v in adh.items()}}))
    kind_rows = []
    for kind in ("colour", "direction", "object"):
        idx = [j for j, k in enumerate(kinds) if k == kind]
        if not idx:
            continue
        kind_rows.append([kind, len(idx)] + [f"{statistics.mean(scores[m][j] for j in idx):.3f}" for m in METHODS])
    trained = (f"{info.get('dit_steps_done', '?')} DiT steps of batch {info['train']['dit_batch']} on "
               f"{info['train']['clips']} clips (start {start!r}), {info.get('train_cpu_s', '?')} CPU s for the DiT")
    init = info["train"].get("init_from")
    if init and (Path(init) / "generator.json").is_file():
        prev = json.loads((Path(init) / "generator.json").read_text())
        trained += (f", warm-started from `{init}` ({prev.get('dit_steps_done')} steps, start "
                    f"{prev['train'].get('start', 'anywhere')!r}, {prev.get('train_cpu_s')} CPU s; its autoencoder "
                    f"reused: {prev['train']['ae_steps']} steps)")
    d = info["dit"]
    body = [
        f"Generator: `{Path(args.checkpoint).name}` — autoencoder 32 x 32 x 3 -> 8 x 8 x {d['latent_channels']} per "
        f"frame; video DiT dim {d['dim']}, depth {d['depth']}, heads {d['heads']}, patch {d['patch']}, "
        f"{d['frames']} latent frames = {d['frames'] * (d['latent_size'] // d['patch']) ** 2} video + "
        f"{d['text_len']} text tokens; {trained}. Sampling: DDIM {args.steps} steps, guidance {args.guidance}.",
        "",
        "Single prompt: every caption of the vocabulary (4 colours x 2 objects x 4 directions), read back by the "
        f"generator's tracker from ground-truth clips, their autoencoder round trip and generated clips "
        f"({single_s:.2f} s per generated clip):", "",
        *table(["clips", "n", "colour", "object", "direction", "all three"], single_rows), "",
        f"Multi-prompt: {n} prompt pairs (seed 0), segments of {d['frames']} latent frames, overlap {args.overlap}; "
        f"adherence on the first / last {window} frames; CSCV on EfficientNet-Lite0 features:", "",
        *table(["method", "CSCV mean", "CSCV std", "wins vs naive", "wins vs naive-trim",
                "wins vs naive-trim with B followed", "A follows A", "B follows B", "both", "s per clip (median)"],
               rows), "",
        "CSCV mean by what changes between the prompts:", "",
        *table(["change", "pairs", *METHODS], kind_rows), "",
        f"Examples (rows: naive-trim, then ditctrl, per pair): `{png_name}`"
        + "".join(f"; {a!r} -> {b!r}" for a, b, _ in examples) + ".",
    ]
    run.write("DiTCtrl multi-prompt video generation", body, tag="quick" if args.quick else None)


if __name__ == "__main__":
    main()
