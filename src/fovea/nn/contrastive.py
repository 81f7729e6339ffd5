"""Contrastive image-text losses: CLIP's symmetric cross-entropy and SigLIP's sigmoid loss.

Both are small modules that take every quantity explicitly (features, scale, bias), as open_clip's
`loss.py` does, and both are exact under data parallelism:

- `ClipLoss(local_loss, gather_with_grad)`: features of every process are all-gathered; with
  `local_loss` each process scores only its own rows against the whole batch. `local_loss` without
  a gradient-carrying gather gives a wrong gradient (the gathered foreign features are constants
  but the local rows' partners in other processes never see this process's features), so that
  combination is refused (ConfigError).
- `SigLipLoss(dist_impl)`: the local block with its positives plus one negative-only block per
  foreign text batch, moved by neighbour exchange ("bidir": both neighbours per round, "shift": a
  one-way ring) or an all-gather ("gather"). Exchanges carry gradients back to the text's owner.

With W processes the mean of the per-process losses equals the loss of the whole batch in one
process; the per-process feature gradients are W x that loss's gradient for every variant that
gathers with gradient (1 x for CLIP without it), so DDP's gradient mean is exact.

`LogitScale` is the learnable temperature: log-parametrised, initialised to 1/0.07 (CLIP) or 10
(SigLIP), clamped to at most 100.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fovea.errors import ConfigError

__all__ = ["ClipLoss", "LogitScale", "SigLipLoss", "clip_logits", "dist_rank_world", "gather_features",
           "neighbour_exchange", "neighbour_exchange_bidir", "siglip_block_loss"]

SIGLIP_DIST_IMPLS = ("bidir", "shift", "gather")


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class LogitScale(nn.Module):
    """Learnable temperature t = exp(s), s initialised to log(init); forward returns t clamped to <= max_scale.

    CLIP: init 1/0.07 (about 14.3), max 100. SigLIP: init 10 with a learnable bias initialised to -10
    (`bias_init`), as the SigLIP paper (Table 4). `clamp_()` after each optimizer step keeps the
    parameter itself in [0, log max_scale] (open_clip's trainer does the same).
    """

    def __init__(self, init: float = 1 / 0.07, max_scale: float = 100.0, bias_init: float | None = None):
        super().__init__()
        if not 0 < init <= max_scale:
            raise ConfigError(f"logit scale init {init} must be in (0, max_scale={max_scale}]. Fix: e.g. 1/0.07 "
                              "for CLIP or 10 for SigLIP.")
        self.max_log = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))
        self.bias = nn.Parameter(torch.tensor(float(bias_init))) if bias_init is not None else None

    def forward(self) -> torch.Tensor:
        """The scale t as a 0-d tensor (gradient flows while log t < log max_scale)."""
        return self.log_scale.clamp(max=self.max_log).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(0.0, self.max_log)


# ----------------------------------------------------------------------------------- collectives

class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient of the gathered stack (all_reduce)
    and returns this process's slice: the gradient that the sum of all processes' losses has."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_features(x: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """(B_local, D) -> (W * B_local, D) in rank order; without grad the local rows are re-inserted so
    their gradient still reaches this process's encoder."""
    rank, world = dist_rank_world()
    if world == 1:
        return x
    if with_grad:
        return _AllGatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, 0)


def _p2p(ops: list[tuple[str, torch.Tensor, int]]) -> None:
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend if kind == "send" else dist.irecv, t, peer)
                                   for kind, t, peer in ops])
    for r in reqs:
        r.wait()


class _Exchange(torch.autograd.Function):
    """Send `x` to `to_rank`, receive a tensor of the same shape from `from_rank`; backward sends the
    received tensor's gradient back to `from_rank` and receives `x`'s gradient from `to_rank`."""

    @staticmethod
    def forward(ctx, from_rank: int, to_rank: int, x: torch.Tensor) -> torch.Tensor:
        ctx.from_rank, ctx.to_rank = from_rank, to_rank
        out = torch.empty_like(x)
        _p2p([("send", x.contiguous(), to_rank), ("recv", out, from_rank)])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, _Exchange.apply(ctx.to_rank, ctx.from_rank, grad.contiguous())


class _ExchangeBidir(torch.autograd.Function):
    """Send `to_left` to the left and `to_right` to the right neighbour; return (from_left,
    from_right). Backward is the same exchange of the gradients in the opposite direction."""

    @staticmethod
    def forward(ctx, left: int, right: int, to_left: torch.Tensor, to_right: torch.Tensor):
        ctx.left, ctx.right = left, right
        from_left, from_right = torch.empty_like(to_right), torch.empty_like(to_left)
        _p2p([("send", to_left.contiguous(), left), ("send", to_right.contiguous(), right),
              ("recv", from_left, left), ("recv", from_right, right)])
        return from_left, from_right

    @staticmethod
    def backward(ctx, grad_from_left: torch.Tensor, grad_from_right: torch.Tensor):
        # gradients go back where their tensors came from; the left neighbour returns the gradient of what
        # it received from its right (our `to_left`), the right neighbour that of our `to_right`
        g_to_left, g_to_right = _ExchangeBidir.apply(ctx.left, ctx.right, grad_from_left.contiguous(),
                                                     grad_from_right.contiguous())
        return None, None, g_to_left, g_to_right


def neighbour_exchange(from_rank: int, to_rank: int, x: torch.Tensor) -> torch.Tensor:
    """Gradient-carrying one-way exchange (send to `to_rank`, receive from `from_rank`)."""
    return _Exchange.apply(from_rank, to_rank, x)


