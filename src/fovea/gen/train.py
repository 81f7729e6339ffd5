"""Training of fovea's text-to-video generator on generated moving-object clips: first the per-frame latent
autoencoder (pixel MSE), then the video DiT on the frozen latents (v-prediction MSE at uniform t, the caption
dropped to the empty prompt 10 % of the time for classifier-free guidance, EMA weights for sampling).
Checkpoints: a folder with ae.safetensors, dit.safetensors (EMA) and generator.json (configs, data, progress).

Run in the background: `python -m fovea.gen.train --out runs/ditctrl` (see --help).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fovea.errors import CheckpointError
from fovea.gen.diffusion import add_noise
from fovea.models.latent_ae import LatentAEConfig, LatentAutoencoder, frames_to_unit
from fovea.models.video_dit import VideoDiT, VideoDiTConfig
from fovea.synth.moving_objects import VOCAB, sample_clips


@dataclass
class GenTrainConfig:
    """Data (clips, frames, size, seed, start: "anywhere" | "edge", see synth.moving_objects.random_spec),
    autoencoder and DiT schedules, the transformer's shape; init_from: a generator folder whose autoencoder is
    reused (no autoencoder training) and whose DiT weights start the training (a warm start)."""

    clips: int = 4000
    frames: int = 8
    size: int = 32
    seed: int = 0
    ae_steps: int = 600
    ae_batch: int = 32
    ae_lr: float = 2e-3
    ae_width: int = 32
    dit_steps: int = 3000
    dit_batch: int = 32
    dit_lr: float = 8e-4
    warmup: int = 100
    ema: float = 0.995
    cond_drop: float = 0.1
    dit_dim: int = 64
    dit_depth: int = 4
    dit_heads: int = 4
    save_every: int = 250
    start: str = "anywhere"
    init_from: str = ""


def make_training_set(cfg: GenTrainConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(frames (N, T, H, W, 3) uint8, tokens (N, 5) int64, captions) of cfg.clips generated clips."""
    clips = sample_clips(cfg.clips, seed=cfg.seed, frames=cfg.frames, size=cfg.size, start=cfg.start)
    frames = torch.from_numpy(np.stack([c.frames for c in clips]))
    tokens = torch.from_numpy(np.stack([c.tokens for c in clips]))
    return frames, tokens, [c.caption for c in clips]


