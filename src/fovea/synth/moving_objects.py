"""Short clips of one coloured object moving across a plain belt, captioned from exact ground truth
("a red apple moves right"), for text-to-video diffusion at a size a CPU can train on.

The caption is built from the clip's own parameters (colour x object x direction), from a small fixed
vocabulary, always 5 words: "a <colour> <object> moves <direction>". Objects are an apple (a disk) and a brick
(a square), drawn with 4 x 4 supersampled coverage so sub-pixel positions render smoothly. The object moves
`speed_px` pixels per frame in a straight line and stays fully inside the frame. `read_clip` is the inverse
measurement used to check generated clips against their prompt: foreground by distance from the belt colour,
centroid track, direction from the centroid displacement, colour as the nearest palette entry.
Deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.errors import ConfigError, DataError

__all__ = ["BELT_RGB", "COLOURS", "DIRECTIONS", "OBJECTS", "VOCAB", "ClipReadout", "ClipSpec", "MovingClip",
           "caption_tokens", "make_clip", "parse_caption", "random_spec", "read_clip", "render_clip",
           "sample_clips", "tokenize"]

BELT_RGB = (96, 96, 96)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 35), "green": (40, 175, 60), "yellow": (230, 205, 35), "blue": (45, 85, 220),
}
OBJECTS = ("apple", "brick")
DIRECTIONS: dict[str, tuple[int, int]] = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
# token 0 is padding / the empty prompt of classifier-free guidance
VOCAB: tuple[str, ...] = ("<pad>", "a", "moves", *COLOURS, *OBJECTS, *DIRECTIONS)
CAPTION_LEN = 5
OBJECT_TOKEN_SLOTS = (1, 2)  # caption positions of the colour and object words (the "object" tokens)


@dataclass(frozen=True)
class ClipSpec:
    """One clip's ground truth: colour, object, direction; start centre (x, y) in pixels; speed in px/frame."""

    colour: str
    object: str
    direction: str
    start_xy: tuple[float, float]
    speed_px: float = 2.0

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.object} moves {self.direction}"


@dataclass
class MovingClip:
    """frames (T, H, W, 3) uint8 RGB; centres (T, 2) float (x, y) px; tokens (5,) int64 ids into VOCAB."""

    spec: ClipSpec
    frames: np.ndarray
    centres: np.ndarray
    tokens: np.ndarray

    @property
    def caption(self) -> str:
        return self.spec.caption


def object_radius_px(size: int) -> float:
    """Half-size of the object: 1/8 of the frame (4 px at 32 x 32)."""
    return size / 8.0


def tokenize(caption: str) -> np.ndarray:
    """"a red apple moves right" -> (5,) int64 token ids; unknown words raise ConfigError naming them."""
    words = caption.lower().split()
    unknown = [w for w in words if w not in VOCAB]
    if unknown or len(words) != CAPTION_LEN:
        raise ConfigError(f"caption {caption!r} is not 'a <colour> <object> moves <direction>' over the vocabulary "
                          f"{VOCAB[1:]} (unknown: {unknown}). Fix: use e.g. 'a red apple moves right'.")
    return np.array([VOCAB.index(w) for w in words], dtype=np.int64)


def caption_tokens(spec: ClipSpec) -> np.ndarray:
    return tokenize(spec.caption)


def parse_caption(caption: str) -> tuple[str, str, str]:
    """(colour, object, direction) of a valid caption."""
    tokenize(caption)
    w = caption.lower().split()
    return w[1], w[2], w[4]


def _check(spec: ClipSpec) -> None:
    if spec.colour not in COLOURS or spec.object not in OBJECTS or spec.direction not in DIRECTIONS:
        raise ConfigError(f"clip spec {spec} uses a word outside colours {tuple(COLOURS)}, objects {OBJECTS}, "
                          f"directions {tuple(DIRECTIONS)}. Fix: pick from those.")


