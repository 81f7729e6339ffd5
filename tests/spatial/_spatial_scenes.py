"""Hand-placed scenes for the spatial tests."""

import numpy as np

from fovea.synth.scenes3d import Scene, SceneObject, camera_rotation, render


def make_scene(objects, pitch_deg=35.0, roll_deg=0.0, height_m=1.5, size=(320, 240), focal_px=262.5, wall_z=None):
    """A hand-placed scene (objects in world metres, camera above the origin looking along +z), rendered."""
    w, h = size
    K = np.array([[focal_px, 0, w / 2], [0, focal_px, h / 2], [0, 0, 1.0]])
    R = camera_rotation(np.deg2rad(pitch_deg), np.deg2rad(roll_deg))
    meta = {"texture_cell_m": 0.01}
    if wall_z is not None:
        meta["wall_z"] = wall_z
    sc = Scene("room", K, R, np.array([0.0, height_m, 0.0]), list(objects), seed=0, meta=meta)
    return render(sc, size, noise_sigma=0.0, stereo=False)


def box(oid, name, centre_xz, size, yaw_deg=0.0, base_y=0.0, support_id=0):
    w, hgt, d = size
    return SceneObject(oid, name, "box", np.array([centre_xz[0], base_y + hgt / 2, centre_xz[1]]),
                       np.array(size, float), np.deg2rad(yaw_deg), (0.7, 0.3, 0.2), support_id)