def _lr(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of base."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, p))))


def train_autoencoder(frames: torch.Tensor, cfg: GenTrainConfig, log=print) -> LatentAutoencoder:
    """Fit the autoencoder on single frames (N, T, H, W, 3) uint8; sets latent_scale to the latents' std."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    ae = LatentAutoencoder(LatentAEConfig(width=cfg.ae_width))
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr, weight_decay=0.0)
    flat = frames.reshape(-1, *frames.shape[2:])
    t0 = time.perf_counter()
    for step in range(cfg.ae_steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.ae_lr, 100, cfg.ae_steps)
        x = frames_to_unit(flat[torch.randint(len(flat), (cfg.ae_batch,), generator=g)])
        rec, z = ae(x)
        loss = F.mse_loss(rec, x) + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.ae_steps - 1:
            log(f"ae step {step} loss {loss.item():.5f} ({time.perf_counter() - t0:.0f} s, "
                f"load {os.getloadavg()[0]:.1f})")
    ae.eval()
    with torch.no_grad():
        sample = frames_to_unit(flat[torch.randperm(len(flat), generator=g)[:2048]])
        ae.latent_scale.fill_(float(ae.encode_raw(sample).std()))
    return ae


@torch.no_grad()
def encode_clips(ae: LatentAutoencoder, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> scaled latents (N, T, C, H/4, W/4)."""
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    out = torch.cat([ae.encode(frames_to_unit(flat[i:i + batch])) for i in range(0, len(flat), batch)])
    return out.reshape(n, t, *out.shape[1:])


def dit_config_for(cfg: GenTrainConfig, ae: LatentAutoencoder) -> VideoDiTConfig:
    return VideoDiTConfig(frames=cfg.frames, latent_channels=ae.config.latent_channels, latent_size=cfg.size // 4,
                          dim=cfg.dit_dim, depth=cfg.dit_depth, heads=cfg.dit_heads, vocab_size=len(VOCAB))


def train_video_dit(latents: torch.Tensor, tokens: torch.Tensor, dit_cfg: VideoDiTConfig, cfg: GenTrainConfig,
                    log=print, on_checkpoint=None, init: VideoDiT | None = None) -> VideoDiT:
    """v-prediction training on latents (N, T, C, h, w) with captions (N, Lt); returns the EMA model.
    on_checkpoint(ema_model, step) is called every cfg.save_every steps; init: weights to start from."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    torch.manual_seed(cfg.seed + 1)
    model = VideoDiT(dit_cfg)
    if init is not None:
        model.load_state_dict(init.state_dict())
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.dit_lr, weight_decay=0.01)
    t0, running = time.perf_counter(), []
    for step in range(cfg.dit_steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.dit_lr, cfg.warmup, cfg.dit_steps)
        idx = torch.randint(len(latents), (cfg.dit_batch,), generator=g)
        x0, tok = latents[idx], tokens[idx].clone()
        tok[torch.rand(len(idx), generator=g) < cfg.cond_drop] = 0
        t = torch.rand(len(idx), generator=g)
        x_t, v = add_noise(x0, torch.randn(x0.shape, generator=g), t)
        loss = F.mse_loss(model(x_t, t, tok), v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        running.append(loss.item())
        if step % 100 == 0 or step == cfg.dit_steps - 1:
            log(f"dit step {step} loss {np.mean(running):.4f} ({time.perf_counter() - t0:.0f} s, "
                f"load {os.getloadavg()[0]:.1f})")
            running = []
        if on_checkpoint is not None and ((step + 1) % cfg.save_every == 0 or step == cfg.dit_steps - 1):
            on_checkpoint(ema, step + 1)
    return ema


def save_generator(folder: str | Path, ae: LatentAutoencoder, dit: VideoDiT, meta: dict) -> None:
    """ae.safetensors, dit.safetensors and generator.json into folder (written atomically per file)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in (("ae", ae), ("dit", dit)):
        tmp = folder / f".{name}.tmp"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")
    info = {"ae": asdict(ae.config), "dit": dit.config.to_dict(), **meta}
    (folder / ".generator.tmp").write_text(json.dumps(info, indent=1))
    (folder / ".generator.tmp").replace(folder / "generator.json")


def load_generator(folder: str | Path) -> tuple[LatentAutoencoder, VideoDiT, dict]:
    """(autoencoder, EMA DiT, metadata) from a folder written by save_generator; eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    files = [folder / "generator.json", folder / "ae.safetensors", folder / "dit.safetensors"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"generator checkpoint {folder} lacks {missing}. Fix: train one with "
                              f"`python -m fovea.gen.train --out {folder}`.")
    info = json.loads(files[0].read_text())
    ae = LatentAutoencoder(LatentAEConfig(**info["ae"]))
    ae.load_state_dict(load_file(str(files[1])))
    dit = VideoDiT(VideoDiTConfig(**info["dit"]))
    dit.load_state_dict(load_file(str(files[2])))
    return ae.eval(), dit.eval(), info


def train_generator(out: str | Path, cfg: GenTrainConfig, log=print) -> tuple[LatentAutoencoder, VideoDiT]:
    """Data -> autoencoder -> latents -> DiT, checkpointing into `out` as it goes."""
    t0 = time.perf_counter()
    frames, tokens, _ = make_training_set(cfg)
    log(f"{len(frames)} clips generated in {time.perf_counter() - t0:.0f} s")
    init = None
    if cfg.init_from:
        ae, init, _ = load_generator(cfg.init_from)
        log(f"autoencoder and DiT start from {cfg.init_from}")
    else:
        ae = train_autoencoder(frames, cfg, log)
    latents = encode_clips(ae, frames)
    log(f"latents {tuple(latents.shape)}, latent_scale {float(ae.latent_scale):.3f}")
    dit_cfg = dit_config_for(cfg, ae)
    cpu0 = time.process_time()

    def checkpoint(ema: VideoDiT, step: int) -> None:
        save_generator(out, ae, ema, {"train": asdict(cfg), "dit_steps_done": step,
                                      "train_cpu_s": round(time.process_time() - cpu0, 1)})
        log(f"checkpoint at step {step} -> {out}")

    dit = train_video_dit(latents, tokens, dit_cfg, cfg, log, checkpoint, init)
    return ae, dit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ditctrl")
    for field, value in asdict(GenTrainConfig()).items():
        ap.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    args = vars(ap.parse_args())
    out = args.pop("out")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train_generator(out, GenTrainConfig(**args), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
