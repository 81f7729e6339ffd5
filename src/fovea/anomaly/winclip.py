"""WinCLIP (Jeong et al., CVPR 2023): zero- and few-shot anomaly detection from a vision-language model.

Zero-shot: a compositional prompt ensemble (state words x templates, e.g. "a photo of a damaged
{object}.") gives one normal and one anomalous text prototype; an embedding scores
softmax(cos(e, [normal, anomalous]) / 0.07)[anomalous]. Windows of k x k feature-grid cells
(k in `scales`, stride 1) are embedded and scored; a cell's score at scale k is the harmonic mean of
the scores of the windows covering it; the map is the harmonic mean of the image score and the
per-scale maps, upsampled bilinearly to the input. WinCLIP+ (k_shot > 0): the patch and window
embeddings of k normal images are a memory; association score (1 - max cos) / 2 per patch / window,
windows harmonically aggregated, averaged over scales, averaged with the zero-shot map; image score =
(zero-shot image score + max of the few-shot map) / 2.

Towers (a small two-tower protocol, `_Tower`): fovea's two-tower model (`fovea.models.vl`; a window
embedding = the projection of the trunk's feature map averaged over the window, which is how the
tower pools a whole image), or an open_clip ViT (`tower="open_clip"`; a window = the class token plus
the window's patch tokens re-run through the transformer, as in the paper). Text prototypes and the
few-shot memory are computed in `fit` and saved as buffers; inference needs only the image side.

Deviations from anomalib's implementation: every prompt embedding is L2-normalised before the
ensemble mean (open_clip's zero-shot builder; anomalib averages raw embeddings), and its duplicated
template "a jpeg corrupted photo of the {}." is replaced by the intended "... of a {}.".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import ConfigError, DataError

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.",
    "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- pure functions
def prompt_ensemble(object_name: str, normal_states: Sequence[str] = NORMAL_STATES,
                    anomalous_states: Sequence[str] = ANOMALOUS_STATES,
                    templates: Sequence[str] = TEMPLATES) -> tuple[list[str], list[str]]:
    """Every template x every state, for the normal and the anomalous states."""
    if not object_name.strip():
        raise ConfigError("WinCLIP object_name is empty. Fix: name what the images show, e.g. 'tray of bricks'.")
    for s in (*normal_states, *anomalous_states, *templates):
        if "{}" not in s:
            raise ConfigError(f"WinCLIP prompt part {s!r} has no '{{}}' placeholder. Fix: add one.")
    normal = [t.format(s.format(object_name)) for s in normal_states for t in templates]
    anomalous = [t.format(s.format(object_name)) for s in anomalous_states for t in templates]
    return normal, anomalous


def text_prototypes(normal_emb: torch.Tensor, anomalous_emb: torch.Tensor) -> torch.Tensor:
    """(P_n, D), (P_a, D) prompt embeddings -> (2, D): per-prompt normalised, averaged, re-normalised."""
    protos = [F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1) for e in (normal_emb, anomalous_emb)]
    return torch.stack(protos)


def class_scores(emb: torch.Tensor, text: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """(..., D) unit embeddings, (2, D) [normal, anomalous] prototypes -> (...) anomalous probability."""
    return torch.softmax(emb @ text.t() / temperature, dim=-1)[..., 1]


def window_cells(grid_h: int, grid_w: int, k: int, stride: int = 1) -> torch.Tensor:
    """Row-major cell indices of every k x k window on the grid: (M, k * k), M = n_h * n_w windows."""
    if k > min(grid_h, grid_w):
        raise ConfigError(f"WinCLIP window scale {k} exceeds the {grid_h}x{grid_w} feature grid. Fix: use smaller "
                          "scales or a larger input size.")
    idx = torch.arange(grid_h * grid_w).reshape(grid_h, grid_w)
    wins = idx.unfold(0, k, stride).unfold(1, k, stride)  # (n_h, n_w, k, k)
    return wins.reshape(-1, k * k)


def window_incidence(cells: torch.Tensor, n_cells: int) -> torch.Tensor:
    """(M, k*k) cell indices -> (M, N) 0/1 matrix: window m covers cell n."""
    inc = torch.zeros(cells.shape[0], n_cells)
    inc.scatter_(1, cells, 1.0)
    return inc


def harmonic_aggregation(window_scores: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
    """(B, M) window scores -> (B, N) per cell: harmonic mean of the scores of the windows covering it."""
    inv_sum = (1.0 / window_scores.clamp_min(1e-12)) @ incidence
    return incidence.sum(0) / inv_sum


def association_scores(emb: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """(B, M, D) unit embeddings vs (R, D) unit memory -> (B, M): (1 - max cosine) / 2 = nearest-memory distance."""
    return (1.0 - (emb @ memory.t()).amax(-1)) / 2.0


# --------------------------------------------------------------------------- towers
class _Tower(nn.Module):
    """Image side of a two-tower model. tokens(x) -> (tokens, grid (h, w)); full(tokens) -> (image (B, D),
    patches (B, N, D)); windows(tokens, cells (M, k*k), incidence (M, N)) -> (B, M, D). All unit length."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int = 0  # the input size the tower was trained at (0 = none)
    embed_dim: int = 0


