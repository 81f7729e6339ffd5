"""A synthetic conveyor: apples (good, damaged) and parcels ride a belt under a fixed camera.

Items enter upstream (image left, belt x < 0) at random edge-to-edge gaps and move downstream at
the belt speed, which may wobble slowly and may follow a profile of steps and ramps
(`speed_profile`); items always move by the integral of the speed, so a speed change moves them
physically right. Items may touch the one before them (`p_touching`) or overhang the top or
bottom image edge (`p_edge_cut`: the camera sees only part of them). Belt coordinates: x in mm along the belt from the
camera's left image edge (downstream positive), y in mm across it. Every frame comes with the
ground truth of each visible item (uid, class, belt position, pixel box), and
`crossing_time(uid, x_mm)` says when an item's centre reaches any belt position (e.g. a gate),
so a run can be audited against physics, not against the pipeline's own view.
"""

from __future__ import annotations

import json
import bisect
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from fovea.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("good", "damaged", "box")
# per-pixel labels of `render_with_labels`: fovea.synth.apples.CLASS_NAMES, then "box"
SEG_CLASS_NAMES: tuple[str, ...] = ("background", "good", "bruise", "spot", "cut", "box")


@dataclass
class ConveyorConfig:
    """Geometry, timing and population of the synthetic belt (all lengths in mm, times in s)."""

    width_px: int = 160
    height_px: int = 96
    mm_per_px: float = 2.5
    fps: float = 10.0
    belt_speed_mm_s: float = 400.0
    speed_wobble: float = 0.0          # amplitude of a slow sinusoidal speed change, x belt_speed_mm_s
    wobble_period_s: float = 7.0
    # speed changes (t_s, speed_mm_s, ramp_s): from t_s the speed moves linearly to speed_mm_s over
    # ramp_s seconds (0: a step); times increasing, each change starting after the previous ramp
    speed_profile: tuple[tuple[float, float, float], ...] = ()
    n_objects: int = 100
    gap_mm: tuple[float, float] = (90.0, 240.0)   # edge-to-edge gap, uniform
    p_damaged: float = 0.35
    p_box: float = 0.1
    p_touching: float = 0.0            # chance an item is placed touching the one before it
    p_edge_cut: float = 0.0            # chance an item overhangs the top/bottom image edge (cut by it)
    apple_radius_mm: tuple[float, float] = (30.0, 38.0)
    box_size_mm: tuple[float, float] = (45.0, 65.0)
    appearance: str = "realistic"      # "realistic" (fovea.synth.apples sprites) | "simple"
    noise_sigma: float = 2.0
    lead_in_mm: float = 400.0          # empty belt before the first item (lets a line learn the belt)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.appearance not in ("realistic", "simple"):
            raise ConfigError(f"ConveyorConfig.appearance={self.appearance!r}; use 'realistic' or 'simple'")
        if not 0 <= self.speed_wobble < 0.5:
            raise ConfigError(f"ConveyorConfig.speed_wobble={self.speed_wobble} must be in [0, 0.5)")
        if self.belt_speed_mm_s <= 0 or self.fps <= 0 or self.mm_per_px <= 0:
            raise ConfigError("ConveyorConfig: belt_speed_mm_s, fps and mm_per_px must be > 0")
        if self.gap_mm[0] < 0 or self.gap_mm[1] < self.gap_mm[0]:
            raise ConfigError(f"ConveyorConfig.gap_mm={self.gap_mm} must be (low >= 0, high >= low)")
        if not 0 <= self.p_edge_cut <= 1 or not 0 <= self.p_touching <= 1:
            raise ConfigError(f"ConveyorConfig: p_touching={self.p_touching} and p_edge_cut={self.p_edge_cut} "
                              "are probabilities in [0, 1]")
        self.speed_profile = tuple(tuple(float(x) for x in c) for c in self.speed_profile)
        t_free = -math.inf
        for c in self.speed_profile:
            if len(c) != 3 or c[1] <= 0 or c[2] < 0 or c[0] < t_free:
                raise ConfigError(
                    f"ConveyorConfig.speed_profile entry {c}: use (t_s, speed_mm_s > 0, ramp_s >= 0) with t_s "
                    f"increasing and each change starting after the previous ramp ended (here >= {t_free})")
            t_free = c[0] + c[2]
        v_min = min([self.belt_speed_mm_s] + [c[1] for c in self.speed_profile])
        if self.speed_wobble * self.belt_speed_mm_s >= v_min:
            raise ConfigError(f"ConveyorConfig: speed_wobble={self.speed_wobble} x {self.belt_speed_mm_s} mm/s "
                              f"would stop or reverse the belt at its slowest profile speed {v_min} mm/s; "
                              "lower the wobble or raise the slowest speed")

    @property
    def view_mm(self) -> float:
        """Length of belt seen by the camera along x."""
        return self.width_px * self.mm_per_px


