"""Tabletop and room scenes with exact 3D truth: boxes, cylinders, apples and bricks on a support surface.

A numpy ray caster (one ray per pixel, or `supersample`^2 for the colour image) renders, for a
pinhole camera with random height, pitch and roll: RGB (H, W, 3) uint8, metric depth (H, W) float32
(the camera z of the first hit, metres), instance labels (H, W) int32 (0 = support surface / wall,
k = object k), and the right image of an ideal rectified stereo pair (same K and orientation, the
centre moved `baseline_m` along the camera's x axis). Every surface carries a world-fixed hashed
texture, so stereo matching has something to match.

World frame: x right, y UP, z forward along the floor, support surface at y = 0, camera above the
origin. It is left-handed (OpenCV's camera frame with y flipped), like `fovea.spatial`'s canonical
frame, which `Scene.world_to_canonical` reaches by one rotation about y (the camera's x axis
projected on the floor becomes x; nonzero when the camera is both pitched and rolled). The camera
looks along +z, pitched down and rolled; `Scene.cam_to_world` (3, 3) maps OpenCV camera coordinates
(x right, y down, z forward) to world ones: p_world = R @ p_cam + camera_centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fovea.errors import ConfigError

PALETTE = {"red": (0.80, 0.15, 0.12), "blue": (0.15, 0.30, 0.80), "green": (0.20, 0.65, 0.25),
           "yellow": (0.90, 0.80, 0.15), "white": (0.85, 0.85, 0.82), "orange": (0.95, 0.50, 0.10),
           "purple": (0.50, 0.25, 0.65), "grey": (0.50, 0.50, 0.52)}


@dataclass
class SceneObject:
    """One solid. shape: "box" | "cylinder" | "sphere"; centre (3,) world metres (solid centre);
    size (3,) = full extents along the object's own axes (box: width, height, depth; cylinder:
    2r, h, 2r; sphere: 2r, 2r, 2r); yaw_rad about world y; support_id: 0 = the support surface,
    k = resting on object k."""

    id: int
    name: str
    shape: str
    centre: np.ndarray
    size: np.ndarray
    yaw_rad: float = 0.0
    color: tuple = (0.5, 0.5, 0.5)
    support_id: int = 0

    @property
    def bottom(self) -> float:
        return float(self.centre[1] - self.size[1] / 2)

    @property
    def top(self) -> float:
        return float(self.centre[1] + self.size[1] / 2)

    def yaw_matrix(self) -> np.ndarray:
        """(3, 3) local -> world rotation about y."""
        c, s = np.cos(self.yaw_rad), np.sin(self.yaw_rad)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    def footprint_radius(self) -> float:
        return float(np.hypot(self.size[0], self.size[2]) / 2)


@dataclass
class Scene:
    """A rendered scene and its truth. K (3, 3); cam_to_world (3, 3); camera_centre (3,) world m;
    rgb (H, W, 3) uint8; depth (H, W) float32 m (inf = no hit); labels (H, W) int32;
    right_rgb (H, W, 3) uint8 or None; names: label -> object name."""

    kind: str
    K: np.ndarray
    cam_to_world: np.ndarray
    camera_centre: np.ndarray
    objects: list[SceneObject]
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None
    labels: np.ndarray | None = None
    right_rgb: np.ndarray | None = None
    baseline_m: float = 0.12
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def names(self) -> dict[int, str]:
        return {o.id: o.name for o in self.objects}

    @property
    def image_size(self) -> tuple[int, int]:
        return int(round(self.K[0, 2] * 2)), int(round(self.K[1, 2] * 2))

    @property
    def up_camera(self) -> np.ndarray:
        """World up (0, 1, 0) in camera coordinates (the gravity direction is its negative)."""
        return self.cam_to_world.T @ np.array([0.0, 1.0, 0.0])

    def canonical_axes(self) -> np.ndarray:
        """(3, 3) rows = canonical x, y, z in world coordinates: x = the camera's x axis projected on
        the floor, y = up, z = the horizontal direction perpendicular to x on the camera's viewing side."""
        x = self.cam_to_world[:, 0].copy()
        x[1] = 0.0
        x /= np.linalg.norm(x)
        z = np.array([-x[2], 0.0, x[0]])
        if z @ self.cam_to_world[:, 2] < 0:
            z = -z
        return np.stack([x, [0.0, 1.0, 0.0], z])

    def world_to_canonical(self, p_world: np.ndarray) -> np.ndarray:
        """(N, 3) world -> canonical frame (origin: the camera's foot point on the support surface)."""
        foot = np.array([self.camera_centre[0], 0.0, self.camera_centre[2]])
        return (np.asarray(p_world, np.float64) - foot) @ self.canonical_axes().T

    def world_to_camera(self, p_world: np.ndarray) -> np.ndarray:
        """(N, 3) world -> (N, 3) OpenCV camera coordinates."""
        return (np.asarray(p_world, np.float64) - self.camera_centre) @ self.cam_to_world


