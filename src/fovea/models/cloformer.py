"""CloFormer (Fan et al., "Rethinking Local Perception in Lightweight Vision Transformer",
arXiv 2303.17803): a light four-stage backbone whose attention has a local and a global branch.

- AttnConv (local, "high-frequency") heads: Q, K, V from one 1x1 conv, each mixed by a shared
  depthwise k x k conv; the context-aware weights tanh(d^-1/2 * (1x1 -> Swish -> 1x1)(Q * K)) gate V.
  No softmax, linear in the number of pixels.
- Global ("low-frequency") heads: Q at full resolution, K and V from the map average-pooled by w;
  softmax attention through `F.scaled_dot_product_attention`.
- Block: x += DropPath(Attn(GN(x))); x = Shortcut(x) + DropPath(ConvFFN(GN(x))); the last block of
  stages 1-3 downsamples inside its ConvFFN (depthwise k5 stride 2) with a conv shortcut.

Configs and parameter counts follow the official code (qhfan/CloFormer, MIT; no weights released),
whose key layout this module keeps: XXS 4.17 M, XS 7.17 M, S 12.35 M parameters (1000 classes).
Registered in timm as `cloformer_xxs|xs|s`, with `features_only` (strides 4, 8, 16, 32).
FLOPs at 224 px, fvcore convention (1 multiply-add = 1 FLOP; convolutions, attention matmuls, norms):
0.667 / 1.228 / 2.182 G (closed form in tests/models/test_cloformer.py; `fovea.models.flops` counts the
same convolutions and matmuls exactly). The paper prints 0.6 / 1.1 / 2.0 G and publishes no counter
(the official main.py logs `model.flops()` only if a model defines it; CloFormer does not). Its figures
are matched, to the printed digit, by the count without the dense 5x5 stride-2 convolution of the three
downsampling shortcuts (0.607 / 1.107 / 1.960 G: 60 / 122 / 222 M MACs, 9-10 % of the total); the only
other omission that fits all three is the attention matmuls plus every depthwise convolution
(0.593 / 1.124 / 2.044 G). The parameter counts do include that shortcut convolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from fovea.errors import ConfigError
from fovea.models._staged import default_cfg, drop_path_rates, init_weights

__all__ = ["CLOFORMER_CONFIGS", "CloFormer", "CloFormerConfig", "fold_norm_affines", "set_export_fusions",
           "set_inference_rewrites"]


@dataclass(frozen=True)
class CloFormerConfig:
    """dims/depths/heads per stage; group_splits[i] = [local heads, global heads]; local_kernels[i]
    = AttnConv kernel; pool_sizes[i] = K/V pooling window of the global branch."""

    dims: tuple[int, ...]
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    group_splits: tuple[tuple[int, int], ...]
    local_kernels: tuple[int, ...] = (3, 5, 7, 9)
    pool_sizes: tuple[int, ...] = (8, 4, 2, 1)
    mlp_kernel: int = 5
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0


CLOFORMER_CONFIGS = {
    "cloformer_xxs": CloFormerConfig((32, 64, 128, 256), (2, 2, 6, 2), (4, 4, 8, 16), ((3, 1), (2, 2), (4, 4), (4, 12))),
    "cloformer_xs": CloFormerConfig((48, 96, 160, 352), (2, 2, 6, 2), (3, 6, 10, 22), ((2, 1), (3, 3), (5, 5), (7, 15)),
                                    drop_path_rate=0.06),
    "cloformer_s": CloFormerConfig((64, 128, 224, 448), (2, 2, 6, 2), (4, 8, 14, 28), ((3, 1), (4, 4), (7, 7), (7, 21)),
                                   drop_path_rate=0.06),
}


# ----------------------------------------------------------------------------------- layers

class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group (mean and variance over C, H, W per sample; per-channel affine) computed as
    `layer_norm` over (C, H, W) with the affine expanded to (C, H, W): the same numbers, and one
    LayerNormalization node in an ONNX export instead of reshape / InstanceNormalization / reshape / Mul / Add.
    Keys (`weight`, `bias`) are nn.GroupNorm's."""

    def __init__(self, dim: int):
        super().__init__(1, dim)
        self.affine_folded = False  # set by `fold_norm_affines`: the affine lives in the next layer's weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[1:]
        if self.affine_folded:
            return F.layer_norm(x, shape, None, None, self.eps)
        return F.layer_norm(x, shape, self.weight[:, None, None].expand(shape),
                            self.bias[:, None, None].expand(shape), self.eps)


