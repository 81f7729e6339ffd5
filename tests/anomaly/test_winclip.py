"""WinCLIP: prompt ensemble, window masks, harmonic aggregation, class and association scores against
slow loops and closed forms; window embeddings of both towers against independent recomputation
(a whole-grid window of an open_clip ViT equals its own encode_image); zero/few-shot flow on tiny
random towers; the paper's ViT-B-16-plus-240 configuration (random weights) for shapes (slow)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.anomaly.models import build_model
from fovea.anomaly.winclip import (ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES, FoveaTower, OpenClipTower, WinCLIP,
                                   association_scores, class_scores, harmonic_aggregation, prompt_ensemble,
                                   text_prototypes, window_cells, window_incidence)
from fovea.errors import ConfigError, DataError

TINY_TOWER = {"image_backbone": "test_efficientnet", "image_size": 96, "text_tower": "clip", "embed_dim": 16,
              "clip_text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
FEW_PROMPTS = {"normal_states": ("{}",), "anomalous_states": ("damaged {}",), "templates": ("a photo of a {}.",)}


def test_prompt_ensemble_is_every_state_times_every_template():
    normal, anomalous = prompt_ensemble("bottle")
    assert len(TEMPLATES) == len(set(TEMPLATES)) == 21  # anomalib's duplicated template replaced
    assert (len(normal), len(anomalous)) == (7 * 21, 4 * 21)
    assert "a photo of a flawless bottle." in normal and "a photo of the bottle with defect." in anomalous
    assert len(set(normal)) == len(normal) and not set(normal) & set(anomalous)
    assert len(NORMAL_STATES) == 7 and len(ANOMALOUS_STATES) == 4
    with pytest.raises(ConfigError, match="object_name is empty"):
        prompt_ensemble(" ")
    with pytest.raises(ConfigError, match="placeholder"):
        prompt_ensemble("x", templates=("a photo.",))


def test_window_cells_counts_and_slow_loop():
    assert window_cells(15, 15, 2).shape == (196, 4) and window_cells(15, 15, 3).shape == (169, 9)
    cells = window_cells(4, 5, 2)
    ref = [[r * 5 + c, r * 5 + c + 1, (r + 1) * 5 + c, (r + 1) * 5 + c + 1] for r in range(3) for c in range(4)]
    assert cells.tolist() == ref
    with pytest.raises(ConfigError, match="exceeds"):
        window_cells(3, 3, 4)


def test_harmonic_aggregation_constant_and_slow_loop():
    cells = window_cells(4, 4, 2)
    inc = window_incidence(cells, 16)
    assert torch.allclose(harmonic_aggregation(torch.full((2, 9), 0.3), inc), torch.full((2, 16), 0.3))
    g = torch.Generator().manual_seed(0)
    s = torch.rand(2, 9, generator=g) * 0.9 + 0.05
    got = harmonic_aggregation(s, inc)
    for b in range(2):
        for n in range(16):
            covering = [float(s[b, m]) for m in range(9) if n in cells[m].tolist()]
            assert float(got[b, n]) == pytest.approx(len(covering) / sum(1 / v for v in covering), rel=1e-5)


def test_class_scores_association_and_prototypes_closed_forms():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = F.normalize(torch.tensor([[3.0, 4.0]]), dim=-1)  # cos 0.6 normal, 0.8 anomalous
    assert float(class_scores(e, text, 0.07)[0]) == pytest.approx(1 / (1 + np.exp((0.6 - 0.8) / 0.07)), rel=1e-5)
    mem = F.normalize(torch.randn(7, 5), dim=-1)
    emb = F.normalize(torch.randn(2, 3, 5), dim=-1)
    got = association_scores(emb, mem)
    for b in range(2):
        for m in range(3):
            ref = min((1 - float(emb[b, m] @ mem[r])) / 2 for r in range(7))
            assert float(got[b, m]) == pytest.approx(ref, abs=1e-6)
    assert float(association_scores(mem[None, :2], mem).abs().max()) < 1e-6  # a memory item scores 0
    # per-prompt normalisation: a long prompt embedding does not dominate the mean
    p = text_prototypes(torch.tensor([[10.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(p[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    torch.testing.assert_close(p[1], torch.tensor([0.0, 1.0]))


def test_fovea_tower_window_is_projection_of_mean_features():
    from fovea.weights import create_backbone

    torch.manual_seed(0)
    tower = FoveaTower(create_backbone("test_efficientnet", weights="random", num_classes=0).eval(),
                       torch.nn.Linear(create_backbone("test_efficientnet", weights="random",
                                                       num_classes=0).num_features, 8, bias=False))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        tokens, grid = tower.tokens(x)
        image, patches = tower.full(tokens)
        cells = window_cells(*grid, 2)
        win = tower.windows(tokens, cells, window_incidence(cells, grid[0] * grid[1]))
        fmap = tower.trunk.forward_features(x)[0]  # (C, h, w)
        for m, cell_ids in enumerate(cells.tolist()):
            feats = torch.stack([fmap[:, c // grid[1], c % grid[1]] for c in cell_ids]).mean(0)
            torch.testing.assert_close(win[0, m], F.normalize(tower.proj(feats), dim=0), atol=1e-5, rtol=0)
        # the whole image is the trunk's own pooled embedding
        torch.testing.assert_close(image[0], F.normalize(tower.proj(tower.trunk(x)[0]), dim=0), atol=1e-5, rtol=0)
    assert patches.shape == (1, grid[0] * grid[1], 8)


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import open_clip

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    d = tmp_path_factory.mktemp("oc")
    (d / "fovea-tiny-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / "fovea-tiny-vit.json")
    torch.manual_seed(0)
    return open_clip.create_model("fovea-tiny-vit", pretrained=None).eval()


def test_open_clip_whole_grid_window_equals_encode_image(tiny_open_clip):
    tower = OpenClipTower(tiny_open_clip.visual)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens, grid = tower.tokens(x)
        assert grid == (4, 4)
        image, patches = tower.full(tokens)
        ref = F.normalize(tiny_open_clip.encode_image(x), dim=-1)
        torch.testing.assert_close(image, ref, atol=1e-5, rtol=0)
        everything = torch.arange(16)[None]
        whole = tower.windows(tokens, everything, window_incidence(everything, 16))
        torch.testing.assert_close(whole[:, 0], ref, atol=1e-5, rtol=0)
        # a 2x2 window = the class token + those 4 patch tokens through the transformer (manual recomputation)
        cells = window_cells(4, 4, 2)
        win = tower.windows(tokens, cells, window_incidence(cells, 16))
        v = tiny_open_clip.visual
        emb = v.conv1(x).flatten(2).transpose(1, 2) + v.positional_embedding[1:]
        cls = (v.class_embedding + v.positional_embedding[0]).expand(2, 1, -1)
        seq = torch.cat([cls, emb[:, cells[5]]], 1)
        out = v.ln_post(v.transformer(v.ln_pre(seq)))[:, 0] @ v.proj
        torch.testing.assert_close(win[:, 5], F.normalize(out, dim=-1), atol=1e-5, rtol=0)
    assert win.shape == (2, 9, 16) and patches.shape == (2, 16, 16)


def _winclip(**kw) -> WinCLIP:
    torch.manual_seed(0)
    return build_model("winclip", weights="random", tower_config=TINY_TOWER, object_name="tray of bricks",
                       **FEW_PROMPTS, **kw)


def test_zero_shot_flow_and_scores_are_probabilities():
    m = _winclip()
    x = torch.randn(2, 3, 48, 48)
    m.fit([x])
    assert torch.allclose(m.text_embeddings.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        scores, maps = m(x)
        image, _, windows, grid, incs = m.embed(x)
        zs_scores, zs_map = m.zero_shot(image, windows, incs, grid)
    assert grid == (3, 3) and scores.shape == (2,) and maps.shape == (2, 1, 48, 48)
    assert bool(((maps >= 0) & (maps <= 1)).all()) and bool(((scores >= 0) & (scores <= 1)).all())
    # the harmonic mean of image score, scale-2 and scale-3 maps, by hand for one cell
    t = m.text_embeddings
    s2 = harmonic_aggregation(class_scores(windows[0], t), incs[0])[0, 4]
    s3 = harmonic_aggregation(class_scores(windows[1], t), incs[1])[0, 4]
    ref = 3 / (1 / float(class_scores(image, t)[0]) + 1 / float(s2) + 1 / float(s3))
    assert float(zs_map[0, 1, 1]) == pytest.approx(ref, rel=1e-5)
    torch.testing.assert_close(scores, zs_scores)


def test_few_shot_memory_scores_its_own_image_as_normal():
    m = _winclip(k_shot=1)
    x = torch.randn(3, 3, 48, 48)
    m.fit([x[:1], x[1:]])
    assert m.memory_patches.shape == (9, 16) and m.memory_windows_0.shape == (4, 16)
    assert m.memory_windows_1.shape == (1, 16)
    with torch.no_grad():
        scores, maps = m(x[:1])
        image, patches, windows, grid, incs = m.embed(x[:1])
        zs_scores, zs_map = m.zero_shot(image, windows, incs, grid)
        fs = m.few_shot(patches, windows, incs, grid)
    assert float(fs.abs().max()) < 1e-5  # the memorised image is at distance 0 everywhere
    torch.testing.assert_close(scores, zs_scores / 2, atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="k_shot=5"):
        _winclip(k_shot=5).fit([x])


def test_config_errors():
    with pytest.raises(ConfigError, match="tower="):
        build_model("winclip", tower="clip")
    with pytest.raises(ConfigError, match="k_shot"):
        build_model("winclip", k_shot=-1)


@pytest.mark.slow
def test_vit_b16_plus_240_random_weights_shapes_and_flow():
    m = build_model("winclip", tower="open_clip", weights="random", object_name="bottle", **FEW_PROMPTS, k_shot=1)
    assert m.tower.image_size == 240
    x = torch.randn(1, 3, 256, 256)
    m.fit([x])
    with torch.no_grad():
        _, patches, windows, grid, _ = m.embed(x)
        scores, maps = m(x)
    assert grid == (15, 15) and patches.shape == (1, 225, 640)
    assert [w.shape[1] for w in windows] == [196, 169]
    assert scores.shape == (1,) and maps.shape == (1, 1, 256, 256)
    assert float(scores[0]) == pytest.approx(float(m.zero_shot(*_zs_inputs(m, x))[0][0]) / 2, abs=1e-5)


def _zs_inputs(m, x):
    with torch.no_grad():
        image, _, windows, grid, incs = m.embed(x)
    return image, windows, incs, grid