def camera_rotation(pitch_rad: float, roll_rad: float, yaw_rad: float = 0.0) -> np.ndarray:
    """(3, 3) OpenCV camera -> world (x right, y up, z forward) for a camera pitched DOWN by pitch_rad,
    rolled about its optical axis by roll_rad (positive: image content turns clockwise) and yawed."""
    f = np.array([0.0, -np.sin(pitch_rad), np.cos(pitch_rad)])
    r = np.array([1.0, 0.0, 0.0])
    dn = np.array([0.0, -np.cos(pitch_rad), -np.sin(pitch_rad)])
    c, s = np.cos(roll_rad), np.sin(roll_rad)
    r, dn = c * r + s * dn, -s * r + c * dn
    cy, sy = np.cos(yaw_rad), np.sin(yaw_rad)
    Ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return Ry @ np.stack([r, dn, f], 1)


# ---- ray casting ---------------------------------------------------------------------------------
def pixel_rays(K: np.ndarray, size_wh: tuple[int, int], supersample: int = 1) -> np.ndarray:
    """(H*s, W*s, 3) camera-frame ray directions with z = 1 (so the hit parameter t IS the depth)."""
    w, h = size_wh
    s = supersample
    u = (np.arange(w * s) + 0.5) / s - 0.5
    v = (np.arange(h * s) + 0.5) / s - 0.5
    uu, vv = np.meshgrid(u, v)
    x = (uu - K[0, 2]) / K[0, 0]
    y = (vv - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], -1)


def _hit_box(o, d, obj: SceneObject):
    """Slab test in the box's local frame. o (3,), d (N, 3) world -> t (N,) (inf = miss), normal (N, 3)."""
    R = obj.yaw_matrix()
    ol = R.T @ (o - obj.centre)
    dl = d @ R
    half = obj.size / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - ol) / dl
        t2 = (half - ol) / dl
    tlo = np.minimum(t1, t2)
    thi = np.maximum(t1, t2)
    tlo = np.where(np.isnan(tlo), -np.inf, tlo)
    thi = np.where(np.isnan(thi), np.inf, thi)
    t_in = tlo.max(1)
    t_out = thi.min(1)
    hit = (t_out >= t_in) & (t_in > 1e-6)
    axis = tlo.argmax(1)
    n_local = np.zeros_like(dl)
    rows = np.arange(len(dl))
    n_local[rows, axis] = -np.sign(dl[rows, axis])
    return np.where(hit, t_in, np.inf), n_local @ R.T