class ConvBNReLU(nn.Module):
    """k x k conv -> BatchNorm -> ReLU (official key layout `conv.0/1`)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PatchEmbedding(nn.Module):
    """Stride-4 convolutional stem: (B, 3, H, W) -> (B, C, H/4, W/4), group-normalised."""

    def __init__(self, c_in: int, dim: int):
        super().__init__()
        self.conv1 = ConvBNReLU(c_in, dim // 2, 2)
        self.conv2 = ConvBNReLU(dim // 2, dim, 2)
        self.conv3 = ConvBNReLU(dim, dim, 1)
        self.conv4 = ConvBNReLU(dim, dim, 1)
        self.conv5 = nn.Conv2d(dim, dim, 1)
        self.layernorm = GroupNorm1(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x))))))


class AttnMap(nn.Module):
    """The context-aware weight generator: 1x1 -> Swish -> 1x1 on (B, C, H, W)."""

    def __init__(self, dim: int):
        super().__init__()
        self.act_block = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.SiLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_block(x)


def cropped_same_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Stride-1 'same' convolution (odd kernel k, padding k // 2) with the kernel cropped to the map: on an n-pixel
    side only the offsets -(n - 1) .. n - 1 ever meet the input, the others meet zero padding, so a kernel wider
    than 2n - 1 is cropped to its central 2n - 1 taps and the padding to n - 1: the same numbers with fewer
    weights and taps (CloFormer-XXS at 48 px: stage 4's 9 x 9 and 5 x 5 depthwise kernels on 2 x 2 maps become
    3 x 3, stage 3's 7 x 7 on 3 x 3 maps 5 x 5). The map size is static under tracing and export."""
    kh, kw = weight.shape[-2:]
    h, w = x.shape[-2:]
    ch, cw = max(0, (kh - (2 * h - 1)) // 2), max(0, (kw - (2 * w - 1)) // 2)
    if ch or cw:
        weight = weight[..., ch:kh - ch, cw:kw - cw]
    return F.conv2d(x, weight, bias, 1, (kh // 2 - ch, kw // 2 - cw), 1, groups)


class CloAttention(nn.Module):
    """Local AttnConv heads and global pooled-K/V heads, concatenated, then a 1x1 projection.

    (B, C, H, W) -> (B, C, H, W); head dim d = C / heads; local heads h_l, global heads h_g.
    """

    def __init__(self, dim: int, heads: int, group_split: tuple[int, int], kernel: int, pool: int,
                 qkv_bias: bool = True):
        super().__init__()
        local, glob = group_split
        if local + glob != heads or dim % heads:
            raise ConfigError(f"CloFormer attention: group split {group_split} must sum to heads={heads} and heads "
                              f"must divide dim={dim}.")
        self.d = dim // heads
        self.scale = self.d ** -0.5
        self.local_heads, self.global_heads, self.pool = local, glob, pool
        # one local group (one kernel size) per stage, as every released config; lists keep official keys
        self.qkvs = nn.ModuleList([nn.Conv2d(dim, 3 * local * self.d, 1, bias=qkv_bias)] if local else [])
        self.convs = nn.ModuleList([nn.Conv2d(3 * local * self.d, 3 * local * self.d, kernel, 1, kernel // 2,
                                              groups=3 * local * self.d)] if local else [])
        self.act_blocks = nn.ModuleList([AttnMap(local * self.d)] if local else [])
        if glob:
            self.global_q = nn.Conv2d(dim, glob * self.d, 1, bias=qkv_bias)
            self.global_kv = nn.Conv2d(dim, 2 * glob * self.d, 1, bias=qkv_bias)
            self.avgpool = nn.AvgPool2d(pool, pool) if pool != 1 else nn.Identity()
        self.proj = nn.Conv2d(dim, dim, 1, bias=qkv_bias)
        self.inference_rewrites = True  # see `local_qkv` and `CloBlock.forward_attention`; `set_inference_rewrites`
        self.export_fusions = False  # see `set_export_fusions`

    def local_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V of the local heads, each (B, h_l * d, H, W): the 1x1 conv then the shared-kernel depthwise conv.

        Training: one conv pair over [Q | K | V] and a chunk. Inference (`inference_rewrites`, eval mode): three
        conv pairs on slices of the same weights, the same numbers without a Split (an operator without an NCHWc
        kernel in onnxruntime, so level ALL wraps it in layout conversions)."""
        if self.training or not self.inference_rewrites:
            return self.convs[0](self.qkvs[0](x)).chunk(3, dim=1)  # channels [Q | K | V]; chunk: no reshapes
        pw, dw, c = self.qkvs[0], self.convs[0], self.local_heads * self.d
        out = []
        for i in range(3):
            part = slice(i * c, (i + 1) * c)
            y = F.conv2d(x, pw.weight[part], None if pw.bias is None else pw.bias[part])
            dw_b = None if dw.bias is None else dw.bias[part]
            if self.export_fusions:
                out.append(cropped_same_conv(y, dw.weight[part], dw_b, c))
            else:
                out.append(F.conv2d(y, dw.weight[part], dw_b, dw.stride, dw.padding, dw.dilation, c))
        return out[0], out[1], out[2]

    def local_attention(self, x: torch.Tensor) -> torch.Tensor:
        """AttnConv: (B, C, H, W) -> (B, h_l * d, H, W)."""
        q, k, v = self.local_qkv(x)
        weights = torch.tanh(self.act_blocks[0](q * k) * self.scale)
        return weights * v

    def global_attention(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax attention of full-resolution queries over pooled keys/values (`pooled` = avgpool(x), computed
        when not given): -> (B, h_g * d, H, W)."""
        pooled = self.avgpool(x) if pooled is None else pooled
        # the batch size is left to -1 in every reshape: an export with a dynamic batch then needs no shape ops
        h, w = x.shape[-2:]
        heads, d = self.global_heads, self.d
        if self.export_fusions and not self.training and self.pool == 1:  # Q, K, V all read x: one conv, one split
            weight = torch.cat([self.global_q.weight, self.global_kv.weight])
            bias = None if self.global_q.bias is None else torch.cat([self.global_q.bias, self.global_kv.bias])
            q, k, v = F.conv2d(x, weight, bias).chunk(3, dim=1)  # channels [Q | K | V]
            q = q.reshape(-1, heads, d, h * w).transpose(-1, -2)
        else:
            q = self.global_q(x).reshape(-1, heads, d, h * w).transpose(-1, -2)
            k, v = self.global_kv(pooled).chunk(2, dim=1)  # channels [K | V]
        m = pooled.shape[-2] * pooled.shape[-1]
        k = k.reshape(-1, heads, d, m).transpose(-1, -2)
        v = v.reshape(-1, heads, d, m).transpose(-1, -2)
        # softmax(Q K^T d^-1/2) V written out (as the official code): at <= 49 keys as fast as the fused kernel in
        # eager, and 5 ONNX nodes where the exporter's generic SDPA takes 11
        out = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1) @ v  # (B, h_g, H*W, d)
        return out.transpose(-1, -2).reshape(-1, heads * d, h, w)

    def single_key_global(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """The global heads when the pooled map is 1 x 1: softmax over one key is 1, so every query receives
        that key's V: V broadcast over (H, W). The same numbers as `global_attention` without Q, K, the matmuls
        and the softmax (at a 48-px input the pooled map of stages 1-3 is 1 x 1, at 32 px that of every stage).
        -> (B, h_g * d, H, W)."""
        c_g = self.global_heads * self.d
        kv_w, kv_b = self.global_kv.weight, self.global_kv.bias
        v = F.conv2d(pooled, kv_w[c_g:], None if kv_b is None else kv_b[c_g:])  # channels [K | V]: V only
        return v.expand(-1, -1, x.shape[-2], x.shape[-1])

    def single_key_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The output split by the linearity of `proj` when the pooled map is 1 x 1 (and there are local heads):
        proj([local | V broadcast]) = P_l local + (P_g V + b): -> (P_l local (B, C, H, W) without bias, the
        per-image constant P_g (W_v pooled + b_v) + b (B, C, 1, 1), P_g W_v folded into one 1x1 conv), or None
        when the map has more than one pooled key. The block adds the constant to its residual input (a broadcast
        add) instead of expanding V over (H, W) and concatenating it; the same numbers up to float rounding."""
        if not (self.local_heads and self.global_heads):
            return None
        pooled = self.avgpool(x)
        if pooled.shape[-2] * pooled.shape[-1] != 1:  # static under tracing and export
            return None
        c_l, c_g = self.local_heads * self.d, self.global_heads * self.d
        p_w = self.proj.weight[:, :, 0, 0]
        v_w, v_b = self.global_kv.weight[c_g:, :, 0, 0], self.global_kv.bias
        weight = (p_w[:, c_l:] @ v_w)[:, :, None, None]
        bias = None if v_b is None else p_w[:, c_l:] @ v_b[c_g:]
        if self.proj.bias is not None:
            bias = self.proj.bias if bias is None else bias + self.proj.bias
        return F.conv2d(self.local_attention(x), self.proj.weight[:, :c_l]), F.conv2d(pooled, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.local_heads:
            parts.append(self.local_attention(x))
        if self.global_heads:
            pooled = self.avgpool(x)
            single = pooled.shape[-2] * pooled.shape[-1] == 1  # static under tracing and export
            parts.append(self.single_key_global(x, pooled) if single else self.global_attention(x, pooled))
        return self.proj(torch.cat(parts, 1))


class ErfGELU(nn.Module):
    """Exact (erf) GELU written as x * (1 + erf(x / sqrt 2)) * 0.5: nn.GELU's numbers (to 1 float32 ulp), and
    onnxruntime fuses this order into one Gelu node, where the exporter's own x * (0.5 * (1 + erf(...))) stays
    5 nodes (Div, Erf, Add, Mul, Mul)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 + torch.erf(x / math.sqrt(2.0))) * 0.5


class ConvFFN(nn.Module):
    """1x1 (C -> rC) -> GELU -> depthwise k x k (stride s) -> 1x1 (-> C_out). (B, C, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, dim: int, hidden: int, kernel: int, stride: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = ErfGELU()
        self.dwconv = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, out_dim, 1)
        self.export_fusions = False  # see `set_export_fusions`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.fc1(x))
        dw = self.dwconv
        if self.export_fusions and not self.training and dw.stride == (1, 1):
            y = cropped_same_conv(y, dw.weight, dw.bias, dw.groups)
        else:
            y = dw(y)
        return self.fc2(y)


class CloBlock(nn.Module):
    """Attention half at the input resolution, then the ConvFFN half (stride 2 in a stage's last block)."""

    def __init__(self, dim: int, out_dim: int, heads: int, group_split, kernel: int, pool: int, mlp_kernel: int,
                 mlp_ratio: int, stride: int, drop_path: float):
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.attn = CloAttention(dim, heads, group_split, kernel, pool)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = GroupNorm1(dim)
        if stride == 1 and out_dim == dim:
            self.downsample = nn.Identity()
        else:
            self.downsample = nn.Sequential(nn.Conv2d(dim, dim, mlp_kernel, stride, mlp_kernel // 2),
                                            nn.BatchNorm2d(dim), nn.Conv2d(dim, out_dim, 1))
        self.mlp = ConvFFN(dim, dim * mlp_ratio, mlp_kernel, stride, out_dim)

    def forward_attention(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if not self.training and self.attn.inference_rewrites:
            split = self.attn.single_key_split(y)
            if split is not None:  # x + proj([local | V broadcast]) = (x + constant) + P_l local
                local, constant = split
                return (x + constant) + local
        return x + self.drop_path(self.attn(y))

    def forward_ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_ffn(self.forward_attention(x))


class CloLayer(nn.Module):
    """One stage: `blocks` (the last one downsamples unless it is the final stage)."""

    def __init__(self, blocks: list[CloBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (stage feature at this stage's resolution, input of the next stage)."""
        for blk in self.blocks[:-1]:
            x = blk(x)
        feature = self.blocks[-1].forward_attention(x)
        return feature, self.blocks[-1].forward_ffn(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


def set_inference_rewrites(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch CloFormer's exact inference rewrites (eval mode only: Q/K/V as three conv pairs, single-key global
    heads folded into the residual add) on or off in every CloAttention of `model`; returns `model`. On by
    default; off gives the training-mode graph (for comparisons and tests)."""
    for mod in model.modules():
        if isinstance(mod, CloAttention):
            mod.inference_rewrites = bool(enabled)
    return model


def set_export_fusions(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch CloFormer's exact export fusions (eval mode only; off by default, weights untouched) in every
    CloAttention / ConvFFN of `model`; returns `model`. On: stride-1 depthwise kernels wider than the map are
    cropped (`cropped_same_conv`), and where the global heads pool by 1 (stage 4) Q, K and V come from one 1x1
    conv over the concatenated weights and one split instead of two convs. Combine with `fold_norm_affines` on
    a copy for the export path of `fovea.label.export`."""
    for mod in model.modules():
        if isinstance(mod, (CloAttention, ConvFFN)):
            mod.export_fusions = bool(enabled)
    return model


def _fold_affine_into_conv(conv: nn.Conv2d, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """conv(gamma * n + beta) = conv'(n) for a 1x1 conv: W' = W diag(gamma), b' = b + W beta (in place)."""
    w = conv.weight
    if w.shape[-2:] != (1, 1) or conv.groups != 1:
        raise ConfigError(f"fold_norm_affines: a per-channel affine folds only into a dense 1x1 conv, got {conv}.")
    b = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    new_b = b + w[:, :, 0, 0] @ beta
    conv.weight.copy_(w * gamma[None, :, None, None])
    if conv.bias is None:
        conv.bias = nn.Parameter(new_b)
    else:
        conv.bias.copy_(new_b)


@torch.no_grad()
def fold_norm_affines(model: nn.Module) -> nn.Module:
    """Fold the per-channel affine of every GroupNorm1 that feeds only 1x1 convs (through linear ops) into those
    convs' weights, in place; returns `model`. Blocks: norm1 -> local Q/K/V conv, global Q conv, average pool ->
    global K/V conv (pooling is linear and per channel, so pool(g n + b) = g pool(n) + b); norm2 -> ConvFFN fc1;
    the head norm -> mean -> Linear. The norms then run without an affine (one LayerNormalization with no
    scale/bias work). The patch-embedding norm feeds the residual stream and keeps its affine. Only for an
    inference copy: the parameter counts stay, the numbers equal the unfolded model's up to float rounding."""
    for mod in model.modules():
        if isinstance(mod, CloBlock):
            g1, b1 = mod.norm1.weight.detach().clone(), mod.norm1.bias.detach().clone()
            attn = mod.attn
            convs = list(attn.qkvs) + ([attn.global_q, attn.global_kv] if attn.global_heads else [])
            for conv in convs:
                _fold_affine_into_conv(conv, g1, b1)
            mod.norm1.affine_folded = True
            _fold_affine_into_conv(mod.mlp.fc1, mod.norm2.weight.detach().clone(), mod.norm2.bias.detach().clone())
            mod.norm2.affine_folded = True
        elif isinstance(mod, CloFormer) and isinstance(mod.head, nn.Linear) and isinstance(mod.norm, GroupNorm1) \
                and mod.global_pool == "avg":
            g, b = mod.norm.weight.detach().clone(), mod.norm.bias.detach().clone()
            mod.head.bias.copy_(mod.head.bias + mod.head.weight @ b)
            mod.head.weight.copy_(mod.head.weight * g[None, :])
            mod.norm.affine_folded = True
    return model


# ----------------------------------------------------------------------------------- model

class CloFormer(nn.Module):
    """(B, 3, H, W) -> logits (B, num_classes); H, W divisible by 32 (and by 32 * pool at stage 1 for
    exact pooling: 256 at 224-px-like maps is fine since pooling floors)."""

    def __init__(self, cfg: CloFormerConfig, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float | None = None, global_pool: str = "avg"):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = cfg.dims[-1]
        dpr = drop_path_rates(cfg.depths, cfg.drop_path_rate if drop_path_rate is None else drop_path_rate)
        self.patch_embed = PatchEmbedding(in_chans, cfg.dims[0])
        layers = []
        for i, depth in enumerate(cfg.depths):
            last = i == len(cfg.depths) - 1
            out_dim = cfg.dims[i] if last else cfg.dims[i + 1]
            blocks = [CloBlock(cfg.dims[i], cfg.dims[i] if j < depth - 1 else out_dim, cfg.heads[i],
                               cfg.group_splits[i], cfg.local_kernels[i], cfg.pool_sizes[i], cfg.mlp_kernel,
                               cfg.mlp_ratio, 2 if (j == depth - 1 and not last) else 1, dpr[i][j])
                      for j in range(depth)]
            layers.append(CloLayer(blocks))
        self.layers = nn.ModuleList(layers)
        self.norm = GroupNorm1(cfg.dims[-1])
        self.head = nn.Linear(cfg.dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=c, reduction=4 * 2 ** i, module=f"layers.{i}") for i, c in enumerate(cfg.dims)]
        self.apply(init_weights)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C4, H/32, W/32), before the head norm."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C4, h, w) -> logits (B, num_classes), or pooled features (B, C4) with `pre_logits`."""
        x = self.norm(x)
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Stage features (B, C_i, H/4/2^i, W/4/2^i): each stage after its last block's attention half
        (before the strided ConvFFN); the last stage after all blocks (head norm with `norm`)."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        feats = []
        x = self.patch_embed(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == last:
                x = layer(x)
                feature = self.norm(x) if norm else x
            else:
                feature, x = layer.forward_features(x)
            if i in take:
                feats.append(feature)
            if stop_early and i >= max_index:
                break
        return feats if intermediates_only else (x, feats)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        if prune_norm or max_index < len(self.layers) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


# ----------------------------------------------------------------------------------- timm

def _create(variant: str, pretrained: bool = False, **kwargs) -> CloFormer:
    cfg = kwargs.pop("cfg", None) or CLOFORMER_CONFIGS[variant]
    return build_model_with_cfg(CloFormer, variant, pretrained, cfg=cfg,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"), **kwargs)


default_cfgs = generate_default_cfgs({name: {**default_cfg("head"), "first_conv": "patch_embed.conv1.conv.0",
                                             "license": "mit"} for name in CLOFORMER_CONFIGS})


@register_model
def cloformer_xxs(pretrained: bool = False, **kwargs) -> CloFormer:
    """CloFormer-XXS: 4.17 M parameters (paper 4.2 M); 0.667 GFLOPs (paper 0.6, see the module docstring)."""
    return _create("cloformer_xxs", pretrained, **kwargs)


@register_model
def cloformer_xs(pretrained: bool = False, **kwargs) -> CloFormer:
    """CloFormer-XS: 7.17 M parameters (paper 7.2 M); 1.228 GFLOPs (paper 1.1, see the module docstring)."""
    return _create("cloformer_xs", pretrained, **kwargs)


@register_model
def cloformer_s(pretrained: bool = False, **kwargs) -> CloFormer:
    """CloFormer-S: 12.35 M parameters (paper 12.3 M); 2.182 GFLOPs (paper 2.0, see the module docstring)."""
    return _create("cloformer_s", pretrained, **kwargs)
