"""Two-tower model: open_clip checkpoint round trip (a random-initialised open_clip model of the same
configuration answers as fovea's model after `load_open_clip`), normalised embeddings, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from fovea.errors import CheckpointError, ConfigError
from fovea.models.vl.openclip_keys import load_open_clip

open_clip = pytest.importorskip("open_clip")  # dev dependency; the skip is counted by pytest

TINY = {"embed_dim": 32,
        "vision_cfg": {"timm_model_name": "efficientnet_lite0", "timm_model_pretrained": False, "timm_pool": "avg",
                       "timm_proj": "linear", "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("oc_cfg")
    (d / "fovea-tiny-lite0.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d)
    torch.manual_seed(0)
    model = open_clip.create_model("fovea-tiny-lite0", pretrained=None).eval()
    with torch.no_grad():  # non-trivial statistics so batch-norm mapping errors show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_load_open_clip_round_trips_a_random_open_clip_model(open_clip_model, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "oc.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip_model.state_dict().items()}, str(path))
    ours = load_open_clip(path, "efficientnet_lite0", image_size=64, heads=2)
    x = torch.randn(2, 3, 64, 64)
    texts = ["a photo of a bruised apple", "a clean brick surface"]
    tok = open_clip.get_tokenizer("fovea-tiny-lite0")(texts)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image_tensor(x), open_clip_model.encode_image(x, normalize=True),
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours.encode_text(texts), open_clip_model.encode_text(tok, normalize=True),
                                   atol=1e-5, rtol=1e-4)
        assert torch.allclose(ours.logit.log_scale, open_clip_model.logit_scale)
        norms = ours.encode_text(texts).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(2))


def test_load_open_clip_with_the_wrong_image_backbone_names_the_keys(open_clip_model, tmp_path):
    path = tmp_path / "oc.pt"
    torch.save(open_clip_model.state_dict(), path)
    with pytest.raises(CheckpointError, match="timm_model_name"):
        load_open_clip(path, "resnet18", image_size=64, heads=2)


def test_empty_prompts_are_refused(open_clip_model, tmp_path):
    path = tmp_path / "oc.pt"
    torch.save(open_clip_model.state_dict(), path)
    ours = load_open_clip(path, "efficientnet_lite0", image_size=64, heads=2)
    with pytest.raises(ConfigError, match="non-empty"):
        ours.encode_text(["a good apple", "  "])
    with pytest.raises(ConfigError, match="uint8"):
        ours.encode_image(torch.zeros(1, 3, 8, 8))