def neighbour_exchange_bidir(left: int, right: int, to_left: torch.Tensor, to_right: torch.Tensor):
    """Gradient-carrying two-way exchange: returns (received from left, received from right)."""
    return _ExchangeBidir.apply(left, right, to_left, to_right)


# ----------------------------------------------------------------------------------- CLIP

def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N_i, D), (N_t, D) -> logits per image (N_i, N_t) and per text (N_t, N_i), scaled (and biased)."""
    per_image = logit_scale * image_features @ text_features.T
    if logit_bias is not None:
        per_image = per_image + logit_bias
    return per_image, per_image.T


class ClipLoss(nn.Module):
    """Symmetric InfoNCE: (CE(image -> text) + CE(text -> image)) / 2 over matched pairs.

    Features (B_local, D) should be L2-normalised; `logit_scale` is t (not log t). Under DDP:
    local_loss=True + gather_with_grad=True is the scalable exact choice (B_local x B_global logits);
    local_loss=False computes the full matrix in every process. local_loss=True with
    gather_with_grad=False is refused: its gradient is wrong.
    """

    def __init__(self, local_loss: bool = True, gather_with_grad: bool = True):
        super().__init__()
        if local_loss and not gather_with_grad:
            raise ConfigError(
                "ClipLoss(local_loss=True, gather_with_grad=False) gives a wrong gradient under data parallelism "
                "(foreign rows never receive this process's gradient). Fix: gather_with_grad=True (recommended), "
                "or local_loss=False to compute the full logit matrix in every process.")
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, output_dict: bool = False):
        rank, world = dist_rank_world()
        if image_features.shape != text_features.shape:
            raise ConfigError(f"ClipLoss needs paired features of equal shape, got image {tuple(image_features.shape)}"
                              f" and text {tuple(text_features.shape)}.")
        n = image_features.shape[0]
        if world > 1:
            all_img = gather_features(image_features, self.gather_with_grad)
            all_txt = gather_features(text_features, self.gather_with_grad)
            if self.local_loss:
                per_image = logit_scale * image_features @ all_txt.T
                per_text = logit_scale * text_features @ all_img.T
                if logit_bias is not None:
                    per_image, per_text = per_image + logit_bias, per_text + logit_bias
                labels = torch.arange(n, device=image_features.device) + n * rank
            else:
                per_image, per_text = clip_logits(all_img, all_txt, logit_scale, logit_bias)
                labels = torch.arange(all_img.shape[0], device=image_features.device)
        else:
            per_image, per_text = clip_logits(image_features, text_features, logit_scale, logit_bias)
            labels = torch.arange(n, device=image_features.device)
        loss = (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
        return {"contrastive_loss": loss} if output_dict else loss


# ----------------------------------------------------------------------------------- SigLIP

def siglip_block_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                      logit_bias: torch.Tensor | None, negative_only: bool = False) -> torch.Tensor:
    """-sum over pairs of log sigmoid(z_ij * (t x_i.y_j + b)) / B_img; z = +1 on the diagonal (unless
    negative_only), -1 elsewhere. image (B_img, D), text (B_txt, D)."""
    logits = logit_scale * image_features @ text_features.T
    if logit_bias is not None:
        logits = logits + logit_bias
    signs = -torch.ones_like(logits)
    if not negative_only:
        signs = signs + 2 * torch.eye(*logits.shape, dtype=logits.dtype, device=logits.device)
    return -F.logsigmoid(signs * logits).sum() / image_features.shape[0]


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP, arXiv 2303.15343): every image-text pair is a binary problem.

    Initialise the scale to t = 10 and the bias to b = -10 (`LogitScale(10, bias_init=-10)`).
    dist_impl: how foreign text blocks reach this process under DDP ("bidir", "shift", "gather").
    """

    def __init__(self, dist_impl: str = "bidir"):
        super().__init__()
        if dist_impl not in SIGLIP_DIST_IMPLS:
            raise ConfigError(f"SigLipLoss dist_impl={dist_impl!r} is unknown. Fix: one of {SIGLIP_DIST_IMPLS}.")
        self.dist_impl = dist_impl

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, output_dict: bool = False):
        rank, world = dist_rank_world()
        loss = siglip_block_loss(image_features, text_features, logit_scale, logit_bias)
        if world > 1:
            for foreign in self._foreign_text_blocks(text_features, rank, world):
                loss = loss + siglip_block_loss(image_features, foreign, logit_scale, logit_bias, negative_only=True)
        return {"contrastive_loss": loss} if output_dict else loss

    def _foreign_text_blocks(self, text: torch.Tensor, rank: int, world: int) -> list[torch.Tensor]:
        """The W - 1 other processes' text blocks, each reached through a gradient-carrying collective."""
        left, right = (rank - 1) % world, (rank + 1) % world
        if self.dist_impl == "gather":
            blocks = gather_features(text, with_grad=True).chunk(world, 0)
            return [b for i, b in enumerate(blocks) if i != rank]
        out = []
        if self.dist_impl == "shift":
            current = text
            for _ in range(world - 1):
                current = neighbour_exchange(left, right, current)  # block of rank - k after k shifts
                out.append(current)
            return out
        rounds, remainder = divmod(world - 1, 2)
        to_left = to_right = text
        for _ in range(rounds):
            from_left, from_right = neighbour_exchange_bidir(left, right, to_left, to_right)
            out += [from_left, from_right]
            to_left, to_right = from_right, from_left
        if remainder:
            out.append(neighbour_exchange(left, right, to_right))
        return out
