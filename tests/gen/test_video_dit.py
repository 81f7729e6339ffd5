"""The video DiT and its diffusion process on tiny configs: shapes, patch layout against hand slicing,
adaLN-zero start, the attention-control hook, v-prediction algebra in closed form, DDIM with an oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fovea.gen.diffusion import add_noise, alpha_sigma, ddim_sample, ddim_step, guided, x0_from_v
from fovea.models.latent_ae import LatentAEConfig, LatentAutoencoder, frames_to_unit, unit_to_frames
from fovea.models.video_dit import VideoDiT, VideoDiTConfig

TINY = VideoDiTConfig(frames=3, latent_channels=2, latent_size=4, patch=2, dim=16, depth=2, heads=2, vocab_size=9,
                      text_len=5)


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)


def test_forward_shapes_and_zero_init_output():
    dit = VideoDiT(TINY)
    x, t, tok = torch.randn(2, 3, 2, 4, 4), torch.rand(2), torch.randint(0, 9, (2, 5))
    out = dit(x, t, tok)
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # adaLN-zero + zero head
    with pytest.raises(ValueError, match="do not fit"):
        dit(torch.randn(2, 4, 2, 4, 4), t, tok)
    with pytest.raises(ValueError, match="5 tokens"):
        dit(x, t, torch.zeros(2, 4, dtype=torch.long))


def test_patch_layout_is_frame_then_row_then_column():
    dit = VideoDiT(TINY)
    x = torch.randn(1, 3, 2, 4, 4)
    tokens = dit.patchify(x)
    assert tokens.shape == (1, 3 * 2 * 2, 2 * 2 * 2)
    # token (frame 1, row 1, col 0) = latent[1, :, 2:4, 0:2], channels first then the p x p pixels
    assert torch.equal(tokens[0, 1 * 4 + 1 * 2 + 0], x[0, 1, :, 2:4, 0:2].reshape(-1))
    assert torch.equal(dit.unpatchify(tokens), x)


def test_control_hook_replaces_attention_and_text_paths_agree():
    dit = VideoDiT(TINY)
    _randomise(dit)
    x, t, tok = torch.randn(2, 3, 2, 4, 4), torch.rand(2), torch.randint(0, 9, (2, 5))
    ref = dit(x, t, tok)
    calls = []

    def plain(layer, q, k, v):
        calls.append((layer, tuple(q.shape)))
        return F.scaled_dot_product_attention(q, k, v)

    assert torch.allclose(dit(x, t, tok, control=plain), ref, atol=1e-6)
    assert calls == [(0, (2, 2, 5 + 12, 8)), (1, (2, 2, 5 + 12, 8))]
    assert torch.allclose(dit(x, t, text_emb=dit.embed_text(tok)), ref, atol=1e-6)
    assert not torch.allclose(dit(x, t, tok, control=lambda i, q, k, v: torch.zeros_like(q)), ref)


def test_v_prediction_algebra_and_ddim_in_closed_form():
    torch.manual_seed(1)
    x0, eps, t = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0.1, 0.4, 0.7, 1.0])
    x_t, v = add_noise(x0, eps, t)
    a, s = torch.cos(math.pi * t / 2)[:, None], torch.sin(math.pi * t / 2)[:, None]
    assert torch.allclose(x_t, a * x0 + s * eps) and torch.allclose(v, a * eps - s * x0)
    assert torch.allclose(x0_from_v(x_t, v, t), x0, atol=1e-6)
    t_next = t - 0.1
    a_n, s_n = alpha_sigma(t_next)
    assert torch.allclose(ddim_step(x_t, x0, t, t_next), a_n[:, None] * x0 + s_n[:, None] * eps, atol=1e-5)
    assert torch.allclose(guided(torch.zeros(2), torch.ones(2), 3.0), torch.full((2,), 3.0))
    target = torch.randn(2, 5)
    out = ddim_sample(lambda x, tt, i: target, torch.randn(2, 5), steps=7)  # an oracle denoiser
    assert torch.allclose(out, target, atol=1e-6)


def test_latent_autoencoder_shapes_and_pixel_conversion():
    ae = LatentAutoencoder(LatentAEConfig(width=8, latent_channels=4))
    frames = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    x = frames_to_unit(frames)
    assert x.shape == (2, 3, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(unit_to_frames(x), frames)
    z = ae.encode(x)
    assert z.shape == (2, 4, 4, 4) and ae.decode(z).shape == (2, 3, 16, 16)
