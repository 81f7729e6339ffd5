"""VQ-VAE and the VQGAN losses: quantised reconstruction, codebook statistics in the history, hinge loss
and adaptive weight against closed forms, the discriminator switch-on step, one-optimizer gradient
separation of generator and discriminator, traceability."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.anomaly.models import build_model
from fovea.anomaly.vqgan_losses import (FeaturePerceptualLoss, PatchDiscriminator, adaptive_weight,
                                        generator_logits, hinge_d_loss, vqgan_loss)
from fovea.anomaly.vqvae import VQVAE, VQVAEConfig
from fovea.errors import ConfigError


def _small(**kw) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(VQVAEConfig(width=8, n_down=2, embed_dim=4, num_codes=16, score_sigma=1.0, target="pixels", **kw))


def test_forward_decodes_the_nearest_codes():
    m = _small().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        scores, maps = m(x)
        z = m.encoder(x)
        cb = m.quantizer.codebook
        flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
        idx = torch.stack([((cb - v) ** 2).sum(1).argmin() for v in flat])  # slow nearest code
        zq = cb[idx].reshape(2, 4, 4, 4).permute(0, 3, 1, 2)
        recon = m.decoder(zq)
    torch.testing.assert_close(maps, ((x - recon) ** 2).sum(1, keepdim=True))
    assert scores.shape == (2,)


def test_hinge_loss_and_adaptive_weight_closed_forms():
    assert float(hinge_d_loss(torch.zeros(3), torch.zeros(3))) == pytest.approx(1.0)
    assert float(hinge_d_loss(torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0]))) == pytest.approx(
        0.5 * ((0 + 0.5) / 2 + (0 + 1) / 2))
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec = (3 * w).sum()            # grad (3, 3): norm 3 sqrt 2
    g = (w * torch.tensor([1.0, -1.0])).sum()  # grad (1, -1): norm sqrt 2
    assert float(adaptive_weight(rec, g, w, disc_weight=0.5)) == pytest.approx(0.5 * 3 * 2 ** 0.5 / (2 ** 0.5 + 1e-4))
    flat = (w * 0).sum()           # vanishing generator gradient: finite, clamped at 1e4
    assert float(adaptive_weight(rec, flat, w)) == pytest.approx(1e4)


def test_disc_is_off_before_disc_start_and_each_net_gets_its_own_gradient():
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, ndf=8, n_layers=2)
    last = torch.nn.Parameter(torch.randn(3, 3))
    x = torch.randn(2, 3, 32, 32)
    noise = torch.randn(2, 3, 32, 32)
    x_hat = torch.einsum("oc,bchw->bohw", last, noise)
    cb = torch.tensor(0.1)
    before = vqgan_loss(x, x_hat, cb, step=4, disc=disc, last_layer=last, disc_start=5)
    assert set(before) == {"rec", "codebook", "loss"}
    assert float(before["loss"]) == pytest.approx(float((x - x_hat).abs().mean()) + 0.1, rel=1e-6)
    after = vqgan_loss(x, x_hat, cb, step=5, disc=disc, last_layer=last, disc_start=5)
    assert {"g", "d", "d_weight"} <= set(after)
    after["loss"].backward()
    # the discriminator's gradient is exactly that of its hinge loss (generator term blocked)
    ref = PatchDiscriminator(3, ndf=8, n_layers=2)
    ref.load_state_dict(disc.state_dict())
    hinge_d_loss(ref(x), ref(x_hat.detach())).backward()
    for (n, p), (_, q) in zip(disc.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    # the generator side: d loss / d last = d(rec + w g) / d last with w fixed (independent recomputation)
    last2 = last.detach().clone().requires_grad_(True)
    x_hat2 = torch.einsum("oc,bchw->bohw", last2, noise)
    rec2 = (x - x_hat2).abs().mean()
    g2 = -ref(x_hat2).mean()
    (rec2 + float(after["d_weight"]) * g2).backward()
    torch.testing.assert_close(last.grad, last2.grad, rtol=1e-5, atol=1e-6)


def test_generator_logits_do_not_touch_disc_parameters():
    disc = PatchDiscriminator(3, ndf=8, n_layers=1)
    x_hat = torch.randn(1, 3, 16, 16, requires_grad=True)
    generator_logits(disc, x_hat).mean().backward()
    assert x_hat.grad is not None and all(p.grad is None for p in disc.parameters())
    torch.testing.assert_close(generator_logits(disc, x_hat), disc(x_hat))


def test_perceptual_loss_zero_on_identical_images_and_positive_otherwise():
    from fovea.anomaly.features import FeatureExtractor

    loss = FeaturePerceptualLoss(FeatureExtractor("test_efficientnet", (1, 2), "random"))
    x = torch.randn(1, 3, 32, 32)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x, x + torch.randn_like(x))) > 0
    assert not list(loss.parameters())  # held outside the module tree: never saved with the model


def test_fit_logs_codebook_usage_and_perplexity(tmp_path):
    m = build_model("vqvae", width=8, n_down=2, embed_dim=4, num_codes=8, epochs=3, batch_size=2, lr=5e-3,
                    out_dir=str(tmp_path), backbone="ignored", weights="random", seed=0, target="pixels")
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    m.fit([x])
    assert len(m.history) == 3
    for row in m.history:
        assert 1.0 <= row["perplexity"] <= 8.0 and 0 < row["codebook_usage"] <= 1.0
        assert row["restarted_codes"] >= 0
    assert np.isfinite(m.history[-1]["train_loss"]) and m.history[-1]["train_loss"] < m.history[0]["train_loss"]


def test_fit_with_vqgan_losses_runs_the_discriminator(tmp_path):
    m = build_model("vqvae", width=8, n_down=2, embed_dim=4, num_codes=8, epochs=2, batch_size=2, lr=1e-3,
                    gan=True, target="pixels", disc_start=1, disc_ndf=8, disc_layers=1, backbone="test_efficientnet",
                    weights="random", layers=(1,), out_dir=str(tmp_path))
    d0 = {k: v.clone() for k, v in m.discriminator.state_dict().items()}
    m.fit([torch.randn(4, 3, 16, 16)])
    assert m.step == 4 and all(np.isfinite(r["train_loss"]) for r in m.history)
    assert any(not torch.equal(v, m.discriminator.state_dict()[k]) for k, v in d0.items())


def test_eval_forward_traces_and_matches():
    m = _small().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(m, x, check_trace=False)
        ref, got = m(x), traced(x)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


def test_feature_target_reconstructs_standardised_backbone_features(tmp_path):
    """target='features': the map is the upsampled squared error of standardised Lite-style features."""
    torch.manual_seed(0)
    m = build_model("vqvae", width=8, n_down=1, embed_dim=4, num_codes=8, epochs=2, batch_size=2,
                    backbone="test_efficientnet", weights="random", feature_layers=(2, 3), out_dir=str(tmp_path))
    x = torch.randn(4, 3, 32, 32)
    m.fit([x])
    with torch.no_grad():
        raw = torch.cat([m.extractor(x)[0], F.interpolate(m.extractor(x)[1], size=(4, 4), mode="bilinear",
                                                                   align_corners=False)], 1)
        # the standardisation was fitted on exactly these images: per-channel mean 0, std 1
        t = m.target_of(x)
        torch.testing.assert_close(t.mean(dim=(0, 2, 3)), torch.zeros(t.shape[1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(t.std(dim=(0, 2, 3)), torch.ones(t.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(t, (raw - raw.mean(dim=(0, 2, 3), keepdim=True)) /
                                   raw.std(dim=(0, 2, 3), keepdim=True), atol=1e-5, rtol=0)
        scores, maps = m(x)
        recon, _ = m.reconstruct(t)
        ref = F.interpolate(((t - recon) ** 2).sum(1, keepdim=True), size=(32, 32), mode="bilinear",
                            align_corners=False)
    torch.testing.assert_close(maps, ref)
    assert scores.shape == (4,) and m.history[-1]["perplexity"] >= 1.0


def test_config_errors():
    with pytest.raises(ConfigError, match="target='pixels'"):
        VQVAEConfig(gan=True)
    with pytest.raises(ConfigError, match="target="):
        VQVAEConfig(target="latents")
    with pytest.raises(ConfigError, match="decay"):
        VQVAEConfig(decay=1.5)
    with pytest.raises(ConfigError, match="num_codes=0"):
        VQVAEConfig(num_codes=0)


@pytest.mark.slow
def test_cli_fit_test_export_predict_with_vqvae(tmp_path, capsys):
    """`fovea anomaly fit --model vqvae` -> report, TorchScript export, predict: the one workflow."""
    import json

    import cv2

    from fovea.cli.main import main

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for sub in ("good", "bad", "masks"):
        (root / sub).mkdir(parents=True)

    def stripes():
        img = np.full((32, 32, 3), 120, np.uint8)
        img[:, ::8] = 170
        return np.clip(img.astype(int) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)

    for i in range(12):
        cv2.imwrite(str(root / "good" / f"g{i:02d}.png"), stripes())
    for i in range(6):
        img, mask = stripes(), np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 20, 2)
        img[y:y + 8, x:x + 8] = (20, 20, 220)
        mask[y:y + 8, x:x + 8] = 255
        cv2.imwrite(str(root / "bad" / f"b{i:02d}.png"), img)
        cv2.imwrite(str(root / "masks" / f"b{i:02d}.png"), mask)
    out = tmp_path / "run"
    args = ["anomaly", "fit", str(root), "--normal-dir", "good", "--abnormal-dir", "bad", "--mask-dir", "masks",
            "--input-size", "32", "--out", str(out), "--normal-split", "0.34", "--model", "vqvae", "--epochs", "6",
            "--batch-size", "4", "--option", "width=8", "--option", "n_down=2", "--option", "num_codes=16",
            "--option", "lr=0.01", "--option", "target=pixels"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(metrics)
    assert metrics["pixel_auroc"] > 0.8  # a red square on grey stripes is not in the normal codebook
    recipe = json.loads((out / "model" / "recipe.json").read_text())
    assert recipe["config"]["model"] == "vqvae" and recipe["config"]["model_config"]["num_codes"] == 16
    assert main(["anomaly", "export", str(out / "model"), "--out", str(out / "export"), "--format", "torchscript"]) == 0
    assert main(["anomaly", "predict", str(out / "export" / "model.pt"), str(root / "bad"), "--out",
                 str(tmp_path / "pred"), "--no-overlays"]) == 0
    lines = (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(l)["task"] == "anomaly" for l in lines)
    assert main(args[:-4] + ["--option", "lr"]) == 2  # not KEY=VALUE: a clear error
    assert "not KEY=VALUE" in capsys.readouterr().err