def _hit_cylinder(o, d, obj: SceneObject):
    """Vertical cylinder (side + top and bottom caps)."""
    r, hh = obj.size[0] / 2, obj.size[1] / 2
    oc = o - obj.centre
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (oc[0] * d[:, 0] + oc[2] * d[:, 2])
    c = oc[0] ** 2 + oc[2] ** 2 - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / (2 * a)
    ys = oc[1] + ts * d[:, 1]
    side = (disc >= 0) & (ts > 1e-6) & (np.abs(ys) <= hh)
    t = np.where(side, ts, np.inf)
    n = np.zeros_like(d)
    p = oc + ts[:, None] * d
    n[:, 0], n[:, 2] = p[:, 0] / r, p[:, 2] / r
    for sign in (1.0, -1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (sign * hh - oc[1]) / d[:, 1]
        pc = oc + tc[:, None] * d
        cap = (tc > 1e-6) & (pc[:, 0] ** 2 + pc[:, 2] ** 2 <= r * r) & (tc < t)
        t = np.where(cap, tc, t)
        n[cap] = (0.0, sign, 0.0)
    return t, n


def _hit_sphere(o, d, obj: SceneObject):
    r = obj.size[0] / 2
    oc = o - obj.centre
    a = (d * d).sum(1)
    b = 2 * d @ oc
    c = oc @ oc - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    hit = (disc >= 0) & (t > 1e-6)
    t = np.where(hit, t, np.inf)
    n = (oc + np.where(hit, t, 0)[:, None] * d) / r
    return t, n


_HIT = {"box": _hit_box, "cylinder": _hit_cylinder, "sphere": _hit_sphere}


def _texture(p: np.ndarray, cell_m: float, seed: int) -> np.ndarray:
    """(N,) in [0, 1): a world-fixed hashed value per cell_m cube (plus a finer half-amplitude layer)."""
    out = np.zeros(len(p))
    for scale, amp in ((1.0, 0.65), (0.5, 0.35)):
        ijk = np.floor(p / (cell_m * scale)).astype(np.int64)
        hsh = (ijk[:, 0] * 73856093) ^ (ijk[:, 1] * 19349663) ^ (ijk[:, 2] * 83492791) ^ (seed * 2654435761)
        hsh = (hsh ^ (hsh >> 13)) * 1274126177
        out += amp * ((hsh >> 8) & 0xFFFF) / 65536.0
    return out


def _bounding_corners(obj: SceneObject) -> np.ndarray:
    """(8, 3) world corners of a box that contains the solid (any yaw)."""
    r = obj.footprint_radius()
    hh = obj.size[1] / 2
    sx, sy, sz = np.meshgrid([-r, r], [-hh, hh], [-r, r], indexing="ij")
    return obj.centre + np.stack([sx.ravel(), sy.ravel(), sz.ravel()], 1)


def _window(scene: Scene, obj: SceneObject, centre: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Row and column slices of the ray grid that can see `obj` (the whole grid when it is behind)."""
    pc = (_bounding_corners(obj) - centre) @ scene.cam_to_world
    if np.any(pc[:, 2] < 1e-3):
        return slice(None), slice(None)
    x, y = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    c0, c1 = np.searchsorted(xs, [x.min(), x.max()])
    r0, r1 = np.searchsorted(ys, [y.min(), y.max()])
    return slice(max(r0 - 1, 0), r1 + 1), slice(max(c0 - 1, 0), c1 + 1)


def cast(scene: Scene, rays_cam: np.ndarray, centre: np.ndarray, cell_m: float) -> tuple[np.ndarray, ...]:
    """Ray-cast an (H, W, 3) grid of camera rays (`pixel_rays`) from a world `centre`:
    (depth (H, W), labels (H, W) int32, rgb float (H, W, 3)). Objects are tested only inside the
    window of the grid their bounding box projects to."""
    hh, ww = rays_cam.shape[:2]
    d = rays_cam @ scene.cam_to_world.T
    o = np.asarray(centre, np.float64)
    t = np.full((hh, ww), np.inf)
    lab = np.zeros((hh, ww), np.int32)
    normal = np.zeros((hh, ww, 3))
    normal[..., 1] = 1.0
    color = np.empty((hh, ww, 3))
    color[:] = scene.meta.get("floor_color", (0.55, 0.45, 0.35))
    with np.errstate(divide="ignore"):
        tf = np.where(d[..., 1] < 0, -o[1] / d[..., 1], np.inf)
    t = np.minimum(t, tf)
    wall_z = scene.meta.get("wall_z")
    if wall_z is not None:
        with np.errstate(divide="ignore"):
            tw = np.where(d[..., 2] > 0, (wall_z - o[2]) / d[..., 2], np.inf)
        w = tw < t
        t[w] = tw[w]
        normal[w] = (0.0, 0.0, -1.0)
        color[w] = scene.meta.get("wall_color", (0.75, 0.75, 0.70))
    xs, ys = rays_cam[0, :, 0], rays_cam[:, 0, 1]
    for obj in scene.objects:
        win = _window(scene, obj, o, xs, ys)
        dw = d[win]
        if dw.size == 0:
            continue
        to, no = _HIT[obj.shape](o, dw.reshape(-1, 3), obj)
        to, no = to.reshape(dw.shape[:2]), no.reshape(dw.shape)
        tv, lv, nv, cv = t[win], lab[win], normal[win], color[win]  # views into the full arrays
        w = to < tv
        tv[w], lv[w], nv[w], cv[w] = to[w], obj.id, no[w], obj.color
    hit = np.isfinite(t)
    p = o + np.where(hit, t, 0)[..., None] * d
    light = np.array(scene.meta.get("light", (0.3, 0.8, -0.5)))
    light = light / np.linalg.norm(light)
    shade = 0.45 + 0.55 * np.clip(normal @ light, 0, 1)
    tex = 0.7 + 0.6 * _texture(p.reshape(-1, 3), cell_m, scene.seed).reshape(hh, ww)
    rgb = np.where(hit[..., None], color * (shade * tex)[..., None], 0.0)
    return t, lab, rgb


def render(scene: Scene, size_wh: tuple[int, int], supersample: int = 1, noise_sigma: float = 2.0,
           stereo: bool = True, rng: np.random.Generator | None = None) -> Scene:
    """Fill scene.rgb, depth, labels (and right_rgb when stereo) in place; returns the scene."""
    w, h = size_wh
    rng = rng or np.random.default_rng(scene.seed)
    cell = scene.meta.get("texture_cell_m", 0.01)
    depth, lab, rgb = cast(scene, pixel_rays(scene.K, size_wh, 1), scene.camera_centre, cell)
    scene.depth = depth.astype(np.float32)
    scene.labels = lab

    s = supersample

    def image(centre, reuse=None):
        if s == 1 and reuse is not None:
            col = reuse
        else:
            col = cast(scene, pixel_rays(scene.K, size_wh, s), centre, cell)[2]
        col = col.reshape(h, s, w, s, 3).mean((1, 3))
        img = col * 255 + rng.normal(0, noise_sigma, (h, w, 3))
        return np.clip(np.round(img), 0, 255).astype(np.uint8)

    scene.rgb = image(scene.camera_centre, rgb)
    if stereo:
        right_centre = scene.camera_centre + scene.baseline_m * scene.cam_to_world[:, 0]
        scene.right_rgb = image(right_centre)
    return scene


# ---- random scenes -------------------------------------------------------------------------------
KINDS = {
    # camera height (m), pitch (deg), roll (deg), object count, texture cell (m), wall distance (m)
    "room": dict(height=(1.2, 1.8), pitch=(25, 45), roll=(-8, 8), count=(3, 6), cell=0.012, wall=(4.5, 6.0)),
    "tabletop": dict(height=(0.35, 0.6), pitch=(35, 55), roll=(-8, 8), count=(3, 6), cell=0.004, wall=None),
}


def _random_object(kind: str, oid: int, rng: np.random.Generator) -> SceneObject:
    """A random solid (size and name) standing at the origin; position comes later."""
    color_name = rng.choice(list(PALETTE))
    col = PALETTE[color_name]
    u = rng.uniform
    if kind == "room":
        pick = rng.choice(["box", "box", "cylinder", "brick"])
        if pick == "box":
            return SceneObject(oid, f"{color_name} box", "box", np.zeros(3), np.array([u(.2, .7), u(.15, .8), u(.2, .7)]),
                               u(-np.pi, np.pi), col)
        if pick == "cylinder":
            r = u(.08, .25)
            return SceneObject(oid, f"{color_name} barrel", "cylinder", np.zeros(3), np.array([2 * r, u(.25, 1.0), 2 * r]),
                               0.0, col)
        return SceneObject(oid, "brick", "box", np.zeros(3), np.array([.215, .065, .1025]), u(-np.pi, np.pi),
                           (0.70, 0.30, 0.20))
    pick = rng.choice(["apple", "apple", "box", "cylinder", "brick"])
    if pick == "apple":
        r = u(.035, .045)
        green = rng.random() < 0.3
        return SceneObject(oid, "green apple" if green else "apple", "sphere", np.zeros(3), np.full(3, 2 * r), 0.0,
                           (0.45, 0.75, 0.2) if green else (0.78, 0.10, 0.10))
    if pick == "box":
        return SceneObject(oid, f"{color_name} box", "box", np.zeros(3), np.array([u(.06, .2), u(.04, .18), u(.06, .2)]),
                           u(-np.pi, np.pi), col)
    if pick == "cylinder":
        r = u(.03, .05)
        return SceneObject(oid, f"{color_name} cup", "cylinder", np.zeros(3), np.array([2 * r, u(.07, .15), 2 * r]), 0.0, col)
    return SceneObject(oid, "toy brick", "box", np.zeros(3), np.array([.064, .0192, .032]), u(-np.pi, np.pi),
                       (0.85, 0.15, 0.10))


def _ground_point(K, R, C, uv, size_wh) -> np.ndarray | None:
    """Where the ray through pixel uv meets the floor (y = 0), or None."""
    d = R @ np.array([(uv[0] - K[0, 2]) / K[0, 0], (uv[1] - K[1, 2]) / K[1, 1], 1.0])
    if d[1] >= -1e-3:
        return None
    return C + (-C[1] / d[1]) * d


def random_scene(seed: int, kind: str = "room", size_wh: tuple[int, int] = (640, 480), focal_px: float = 525.0,
                 stack_prob: float = 0.35, baseline_m: float | None = None, render_now: bool = True,
                 supersample: int = 1, noise_sigma: float = 2.0) -> Scene:
    """A random `kind` ("room" | "tabletop") scene, rendered (RGB, depth, labels, right image); deterministic."""
    if kind not in KINDS:
        raise ConfigError(f"scene kind {kind!r} is unknown. Fix: use one of {sorted(KINDS)}.")
    cfg = KINDS[kind]
    rng = np.random.default_rng(seed)
    w, h = size_wh
    K = np.array([[focal_px, 0, w / 2], [0, focal_px, h / 2], [0, 0, 1.0]])
    pitch = np.deg2rad(rng.uniform(*cfg["pitch"]))
    roll = np.deg2rad(rng.uniform(*cfg["roll"]))
    R = camera_rotation(pitch, roll)
    C = np.array([0.0, rng.uniform(*cfg["height"]), 0.0])
    meta = {"texture_cell_m": cfg["cell"], "pitch_deg": float(np.rad2deg(pitch)), "roll_deg": float(np.rad2deg(roll)),
            "floor_color": (0.55, 0.45, 0.35) if kind == "room" else (0.62, 0.48, 0.30)}
    if cfg["wall"] is not None:
        meta["wall_z"] = float(rng.uniform(*cfg["wall"]))
    if baseline_m is None:
        baseline_m = 0.12 if kind == "room" else 0.06
    scene = Scene(kind, K, R, C, [], baseline_m=baseline_m, seed=seed, meta=meta)
    n = int(rng.integers(cfg["count"][0], cfg["count"][1] + 1))
    placed: list[SceneObject] = []
    for tries in range(200):
        if len(placed) >= n:
            break
        obj = _random_object(kind, len(placed) + 1, rng)
        g = _ground_point(K, R, C, (rng.uniform(0.12, 0.88) * w, rng.uniform(0.35, 0.92) * h), size_wh)
        if g is None or (meta.get("wall_z") and g[2] > meta["wall_z"] - 0.6):
            continue
        rad = obj.footprint_radius()
        gap = 0.05 if kind == "room" else 0.02
        if any(np.hypot(*(g - q.centre)[[0, 2]]) < rad + q.footprint_radius() + gap for q in placed if q.support_id == 0):
            continue
        obj.centre = np.array([g[0], obj.size[1] / 2, g[2]])
        placed.append(obj)
    scene.objects = placed
    _stack(scene, rng, stack_prob)
    if render_now:
        render(scene, size_wh, supersample=supersample, noise_sigma=noise_sigma, rng=rng)
    return scene


def _stack(scene: Scene, rng: np.random.Generator, prob: float) -> None:
    """With probability `prob`, put one new small object on top of a box that is big enough to hold it."""
    if rng.random() >= prob:
        return
    bases = [o for o in scene.objects if o.shape == "box" and min(o.size[0], o.size[2]) > 0.08
             and o.top < scene.camera_centre[1] - 0.15]
    if not bases:
        return
    base = bases[int(rng.integers(len(bases)))]
    for _ in range(20):
        obj = _random_object(scene.kind, len(scene.objects) + 1, rng)
        if obj.footprint_radius() * 2 < 0.8 * min(base.size[0], base.size[2]):
            break
    else:
        return
    obj.centre = np.array([base.centre[0], base.top + obj.size[1] / 2, base.centre[2]])
    obj.support_id = base.id
    scene.objects.append(obj)
