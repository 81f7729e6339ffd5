"""Parameter counts and MACs of fovea's video models at their reference inputs equal the figures
re-measured on MMAction2 v1.2.0 / PyTorchVideo (shared/notes/video_light_backbones.md, sec. 3) and,
scaled to the libraries' 256^2 test crop, the published ones (sec. 2.1) within 1 %.
Counted on the meta device (shapes only), so full-size models cost nothing to count."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fovea.models.video as V

# name: (frames, crop, params M, GMACs) from the notes' sec. 3 (MMAction2 configs, 400 classes; C3D 101)
REFERENCE = {
    "c3d": (16, 112, 78.41, 38.55),
    "i3d_r50": (32, 224, 28.04, 33.13),
    "i3d_r50_nl": (32, 224, 35.40, 44.34),
    "r2plus1d_r34": (8, 224, 63.76, 40.56),
    "tsn_r50": (8, 224, 24.33, 32.70),
    "tsm_r50": (8, 224, 24.33, 32.70),
    "tsm_r50_nl": (8, 224, 31.68, 61.10),
    "slowfast_r50": (32, 224, 34.48, 27.64),
    "timesformer_divst": (8, 224, 121.57, 195.83),
    # PyTorchVideo hub configs (notes sec. 10): i3d_r50, r2plus1d_r50, slowfast_r50 (8x8)
    "i3d_r50_8x8": (8, 224, 28.04, 28.41),
    "r2plus1d_r50": (16, 224, 28.11, 57.53),
    "slowfast_r50_8x8": (32, 224, 34.57, 50.31),
}
# MMAction2 README/metafile "FLOPs" (MACs per view at the 256^2 test crop)
PUBLISHED_256 = {"i3d_r50": (32, 43.5), "slowfast_r50": (32, 36.3), "r2plus1d_r34": (8, 53.1)}


def _count(name: str, frames: int, crop: int) -> tuple[float, float]:
    with torch.device("meta"):
        model = V.create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, frames, crop, crop))
    return params / 1e6, counter.get_total_flops() / 2e9


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_params_and_macs_match_the_reference(name):
    frames, crop, ref_params, ref_gmacs = REFERENCE[name]
    params, gmacs = _count(name, frames, crop)
    assert round(params, 2) == ref_params
    assert round(gmacs, 2) == ref_gmacs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_256))
def test_macs_at_256_crop_match_the_published_figure(name):
    frames, published = PUBLISHED_256[name]
    _, gmacs = _count(name, frames, 256)
    assert abs(gmacs - published) / published < 0.01


def test_registry_names_every_family():
    names = set(V.list_models())
    assert set(REFERENCE) <= names
    assert {"i3d_lite0", "tsm_lite0", "tsn_lite0"} <= names
    with pytest.raises(Exception, match="unknown video model"):
        V.create_model("c4d")
