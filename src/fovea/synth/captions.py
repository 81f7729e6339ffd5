"""Image-caption pairs from the generators' ground truth, for contrastive vision-language training.

Every caption is derived from what the generator drew, never from a model: apples (good or damaged;
damage kind, size and position measured from the per-pixel labels), bricks (how many are turned,
whether one is rotated 30/45/60 degrees off), textures (clean or with a scratch/stain/patch) and
belt scenes with several apples (how many, how many damaged). Each sample has several phrasings;
training draws one per epoch. Deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fovea.errors import ConfigError
from fovea.synth import apples, bricks, textures

__all__ = ["CAPTION_DOMAINS", "CaptionSample", "apple_caption_sample", "brick_caption_sample",
           "damage_position", "damage_size_word", "make_caption_samples", "scene_caption_sample",
           "texture_caption_sample"]

DAMAGE_WORDS = {"bruise": ("bruise", "bruised"), "spot": ("dark spots", "spotted"), "cut": ("cut", "cut")}
TEXTURE_DEFECT_WORDS = {"scratch": "a scratch", "stain": "a stain", "patch": "a foreign patch"}
BRICK_DEFECT_WORDS = {"rot30": "30", "rot45": "45", "rot60": "60"}
COUNT_WORDS = ("no", "one", "two", "three", "four", "five")


@dataclass
class CaptionSample:
    """image: (H, W, 3) uint8 RGB; captions: >= 2 phrasings; truth: the generator's labels."""

    image: np.ndarray
    captions: list[str]
    truth: dict = field(default_factory=dict)


def damage_size_word(fraction: float) -> str:
    """Damage area as a fraction of the apple's area -> "small" (< 4 %), "large" (> 12 %) or "medium"."""
    return "small" if fraction < 0.04 else "large" if fraction > 0.12 else "medium"


def damage_position(dx: float, dy: float) -> str:
    """Damage centroid offset from the apple's centre in radii (x right, y down) -> words."""
    if np.hypot(dx, dy) < 0.25:
        return "in the centre"
    if abs(dx) >= abs(dy):
        return "on the left side" if dx < 0 else "on the right side"
    return "at the top" if dy < 0 else "at the bottom"


def apple_caption_sample(rng: np.random.Generator, size: int = 96, damaged: bool | None = None) -> CaptionSample:
    """One apple crop; damage kind(s), size and position come from its label map (2 bruise, 3 spot, 4 cut)."""
    img, labels, meta = apples.render_apple(rng, size, damaged=damaged)
    variety = meta["variety"]
    if not meta["damaged"]:
        caps = [f"a photo of a good {variety} apple", "a fresh apple without any damage",
                f"a healthy, unblemished {variety} apple", "a perfect apple with flawless skin"]
        return CaptionSample(img, caps, {"damaged": False, "kinds": [], "variety": variety})
    apple_px = max(int((labels > 0).sum()), 1)
    cx, cy = meta["center"]
    r = meta["radius"]
    found = []
    for kind, cls in apples.DAMAGE_CLASS.items():
        ys, xs = np.nonzero(labels == cls)
        if len(xs):
            found.append((len(xs), kind, (xs.mean() - cx) / r, (ys.mean() - cy) / r))
    found.sort(reverse=True)
    n, kind, dx, dy = found[0]
    noun, adj = DAMAGE_WORDS[kind]
    size_word, where = damage_size_word(n / apple_px), damage_position(dx, dy)
    caps = [f"a photo of a damaged {variety} apple with a {size_word} {noun} {where}",
            f"a {adj} apple", f"an apple with {noun} {where}", f"a damaged apple, {size_word} {noun}"]
    if len(found) > 1:
        caps.append(f"a damaged apple with {noun} and {DAMAGE_WORDS[found[1][1]][0]}")
    return CaptionSample(img, caps, {"damaged": True, "kinds": [f[1] for f in found], "main_kind": kind,
                                     "size": size_word, "position": where, "variety": variety})


def brick_caption_sample(rng: np.random.Generator, size: int = 96, defect: str | None | bool = True) -> CaptionSample:
    """A tray of four bricks; defect=True draws normal or one of rot30/45/60 with equal chance."""
    category = str(rng.choice(bricks.CATEGORIES))
    if defect is True:
        defect = [None, *bricks.DEFECTS][int(rng.integers(0, 4))]
    img, _ = bricks.render_bricks_scene(category, defect, rng, size)
    k = bricks.CATEGORIES.index(category) + 1
    if defect is None:
        caps = [f"four bricks on a tray, {COUNT_WORDS[k]} turned, all correctly placed",
                "bricks in the correct orientation", "a good tray of bricks"]
    else:
        deg = BRICK_DEFECT_WORDS[defect]
        caps = [f"four bricks on a tray, one brick rotated {deg} degrees out of place",
                f"a brick turned {deg} degrees wrong", "a misplaced brick on a tray"]
    return CaptionSample(img, caps, {"category": category, "defect": defect or "good"})


def texture_caption_sample(rng: np.random.Generator, size: int = 96, defect: str | None | bool = True,
                           split: str = "train") -> CaptionSample:
    """A crop of a real texture photograph (brick, grass, gravel), clean or with a synthetic defect."""
    texture = str(rng.choice(textures.TEXTURES))
    if defect is True:
        defect = [None, *textures.DEFECTS][int(rng.integers(0, 4))]
    img, _ = textures.render_texture_sample(texture, defect, rng, size, split=split)
    if defect is None:
        caps = [f"a clean {texture} surface", f"a {texture} texture without defects", f"flawless {texture}"]
    else:
        word = TEXTURE_DEFECT_WORDS[defect]
        caps = [f"a {texture} surface with {word}", f"{word} on {texture}", f"a defective {texture} texture, {word}"]
    return CaptionSample(img, caps, {"texture": texture, "defect": defect or "good"})


def scene_caption_sample(rng: np.random.Generator, size: int = 96) -> CaptionSample:
    """Several apples on a belt or tray: counts of apples and of damaged ones."""
    img, _, meta = apples.render_scene(rng, size, n_apples=(1, 4))
    n = len(meta["apples"])
    bad = sum(a["damaged"] for a in meta["apples"])
    caps = [f"{COUNT_WORDS[n]} apples on a conveyor belt, {COUNT_WORDS[bad]} damaged",
            f"a belt with {COUNT_WORDS[n]} apples", "apples on a conveyor" if bad == 0 else "damaged apples on a belt"]
    return CaptionSample(img, caps, {"n_apples": n, "n_damaged": bad})


CAPTION_DOMAINS: dict[str, Callable[..., CaptionSample]] = {
    "apples": apple_caption_sample, "bricks": brick_caption_sample, "textures": texture_caption_sample,
    "scenes": scene_caption_sample,
}


def make_caption_samples(n_per_domain: dict[str, int], size: int = 96, seed: int = 0) -> list[CaptionSample]:
    """`{"apples": 400, "bricks": 100, ...}` -> samples, each drawn from its own seeded generator."""
    out = []
    for d, (domain, n) in enumerate(n_per_domain.items()):
        if domain not in CAPTION_DOMAINS:
            raise ConfigError(f"caption domain {domain!r} is unknown. Fix: one of {sorted(CAPTION_DOMAINS)}.")
        for i in range(int(n)):
            out.append(CAPTION_DOMAINS[domain](np.random.default_rng([seed, d, i]), size))
    return out