@dataclass
class Item:
    """One physical object: it sits at belt offset `s_mm`, so its centre is at x = B(t) - s_mm."""

    uid: int
    kind: str            # "apple" | "box"
    class_name: str      # one of CLASS_NAMES
    s_mm: float
    y_mm: float
    half_len_mm: float   # half extent along the belt (radius for apples)
    half_wid_mm: float
    touching_prev: bool = False
    edge_cut: bool = False       # overhangs the top or bottom image edge


@dataclass
class ItemTruth:
    """Ground truth of one item in one frame."""

    uid: int
    class_name: str
    x_mm: float
    y_mm: float
    xyxy: tuple[float, float, float, float]
    touching_prev: bool = False


class Conveyor:
    """Deterministic belt scene generator; `render(t)` draws the belt at time t (seconds)."""

    def __init__(self, config: ConveyorConfig | None = None):
        self.config = cfg = config or ConveyorConfig()
        rng = np.random.default_rng(cfg.seed)
        edge_rng = np.random.default_rng([cfg.seed, 4])     # own stream: other draws stay as they were
        belt_w = cfg.height_px * cfg.mm_per_px
        self.items: list[Item] = []
        s = 0.0
        prev_half = 0.0
        for uid in range(cfg.n_objects):
            kind = "box" if rng.random() < cfg.p_box else "apple"
            if kind == "apple":
                r = float(rng.uniform(*cfg.apple_radius_mm))
                half_len = half_wid = r
                cls = "damaged" if rng.random() < cfg.p_damaged else "good"
            else:
                half_len = float(rng.uniform(*cfg.box_size_mm)) / 2
                half_wid = float(rng.uniform(*cfg.box_size_mm)) / 2
                cls = "box"
            touching = bool(uid > 0 and rng.random() < cfg.p_touching)
            gap = -1.5 if touching else float(rng.uniform(*cfg.gap_mm))   # touching: pressed together
            s = (cfg.lead_in_mm + half_len) if uid == 0 else s + prev_half + gap + half_len
            lateral = cfg.height_px * cfg.mm_per_px / 2 - half_wid - 8
            y = float(cfg.height_px * cfg.mm_per_px / 2 + rng.uniform(-1, 1) * max(lateral, 0) * 0.6)
            edge_cut = cfg.p_edge_cut > 0 and edge_rng.random() < cfg.p_edge_cut
            if edge_cut:                         # centre 0.3-0.8 half-widths inside an image edge
                inside = float(edge_rng.uniform(0.3, 0.8)) * half_wid
                y = inside if edge_rng.random() < 0.5 else belt_w - inside
            if touching:
                y = self.items[-1].y_mm          # same track across the belt, so they really touch
                edge_cut = self.items[-1].edge_cut
            self.items.append(Item(uid, kind, cls, s, y, half_len, half_wid, touching, edge_cut))
            prev_half = half_len
        self._profile_knots()
        self._s = np.array([it.s_mm for it in self.items])
        self._half = np.array([it.half_len_mm for it in self.items])
        self._bg = self._background(np.random.default_rng([cfg.seed, 1]))
        self._sprites: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._labels: dict[int, np.ndarray] = {}     # (h, w) uint8 SEG_CLASS_NAMES index per sprite
        nrng = np.random.default_rng([cfg.seed, 3])
        self._noise = []
        for _ in range(16 if cfg.noise_sigma > 0 else 0):
            n = np.round(nrng.normal(0, cfg.noise_sigma, (cfg.height_px, cfg.width_px)))
            n = np.repeat(n[..., None], 3, axis=2)
            self._noise.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))

    # ------------------------------------------------------------------ belt kinematics
    def _profile_knots(self) -> None:
        """Piecewise-linear base speed as segments (t_start, v_start, accel, travel at t_start)."""
        c = self.config
        knots = [(-math.inf, c.belt_speed_mm_s, 0.0, 0.0)]
        ts, vs, bs = 0.0, c.belt_speed_mm_s, 0.0      # the first segment is anchored at t = 0, B = 0
        for t_c, v_c, ramp in c.speed_profile:
            bs += vs * (t_c - ts)
            ts = t_c
            if ramp > 0:
                knots.append((ts, vs, (v_c - vs) / ramp, bs))
                bs += (vs + v_c) / 2 * ramp
                ts = t_c + ramp
            vs = v_c
            knots.append((ts, vs, 0.0, bs))
        self._knots = knots
        self._knot_t = [k[0] for k in knots]

    def _base(self, t: float) -> tuple[float, float]:
        """(travel, speed) of the piecewise-linear base profile at time t."""
        i = max(bisect.bisect_right(self._knot_t, t) - 1, 0)
        t0, v0, acc, b0 = self._knots[i]
        dt = t - (0.0 if i == 0 else t0)
        return b0 + v0 * dt + 0.5 * acc * dt * dt, v0 + acc * dt

    def belt_travel(self, t: float) -> float:
        """B(t): mm of belt that passed the camera since t = 0 (integral of the speed)."""
        c = self.config
        a, T = c.speed_wobble * c.belt_speed_mm_s, c.wobble_period_s
        return self._base(t)[0] + a * T / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / T))

    def speed(self, t: float) -> float:
        """Belt speed (mm/s) at time t: the profile plus the wobble."""
        c = self.config
        return self._base(t)[1] + c.speed_wobble * c.belt_speed_mm_s * math.sin(2 * math.pi * t / c.wobble_period_s)

    def time_at_travel(self, b_mm: float) -> float:
        """Inverse of `belt_travel` (monotonic: the speed stays > 0), Newton steps kept in a bracket."""
        v_lo = min([self.config.belt_speed_mm_s] + [k[1] for k in self._knots]) * (1 - 1e-9)
        v_lo -= self.config.speed_wobble * self.config.belt_speed_mm_s
        v_hi = max([self.config.belt_speed_mm_s] + [k[1] for k in self._knots])
        v_hi += self.config.speed_wobble * self.config.belt_speed_mm_s
        lo, hi = sorted((b_mm / v_lo, b_mm / v_hi))       # B(0) = 0 and v_lo <= B' <= v_hi
        t = b_mm / self.config.belt_speed_mm_s
        t = min(max(t, lo), hi)
        for _ in range(100):
            err = self.belt_travel(t) - b_mm
            if abs(err) < 1e-7:
                break
            if err > 0:
                hi = t
            else:
                lo = t
            t_new = t - err / self.speed(t)
            t = t_new if lo < t_new < hi else (lo + hi) / 2
        return t

    def x_mm(self, uid: int, t: float) -> float:
        """Belt x of item `uid`'s centre at time t."""
        return self.belt_travel(t) - self.items[uid].s_mm

    def crossing_time(self, uid: int, x_mm: float) -> float:
        """Time at which item `uid`'s centre reaches belt position x_mm."""
        return self.time_at_travel(x_mm + self.items[uid].s_mm)

    def duration_s(self, x_end_mm: float | None = None) -> float:
        """Time until the last item's tail passes x_end_mm (default: the right image edge)."""
        x_end = self.config.view_mm if x_end_mm is None else x_end_mm
        last = self.items[-1]
        return self.time_at_travel(x_end + last.s_mm + last.half_len_mm)

    # ------------------------------------------------------------------ rendering
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        if c.appearance == "realistic":
            from fovea.synth.apples import Light, draw_background

            bg, _ = draw_background(rng, c.height_px, c.width_px, light=Light(), kind="belt")
            return bg
        bg = np.full((c.height_px, c.width_px, 3), (58, 60, 62), np.uint8)
        stripes = (8 * np.sin(np.arange(c.height_px) / 2.0)).astype(np.int16)
        return np.clip(bg.astype(np.int16) + stripes[:, None, None], 0, 255).astype(np.uint8)

    def _sprite(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        """(h, w, 3) uint8 RGB and (h, w) bool mask of an item, drawn once and reused every frame."""
        if item.uid in self._sprites:
            return self._sprites[item.uid]
        c = self.config
        rng = np.random.default_rng([c.seed, 2, item.uid])
        mmpp = c.mm_per_px
        if item.kind == "box":
            w = max(3, int(round(2 * item.half_len_mm / mmpp)))
            h = max(3, int(round(2 * item.half_wid_mm / mmpp)))
            rgb = np.zeros((h, w, 3), np.uint8)
            tone = rng.uniform(0.85, 1.1)
            rgb[:] = np.clip(np.array([196, 160, 110]) * tone, 0, 255).astype(np.uint8)
            t = max(1, h // 6)
            rgb[h // 2 - t // 2:h // 2 - t // 2 + t] = (210, 200, 170)   # tape
            rgb[:, :max(1, w // 20)] = rgb[:, :max(1, w // 20)] // 2 + 40  # shaded edge
            mask = np.ones((h, w), bool)
            label = np.full((h, w), SEG_CLASS_NAMES.index("box"), np.uint8)
        else:
            r_px = item.half_len_mm / mmpp
            damaged = item.class_name == "damaged"
            if c.appearance == "realistic":
                from fovea.synth.apples import paint_apple, sample_apple

                spec = sample_apple(rng, damaged=damaged)
                pad = int(math.ceil(r_px * 1.5)) + 2
                canvas = np.zeros((2 * pad + 1, 2 * pad + 1, 3), np.uint8)
                patch = paint_apple(canvas, (pad, pad), r_px, spec, shadow=False)
                full = np.zeros(canvas.shape[:2], bool)
                lh, lw = patch.label.shape
                y0, x0 = max(patch.y0, 0), max(patch.x0, 0)
                full[y0:y0 + lh, x0:x0 + lw] = patch.mask[:full.shape[0] - y0, :full.shape[1] - x0]
                lab = np.zeros(canvas.shape[:2], np.uint8)
                lab[y0:y0 + lh, x0:x0 + lw] = patch.label[:full.shape[0] - y0, :full.shape[1] - x0]
                ys, xs = np.nonzero(full)
                sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
                rgb, mask, label = canvas[sl].copy(), full[sl].copy(), lab[sl].copy()
            else:
                n = 2 * int(math.ceil(r_px)) + 1
                rgb = np.zeros((n, n, 3), np.uint8)
                mask8 = np.zeros((n, n), np.uint8)
                cv2.circle(mask8, (n // 2, n // 2), int(round(r_px)), 1, -1)
                rgb[:] = np.array([185, 30, 35]) * rng.uniform(0.85, 1.05)
                label = mask8.copy()
                if damaged:
                    for _ in range(3):
                        p = rng.uniform(-0.5, 0.5, 2) * r_px + n // 2
                        cv2.circle(rgb, (int(p[0]), int(p[1])), max(1, int(r_px / 4)), (95, 60, 30), -1)
                        cv2.circle(label, (int(p[0]), int(p[1])), max(1, int(r_px / 4)), 3, -1)   # "spot"
                mask = mask8.astype(bool)
                label[~mask] = 0
        self._sprites[item.uid] = (rgb, mask)
        self._labels[item.uid] = label
        return rgb, mask

    def prepare(self) -> None:
        """Draw every sprite now (realistic apples cost milliseconds each), e.g. before a timed run."""
        for it in self.items:
            self._sprite(it)

    def visible(self, t: float) -> list[int]:
        """uids of items whose extent overlaps the camera view at time t."""
        x = self.belt_travel(t) - self._s
        view = self.config.view_mm
        hit = (x + self._half > 0) & (x - self._half < view)
        return [int(i) for i in np.nonzero(hit)[0]]

    def render(self, t: float, label_map: np.ndarray | None = None) -> tuple[np.ndarray, list[ItemTruth]]:
        """The camera image (H, W, 3) uint8 RGB at time t and the truth of every visible item.

        label_map: optional (H, W) integer array, filled in place with each visible item's
        per-pixel `SEG_CLASS_NAMES` labels (see `render_with_labels`)."""
        c = self.config
        img = self._bg.copy()
        H, W = img.shape[:2]
        truths: list[ItemTruth] = []
        for uid in self.visible(t):
            it = self.items[uid]
            rgb, mask = self._sprite(it)
            x = self.x_mm(uid, t)
            h, w = mask.shape
            x0 = int(round(x / c.mm_per_px - w / 2))
            y0 = int(round(it.y_mm / c.mm_per_px - h / 2))
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            m = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            region = img[iy0:iy1, ix0:ix1]
            region[m] = rgb[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0][m]
            if label_map is not None:
                label_map[iy0:iy1, ix0:ix1][m] = self._labels[uid][iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0][m]
            truths.append(ItemTruth(uid, it.class_name, x, it.y_mm, (ix0, iy0, ix1, iy1), it.touching_prev))
        if c.noise_sigma > 0:       # sensor noise: one of 16 fixed fields, cycling with the frame number
            pos, neg = self._noise[int(round(t * c.fps)) % 16]
            img = cv2.subtract(cv2.add(img, pos), neg)
        return img, truths

    def render_with_labels(self, t: float) -> tuple[np.ndarray, np.ndarray, list[ItemTruth]]:
        """Image (H, W, 3) uint8, per-pixel labels (H, W) int64 (`SEG_CLASS_NAMES`: background,
        apple skin "good", the apple damage kinds, "box") and the item truths at time t."""
        c = self.config
        labels = np.zeros((c.height_px, c.width_px), np.int64)
        img, truths = self.render(t, label_map=labels)
        return img, labels, truths


def write_conveyor_video(out_dir: str | Path, config: ConveyorConfig) -> tuple[Path, Path]:
    """Render a whole run to `out_dir/conveyor.mp4` plus `truth.jsonl` (one line per frame)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conv = Conveyor(config)
    n_frames = int(math.ceil(conv.duration_s() * config.fps)) + 1
    video = out / "conveyor.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), config.fps,
                             (config.width_px, config.height_px))
    if not writer.isOpened():
        raise ConfigError(f"cannot open a video writer for {video}; check OpenCV's codecs (mp4v)")
    with open(out / "truth.jsonl", "w") as fh:
        fh.write(json.dumps({"config": asdict(config),
                             "items": [asdict(i) for i in conv.items]}) + "\n")
        for k in range(n_frames):
            t = k / config.fps
            img, truths = conv.render(t)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            fh.write(json.dumps({"frame": k, "t": t, "items": [asdict(x) for x in truths]}) + "\n")
    writer.release()
    return video, out / "truth.jsonl"