def _centres(spec: ClipSpec, frames: int) -> np.ndarray:
    dx, dy = DIRECTIONS[spec.direction]
    k = np.arange(frames, dtype=np.float64)[:, None]
    return np.asarray(spec.start_xy, dtype=np.float64)[None, :] + k * spec.speed_px * np.array([[dx, dy]], float)


def _coverage(spec: ClipSpec, centre: np.ndarray, size: int, ss: int = 4) -> np.ndarray:
    """(H, W) float in [0, 1]: fraction of each pixel inside the object, from ss x ss samples per pixel."""
    r = object_radius_px(size)
    offs = (np.arange(ss) + 0.5) / ss
    coords = (np.arange(size)[:, None] + offs[None, :]).reshape(-1)  # sample positions along an axis
    x, y = coords[None, :] - centre[0], coords[:, None] - centre[1]
    inside = (x * x + y * y <= r * r) if spec.object == "apple" else ((np.abs(x) <= r) & (np.abs(y) <= r))
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render_clip(spec: ClipSpec, frames: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, centres (T, 2) float px) of the object moving over the belt."""
    _check(spec)
    centres = _centres(spec, frames)
    r = object_radius_px(size)
    if centres.min() < r - 1e-9 or centres.max() > size - r + 1e-9:
        raise ConfigError(f"clip {spec} leaves the {size} x {size} frame within {frames} frames. "
                          "Fix: start further from the edge it moves towards, or lower speed_px.")
    belt = np.asarray(BELT_RGB, dtype=np.float64)
    colour = np.asarray(COLOURS[spec.colour], dtype=np.float64)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        a = _coverage(spec, centres[t], size)[..., None]
        out[t] = np.clip(np.rint(belt * (1 - a) + colour * a), 0, 255).astype(np.uint8)
    return out, centres


def random_spec(rng: np.random.Generator, frames: int = 8, size: int = 32, speed_px: float = 2.0,
                colour: str | None = None, obj: str | None = None, direction: str | None = None,
                start: str = "anywhere") -> ClipSpec:
    """A spec with the given (or random) words and a random integer start that keeps the whole path in frame.
    start: "anywhere" (both coordinates random) or "edge" (the object enters from the edge it moves away from:
    the coordinate along the motion is the first in-frame position, only the other one is random)."""
    if start not in ("anywhere", "edge"):
        raise ConfigError(f"start {start!r} is not 'anywhere' or 'edge'. Fix: pick one of those.")
    colour = colour or str(rng.choice(list(COLOURS)))
    obj = obj or str(rng.choice(OBJECTS))
    direction = direction or str(rng.choice(list(DIRECTIONS)))
    r = object_radius_px(size)
    travel = speed_px * (frames - 1)
    lo, hi = int(np.ceil(r)), int(np.floor(size - r))
    dx, dy = DIRECTIONS[direction]
    if hi - lo < travel:
        raise ConfigError(f"a {size} px frame cannot hold {frames} frames at {speed_px} px/frame. "
                          "Fix: fewer frames, lower speed_px or a larger size.")

    def axis(d: int) -> int:
        if d > 0:
            return lo if start == "edge" else int(rng.integers(lo, int(np.floor(hi - travel)) + 1))
        if d < 0:
            return hi if start == "edge" else int(rng.integers(int(np.ceil(lo + travel)), hi + 1))
        return int(rng.integers(lo, hi + 1))

    return ClipSpec(colour, obj, direction, (float(axis(dx)), float(axis(dy))), speed_px)


def make_clip(spec: ClipSpec, frames: int = 8, size: int = 32) -> MovingClip:
    video, centres = render_clip(spec, frames, size)
    return MovingClip(spec, video, centres, caption_tokens(spec))


def sample_clips(n: int, seed: int, frames: int = 8, size: int = 32, speed_px: float = 2.0,
                 start: str = "anywhere") -> list[MovingClip]:
    """n clips with uniformly drawn colour, object, direction and start (see random_spec); deterministic by seed."""
    rng = np.random.default_rng(seed)
    return [make_clip(random_spec(rng, frames, size, speed_px, start=start), frames, size) for _ in range(n)]


# ----------------------------------------------------------------------------------- read back

@dataclass(frozen=True)
class ClipReadout:
    """What a clip shows: colour (nearest palette entry, or None without foreground), direction ("still" under
    `min_travel_px`), object ("apple" | "brick": the generator's disk or square at the measured centre that fits the
    foreground best, summed squared error over frames), the centroid
    track (T, 2) (NaN where a frame has no foreground), the foreground fraction per frame."""

    colour: str | None
    direction: str
    object: str | None
    centres: np.ndarray
    foreground: np.ndarray


def _colour_distance(colour: str) -> float:
    return float(np.abs(np.asarray(COLOURS[colour], float) - np.asarray(BELT_RGB, float)).sum())


def _closest_shape(weight: np.ndarray, centres: np.ndarray, frames: np.ndarray, blur_px: float = 0.8) -> str:
    """weight (T, H, W): object coverage estimated from the colour distance; the object whose rendered coverage
    at each frame's centroid, softened by a Gaussian of `blur_px`, has the smaller summed squared error. The
    softening lets a slightly blurred rendering (an autoencoder's round trip) read the same, where a bounding-box
    fill ratio mistook blurred squares for disks."""
    import cv2

    size = weight.shape[-1]
    err = {}
    for obj in OBJECTS:
        spec = ClipSpec("red", obj, "up", (0.0, 0.0))
        err[obj] = sum(float(((np.clip(weight[t], 0, 1.5)
                               - cv2.GaussianBlur(_coverage(spec, centres[t], size), (0, 0), blur_px)) ** 2).sum())
                       for t in frames)
    return min(err, key=err.get)


def read_clip(frames: np.ndarray, min_travel_px: float = 2.0, threshold: float = 60.0) -> ClipReadout:
    """Measure colour, direction and object of a clip (T, H, W, 3) uint8 by a foreground track.

    Foreground: pixels whose summed absolute RGB distance from BELT_RGB exceeds `threshold`; weights = that
    distance, so the centroid is sub-pixel. Direction from the displacement of the centroid between the first and
    last frames with foreground: the dominant axis and its sign, or "still" under `min_travel_px`."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"read_clip wants (T, H, W, 3) uint8 RGB frames, got shape {frames.shape}. "
                        "Fix: pass the decoded clip as uint8 frames.")
    f = frames.astype(np.float64)
    dist = np.abs(f - np.asarray(BELT_RGB, float)).sum(-1)  # (T, H, W)
    fg = dist > threshold
    t_count, h, w = fg.shape
    centres = np.full((t_count, 2), np.nan)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # pixel centres, in the generator's continuous coordinates
    for t in range(t_count):
        if fg[t].any():
            wt = dist[t] * fg[t]
            centres[t] = ((xs * wt).sum() / wt.sum(), (ys * wt).sum() / wt.sum())
    seen = np.flatnonzero(~np.isnan(centres[:, 0]))
    if seen.size == 0:
        return ClipReadout(None, "still", None, centres, fg.mean(axis=(1, 2)))
    mean_rgb = f[fg].mean(axis=0)
    colour = min(COLOURS, key=lambda c: float(np.abs(mean_rgb - np.asarray(COLOURS[c], float)).sum()))
    direction = "still"
    if seen.size >= 2:
        d = centres[seen[-1]] - centres[seen[0]]
        if np.abs(d).max() >= min_travel_px:
            direction = (("right" if d[0] > 0 else "left") if abs(d[0]) >= abs(d[1])
                         else ("down" if d[1] > 0 else "up"))
    obj = _closest_shape(dist / _colour_distance(colour), centres, seen)
    return ClipReadout(colour, direction, obj, centres, fg.mean(axis=(1, 2)))