class FoveaTower(_Tower):
    """fovea's two-tower image side: timm trunk feature map (B, C, h, w) + `proj` Linear(C -> D)."""

    def __init__(self, trunk: nn.Module, proj: nn.Linear):
        super().__init__()
        self.trunk, self.proj = trunk, proj
        self.embed_dim = int(proj.out_features)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        f = self.trunk.forward_features(x)
        return f.flatten(2).transpose(1, 2), (int(f.shape[-2]), int(f.shape[-1]))

    def full(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.proj(tokens.mean(1)), dim=-1), F.normalize(self.proj(tokens), dim=-1)

    def windows(self, tokens: torch.Tensor, cells: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
        pooled = (incidence / incidence.sum(1, keepdim=True)) @ tokens  # (B, M, C) window means
        return F.normalize(self.proj(pooled), dim=-1)


class OpenClipTower(_Tower):
    """open_clip ViT image side (`model.visual`). Window = [class token] + the window's patch tokens (with
    their positional embeddings) through ln_pre, the transformer, pooling and the projection."""

    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, visual: nn.Module):
        super().__init__()
        if not hasattr(visual, "conv1") or not hasattr(visual, "class_embedding"):
            raise ConfigError(f"{type(visual).__name__} is not an open_clip VisionTransformer. Fix: use a ViT "
                              "open_clip model (e.g. ViT-B-16-plus-240).")
        self.visual = visual
        self.embed_dim = int(visual.output_dim)
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        v = self.visual
        f = v.conv1(x)
        grid = (int(f.shape[-2]), int(f.shape[-1]))
        t = f.flatten(2).transpose(1, 2) + v.positional_embedding[1:].to(f.dtype)
        return t, grid

    def _encode(self, seq_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, L, W) patch tokens -> class token prepended, transformer, pooled (S, D) and tokens (S, L, D)."""
        v = self.visual
        cls = (v.class_embedding + v.positional_embedding[0]).to(seq_tokens.dtype)
        x = torch.cat([cls.expand(seq_tokens.shape[0], 1, -1), seq_tokens], dim=1)
        x = v.transformer(v.ln_pre(x))
        pooled, toks = v._pool(x)
        if v.proj is not None:
            pooled, toks = pooled @ v.proj, toks @ v.proj
        return pooled, toks

    def full(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, toks = self._encode(tokens)
        return F.normalize(pooled, dim=-1), F.normalize(toks, dim=-1)

    def windows(self, tokens: torch.Tensor, cells: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
        b, m = tokens.shape[0], cells.shape[0]
        picked = tokens[:, cells.reshape(-1)].reshape(b * m, cells.shape[1], tokens.shape[-1])
        pooled, _ = self._encode(picked)
        return F.normalize(pooled, dim=-1).reshape(b, m, -1)


# --------------------------------------------------------------------------- the model
@dataclass
class WinCLIPConfig:
    """tower: "fovea" (fovea two-tower: `tower_path` folder, or the cached model trained on generated captions
    when None) or "open_clip" (`open_clip_model` config, weights from the local file `open_clip_checkpoint`;
    nothing downloads). weights="random": random-initialised towers (tests; checkpoints reload over them).
    backbone/layers/seed/epochs are the common CLI options, unused."""

    tower: str = "fovea"
    tower_path: str | None = None
    tower_config: dict = field(default_factory=dict)  # fovea TwoTowerConfig; filled when the tower is built
    open_clip_model: str = "ViT-B-16-plus-240"
    open_clip_checkpoint: str | None = None
    object_name: str = "object"
    normal_states: tuple[str, ...] = NORMAL_STATES
    anomalous_states: tuple[str, ...] = ANOMALOUS_STATES
    templates: tuple[str, ...] = TEMPLATES
    scales: tuple[int, ...] = (2, 3)
    k_shot: int = 0                   # 0 = zero-shot; k = WinCLIP+ with the first k training images
    temperature: float = 0.07
    image_size: int = 0               # tower input size; 0 = the size the tower was trained at
    weights: str | None = "default"
    backbone: str = ""
    layers: tuple[int, ...] = ()
    seed: int = 0
    epochs: int = 0

    def __post_init__(self) -> None:
        for name in ("normal_states", "anomalous_states", "templates", "scales", "layers"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.tower not in ("fovea", "open_clip"):
            raise ConfigError(f"WinCLIP tower={self.tower!r}. Fix: 'fovea' or 'open_clip'.")
        if self.k_shot < 0 or any(int(k) < 1 for k in self.scales) or self.temperature <= 0:
            raise ConfigError(f"WinCLIP needs k_shot >= 0, scales >= 1 and temperature > 0; got k_shot={self.k_shot}, "
                              f"scales={self.scales}, temperature={self.temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


def _build_fovea(cfg: WinCLIPConfig):
    """(image tower, full two-tower model or None). weights="random": the image side of `tower_config`,
    random-initialised (checkpoints reload over it); the text side is then built only if `fit` needs it."""
    import fovea.models  # noqa: F401  (registers fovea's own backbones in timm before create_backbone)
    from fovea.models.vl import TwoTowerConfig, load_two_tower
    from fovea.weights import create_backbone

    full = None
    if cfg.weights == "random":
        tc = TwoTowerConfig.from_dict(cfg.tower_config or {})
        trunk = create_backbone(tc.image_backbone, weights="random", num_classes=0)
        proj, size = nn.Linear(trunk.num_features, tc.embed_dim, bias=False), tc.image_size
    else:
        if cfg.tower_path:
            full = load_two_tower(cfg.tower_path)
        else:
            from fovea.vl.pretrained import trained_two_tower

            full = trained_two_tower()
        tc = full.config
        trunk, proj, size = full.visual.trunk, full.visual.head.proj, full.config.image_size
    cfg.tower_config = asdict(tc)
    tower = FoveaTower(trunk, proj)
    tower.image_size = int(size)
    return tower, full


def _random_text_side(cfg: WinCLIPConfig):
    """A random-initialised two-tower model of `tower_config` (weights="random"): its text side only is used."""
    from fovea.models.vl import TwoTowerConfig, build_two_tower

    return build_two_tower(TwoTowerConfig.from_dict({**cfg.tower_config, "image_weights": "random",
                                                    "text_pretrained": False}))


def _build_open_clip(cfg: WinCLIPConfig):
    import open_clip

    ckpt = None if cfg.weights == "random" else cfg.open_clip_checkpoint
    model = open_clip.create_model(cfg.open_clip_model, pretrained=ckpt)
    model.eval()
    return OpenClipTower(model.visual), model


class WinCLIP(nn.Module):
    """forward(x (B, 3, H, W) ImageNet-normalised) -> (scores (B,), maps (B, 1, H, W)) in probability units."""

    def __init__(self, config: WinCLIPConfig | None = None, **overrides):
        super().__init__()
        self.config = config or WinCLIPConfig(**overrides)
        cfg = self.config
        tower, full = (_build_fovea if cfg.tower == "fovea" else _build_open_clip)(cfg)
        self.tower = tower.eval()
        for p in self.tower.parameters():
            p.requires_grad_(False)
        self.__dict__["two_tower"] = full  # text side, used by `fit` only; never saved
        dim = self.tower.embed_dim
        self.register_buffer("text_embeddings", torch.zeros(2, dim))
        self.register_buffer("memory_patches", torch.zeros(0, dim))
        for i in range(len(cfg.scales)):
            self.register_buffer(f"memory_windows_{i}", torch.zeros(0, dim))
        t_mean, t_std = torch.tensor(self.tower.mean), torch.tensor(self.tower.std)
        # ImageNet-normalised input -> the tower's normalisation: x * a + b per channel
        self.register_buffer("norm_scale", (torch.tensor(IMAGENET_STD) / t_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("norm_shift", ((torch.tensor(IMAGENET_MEAN) - t_mean) / t_std).view(1, 3, 1, 1),
                             persistent=False)
        self.history: list[dict] = []

    def train(self, mode: bool = True) -> "WinCLIP":
        super().train(mode)
        self.tower.eval()  # never trained
        return self

    # --- embeddings -------------------------------------------------------------------------------------
    def _tower_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.norm_scale + self.norm_shift
        size = self.config.image_size or self.tower.image_size
        if size and (x.shape[-2] != size or x.shape[-1] != size):
            x = F.interpolate(x, size=[size, size], mode="bilinear", align_corners=False)
        return x

    def embed(self, x: torch.Tensor):
        """(B, 3, H, W) -> image (B, D), patches (B, N, D), [windows (B, M_k, D) per scale], grid, incidences."""
        tokens, grid = self.tower.tokens(self._tower_input(x))
        image, patches = self.tower.full(tokens)
        n = grid[0] * grid[1]
        windows, incidences = [], []
        for k in self.config.scales:
            cells = window_cells(grid[0], grid[1], int(k)).to(x.device)
            inc = window_incidence(cells, n).to(device=x.device, dtype=tokens.dtype)
            windows.append(self.tower.windows(tokens, cells, inc))
            incidences.append(inc)
        return image, patches, windows, grid, incidences

    # --- fit: text prototypes and the few-shot memory --------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """list of P prompts -> (P, D) text embeddings from the tower's text side."""
        full = self.two_tower
        if full is None:
            full = self.__dict__["two_tower"] = _random_text_side(self.config)
        with torch.no_grad():
            if self.config.tower == "fovea":
                return full.encode_text(list(prompts))
            import open_clip

            tokens = open_clip.get_tokenizer(self.config.open_clip_model)(list(prompts))
            return F.normalize(full.encode_text(tokens), dim=-1)

    def fit(self, train_loader: Iterable, progress=None) -> None:
        """Text prototypes from the prompt ensemble; with k_shot > 0 the memory of the first k normal images."""
        cfg = self.config
        normal, anomalous = prompt_ensemble(cfg.object_name, cfg.normal_states, cfg.anomalous_states, cfg.templates)
        self.text_embeddings = text_prototypes(self.encode_prompts(normal), self.encode_prompts(anomalous))
        if cfg.k_shot:
            shots, have = [], 0
            for b in train_loader:
                x = (b["image"] if isinstance(b, dict) else b).detach().float()
                shots.append(x[: cfg.k_shot - have])
                have += len(shots[-1])
                if have >= cfg.k_shot:
                    break
            if have < cfg.k_shot:
                raise DataError(f"WinCLIP k_shot={cfg.k_shot} needs that many normal images, got {have}. Fix: "
                                "give more training images or lower k_shot.")
            with torch.no_grad():
                _, patches, windows, _, _ = self.embed(torch.cat(shots))
            self.memory_patches = patches.reshape(-1, patches.shape[-1])
            for i, w in enumerate(windows):
                setattr(self, f"memory_windows_{i}", w.reshape(-1, w.shape[-1]))
        if progress:
            progress(1, 1)
        self.eval()

    # --- inference ----------------------------------------------------------------------------------------
    def zero_shot(self, image: torch.Tensor, windows: list[torch.Tensor], incidences: list[torch.Tensor],
                  grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores (B,) and the harmonic multi-scale map (B, h, w)."""
        t = self.config.temperature
        img_scores = class_scores(image, self.text_embeddings, t)
        maps = [img_scores[:, None].expand(-1, grid[0] * grid[1])]
        for w, inc in zip(windows, incidences):
            maps.append(harmonic_aggregation(class_scores(w, self.text_embeddings, t), inc))
        stacked = torch.stack(maps)
        harmonic = len(maps) / (1.0 / stacked.clamp_min(1e-12)).sum(0)
        return img_scores, harmonic.reshape(-1, grid[0], grid[1])

    def few_shot(self, patches: torch.Tensor, windows: list[torch.Tensor], incidences: list[torch.Tensor],
                 grid: tuple[int, int]) -> torch.Tensor:
        """Mean over [patch scale, window scales] of nearest-memory distances: (B, h, w)."""
        maps = [association_scores(patches, self.memory_patches)]
        for i, (w, inc) in enumerate(zip(windows, incidences)):
            maps.append(harmonic_aggregation(association_scores(w, getattr(self, f"memory_windows_{i}")), inc))
        return torch.stack(maps).mean(0).reshape(-1, grid[0], grid[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, patches, windows, grid, incidences = self.embed(x)
        scores, grid_map = self.zero_shot(image, windows, incidences, grid)
        if self.config.k_shot:
            fs = self.few_shot(patches, windows, incidences, grid)
            grid_map = (grid_map + fs) / 2.0
            scores = (scores + fs.flatten(1).amax(1)) / 2.0
        maps = F.interpolate(grid_map[:, None], size=[x.shape[-2], x.shape[-1]], mode="bilinear",
                             align_corners=False)
        return scores, maps
