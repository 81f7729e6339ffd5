"""CLIP and SigLIP losses against slow per-pair reference loops, and their data-parallel exactness:
2 and 3 gloo processes on the CPU give the single-process global loss (mean over ranks) and
W x (or 1 x) its feature gradients, float64 to 1e-10, for every variant."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fovea.errors import ConfigError
from fovea.nn.contrastive import ClipLoss, LogitScale, SigLipLoss

B_LOCAL, DIM = 4, 8
CLIP_VARIANTS = [(True, True), (False, True), (False, False)]  # (local_loss, gather_with_grad)
SIGLIP_VARIANTS = ["bidir", "shift", "gather"]


def _features(world: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(world * B_LOCAL, DIM, generator=g, dtype=torch.float64)
    txt = img + 0.7 * torch.randn(world * B_LOCAL, DIM, generator=g, dtype=torch.float64)
    return img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)


def clip_reference(img, txt, scale):
    """Slow loop: mean over i of -log softmax_j(s x_i.y_j)[i], both directions, halved."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        row_i = [scale * (img[i] @ txt[j]) for j in range(n)]
        row_t = [scale * (txt[i] @ img[j]) for j in range(n)]
        total = total - (row_i[i] - torch.logsumexp(torch.stack(row_i), 0))
        total = total - (row_t[i] - torch.logsumexp(torch.stack(row_t), 0))
    return total / (2 * n)


def siglip_reference(img, txt, scale, bias):
    """Slow loop: -sum_ij log sigmoid(z_ij (t x_i.y_j + b)) / N, z = +1 iff i == j."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total - torch.nn.functional.logsigmoid(z * (scale * (img[i] @ txt[j]) + bias))
    return total / n


def _grads(loss_fn, img, txt):
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    loss = loss_fn(img, txt)
    loss.backward()
    return loss.detach(), img.grad, txt.grad


# ----------------------------------------------------------------------------------- single process

def test_clip_loss_matches_slow_reference_and_its_gradient():
    img, txt = _features(3)  # 12 pairs
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    got = _grads(lambda i, t: ClipLoss()(i, t, scale), img, txt)
    ref = _grads(lambda i, t: clip_reference(i, t, scale), img, txt)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_siglip_loss_matches_slow_reference_and_init_is_t10_b_minus10():
    img, txt = _features(3)
    ls = LogitScale(10.0, bias_init=-10.0).double()
    t, b = ls().detach(), ls.bias.detach()
    assert math.isclose(float(t), 10.0, rel_tol=1e-6) and float(b) == -10.0  # float32 parameter
    got = _grads(lambda i, x: SigLipLoss()(i, x, t, b), img, txt)
    ref = _grads(lambda i, x: siglip_reference(i, x, float(t), float(b)), img, txt)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_logit_scale_is_clamped_to_max_and_clamp_keeps_parameter_in_range():
    ls = LogitScale(1 / 0.07, max_scale=100.0)
    with torch.no_grad():
        ls.log_scale.fill_(7.0)  # exp(7) ~ 1097
    assert math.isclose(float(ls().detach()), 100.0, rel_tol=1e-6)
    ls.clamp_()
    assert math.isclose(float(ls.log_scale), math.log(100.0), rel_tol=1e-7)
    with pytest.raises(ConfigError, match="logit scale init"):
        LogitScale(200.0)


def test_local_loss_without_gradient_gather_is_refused():
    with pytest.raises(ConfigError, match="wrong gradient"):
        ClipLoss(local_loss=True, gather_with_grad=False)
    with pytest.raises(ConfigError, match="dist_impl"):
        SigLipLoss("reduce")


# ----------------------------------------------------------------------------------- gloo processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        img, txt = _features(world)
        sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        scale = torch.tensor(1 / 0.07, dtype=torch.float64)
        t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
        results = {}
        for local, gather in CLIP_VARIANTS:
            loss = ClipLoss(local, gather)
            results[f"clip_{local}_{gather}"] = _grads(lambda i, x: loss(i, x, scale), img[sl], txt[sl])
        for impl in SIGLIP_VARIANTS:
            loss = SigLipLoss(impl)
            results[f"siglip_{impl}"] = _grads(lambda i, x: loss(i, x, t, b), img[sl], txt[sl])
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3, 5])  # 5: bidir needs a second round
def test_distributed_losses_equal_the_global_loss_and_gradients(world, tmp_path):
    # forkserver: children fork from a fresh server process (a fork of this one breaks once autograd's threads
    # ran here, as earlier tests do); the server imports torch once, the children run single-threaded
    mp.set_forkserver_preload(["torch", "torch.distributed"])
    mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True,
                       start_method="forkserver")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    img, txt = _features(world)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    refs = {"clip": _grads(lambda i, t: clip_reference(i, t, scale), img, txt),
            "siglip": _grads(lambda i, t: siglip_reference(i, t, 10.0, -10.0), img, txt)}
    names = [f"clip_{a}_{b}" for a, b in CLIP_VARIANTS] + [f"siglip_{i}" for i in SIGLIP_VARIANTS]
    for name in names:
        loss_ref, g_img_ref, g_txt_ref = refs[name.split("_")[0]]
        mean_loss = torch.stack([r[name][0] for r in ranks]).mean()
        torch.testing.assert_close(mean_loss, loss_ref, atol=1e-10, rtol=0, msg=name)
        factor = 1.0 if name == "clip_False_False" else float(world)
        g_img = torch.cat([r[name][1] for r in ranks]) / factor
        g_txt = torch.cat([r[name][2] for r in ranks]) / factor
        torch.testing.assert_close(g_img, g_img_ref, atol=1e-10, rtol=0, msg=name)
        torch.testing.assert_close(g_txt, g_txt_ref, atol=1e-10, rtol=0, msg=name)
