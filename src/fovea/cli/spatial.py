"""`fovea spatial synth|eval`: spatial question/answer data with metric answers, and its scoring.

synth reads either generated scenes (`--scenes N`, exact truth attached) or a folder of frames
(`--from DIR`): one `<stem>.npz` per frame with depth (H, W) float metres, labels (H, W) int
(0 = background, k = object k), K (3, 3), names (array of str, names[k-1] names label k) and
optionally gravity (3,) (down, camera frame), beside an optional `<stem>.png` RGB image.
It writes questions.jsonl, llava.json, images/, pictures/ and skipped.json to --out.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click
import numpy as np

from fovea.cli.progress import progress_bar
from fovea.errors import DataError


@click.group()
def spatial() -> None:
    """Spatial questions with metric answers (SpatialVLM-style): generate and evaluate."""


def load_frame(path: Path) -> dict:
    """One frame .npz -> dict(depth, labels, K, names {id: name}, gravity or None, rgb or None)."""
    from fovea.io import read_image

    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read frame {path} ({exc}). Fix: write it with numpy.savez.") from None
    missing = [k for k in ("depth", "labels", "K", "names") if k not in z]
    if missing:
        raise DataError(f"frame {path} lacks {', '.join(missing)}. Fix: save depth (H, W) metres, labels (H, W) int, "
                        "K (3, 3) and names (str array, names[k-1] for label k) in the .npz.")
    names = {i + 1: str(n) for i, n in enumerate(z["names"].tolist())}
    rgb = None
    for ext in (".png", ".jpg", ".jpeg"):
        if path.with_suffix(ext).is_file():
            rgb = read_image(path.with_suffix(ext))
            break
    return {"depth": z["depth"], "labels": z["labels"], "K": z["K"], "names": names,
            "gravity": z["gravity"] if "gravity" in z else None, "rgb": rgb}


def _write_outputs(out: Path, records, pictures: dict, images: dict, skipped: Counter) -> None:
    import cv2

    from fovea.spatial.export import to_llava, write_jsonl

    write_jsonl(records, out / "questions.jsonl")
    (out / "llava.json").write_text(json.dumps(to_llava(records, images), indent=1))
    (out / "pictures").mkdir(parents=True, exist_ok=True)
    for sid, pic in pictures.items():
        cv2.imwrite(str(out / "pictures" / f"{sid}.png"), pic[..., ::-1])
    (out / "skipped.json").write_text(json.dumps(dict(skipped.most_common()), indent=1))


@spatial.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder")
@click.option("--scenes", type=click.IntRange(min=1), default=None, help="generate this many scenes (exact truth)")
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="folder of frames (<stem>.npz with depth, labels, K, names; optional <stem>.png)")
@click.option("--kind", type=click.Choice(["room", "tabletop", "mixed"]), default="mixed", show_default=True)
@click.option("--depth", "depth_source", type=click.Choice(["render", "stereo"]), default="render", show_default=True,
              help="generated scenes: exact rendered depth, or fovea stereo on the rendered pair")
@click.option("--per-type", type=click.IntRange(min=1), default=2, show_default=True,
              help="questions per type and scene (at most)")
@click.option("--imperial", is_flag=True, help="answers in inches and feet")
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out: Path, scenes, from_dir, kind, depth_source, per_type, imperial, seed) -> None:
    """Write spatial questions with metric answers for generated scenes or a folder of RGB-D frames."""
    import cv2

    from fovea.spatial.export import draw_scene
    from fovea.spatial.pipeline import questions_from_frame, questions_from_scene
    from fovea.synth.scenes3d import random_scene

    if (scenes is None) == (from_dir is None):
        raise click.UsageError("pass exactly one of --scenes N or --from DIR")
    out.mkdir(parents=True, exist_ok=True)
    records, pictures, images, skipped = [], {}, {}, Counter()
    (out / "images").mkdir(exist_ok=True)
    if scenes is not None:
        with progress_bar() as progress:
            for i in range(scenes):
                k = kind if kind != "mixed" else ("room", "tabletop")[i % 2]
                sc = random_scene(seed + i, k)
                recs, info = questions_from_scene(sc, depth_source, per_type=per_type, imperial=imperial)
                sid = f"{sc.kind}-{sc.seed:05d}"
                cv2.imwrite(str(out / "images" / f"{sid}.png"), sc.rgb[..., ::-1])
                images[sid] = f"images/{sid}.png"
                pictures[sid] = draw_scene(sc.rgb, info.lift.objects, info.lift.frame, sc.K, recs)
                records += recs
                skipped.update(info.skipped)
                progress("scenes", i + 1, scenes)
    else:
        paths = sorted(from_dir.glob("*.npz"))
        if not paths:
            raise DataError(f"{from_dir} holds no .npz frames. Fix: save each frame as <stem>.npz (see --help).")
        for i, p in enumerate(paths):
            f = load_frame(p)
            recs, info = questions_from_frame(f["depth"], f["K"], f["labels"], f["names"], p.stem,
                                              gravity_cam=f["gravity"], seed=seed + i, per_type=per_type,
                                              imperial=imperial, depth_source="file")
            rgb = f["rgb"] if f["rgb"] is not None else np.zeros((*f["depth"].shape, 3), np.uint8)
            images[p.stem] = str(p.with_suffix(".png"))
            pictures[p.stem] = draw_scene(rgb, info.lift.objects, info.lift.frame, f["K"], recs)
            records += recs
            skipped.update(info.skipped)
    _write_outputs(out, records, pictures, images, skipped)
    n_types = len({r["type"] for r in records})
    click.echo(f"{len(records)} questions of {n_types} types from {len(pictures)} scene(s) -> {out / 'questions.jsonl'}")
    if skipped:
        click.echo(f"skipped (counted, see {out / 'skipped.json'}): " +
                   "; ".join(f"{k}: {v}" for k, v in skipped.most_common(8)))


@spatial.command("eval")
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the scores as JSON")
def eval_cmd(pred: Path, truth: Path, json_out) -> None:
    """Score PRED (JSONL: qid + answer text or value) against TRUTH (questions.jsonl with truth)."""
    from fovea.spatial.evaluate import evaluate, read_jsonl

    res = evaluate(read_jsonl(pred), read_jsonl(truth))
    if not res["types"]:
        raise DataError(f"{truth} has no record with a 'truth' field. Fix: pass questions.jsonl of generated scenes "
                        "(`fovea spatial synth --scenes N`) or add truth values.")
    click.echo(f"{'type':24s} {'n':>4s}  score")
    for name, s in res["types"].items():
        if "within25" in s:
            score = (f"+-25%: {s['within25']:.3f}  [0.5x,2x]: {s['ratio2']:.3f}  MRE: {s['mean_rel_err']:.3f}  "
                     f"MRA: {s['mra']:.3f}")
        elif "within_1h" in s:
            score = f"within 1 h: {s['within_1h']:.3f}"
        else:
            score = f"accuracy: {s['accuracy']:.3f}"
            if "wrong_sign" in s:
                score += f"  confident: {s['confident']}  wrong sign: {s['wrong_sign']}  same: {s['same']}"
        click.echo(f"{name:24s} {s['n']:4d}  {score}")
    o = res["overall"]
    click.echo(f"overall: qualitative accuracy {o['qualitative_accuracy']:.3f}, quantitative +-25% "
               f"{o['quantitative_within25']:.3f}, [0.5x,2x] {o['quantitative_ratio2']:.3f}, wrong sign {o['wrong_sign']}")
    c = res["counts"]
    click.echo(f"missing predictions: {c['missing']}, unparsed: {c['unparsed']}, truth records without truth: "
               f"{c['no_truth']}, predictions without truth: {c['extra']}")
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))
