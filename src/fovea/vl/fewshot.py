"""Few-shot adaptation of a two-tower model: CoOp prompt learning and a linear probe.

- CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022): the class prompt
  becomes [CLS] v_1 ... v_M <class name> [SEP] (class token at the end); the M context vectors (shared
  by all classes, in the text tower's token-embedding space) are the only trained parameters; both
  towers stay frozen. The paper's recipe (its configs `rn50_ep50/ep100/rn50.yaml`): M = 16 random
  N(0, 0.02) vectors (or M = 4 from the words "a photo of a"), SGD lr 0.002 momentum 0.9, cosine
  schedule, batch 32, one warm-up epoch at constant lr 1e-5, 50 / 100 / 200 epochs for 1-2 / 4-8 / 16
  shots, cross-entropy over the model's own logit scale x cos(image, class embedding) (CLIP's learned
  100; here the two-tower's learned temperature).
- Linear probe: multinomial logistic regression on the frozen image embeddings (CLIP paper's baseline).

Both take image trunk features (N, F) of the labelled images (`TwoTower.image_trunk_features`), so
the image tower runs once per image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import ConfigError
from fovea.models.vl.text import ClipTextTransformer, MiniLMTextTower
from fovea.models.vl.two_tower import TwoTower

__all__ = ["CoOpPrompts", "coop_epochs", "fit_coop", "fit_linear_probe"]


class CoOpPrompts(nn.Module):
    """Learnable context (M, width) before each class name; forward() -> (C, D) unit class embeddings."""

    def __init__(self, model: TwoTower, class_names: Sequence[str], n_ctx: int = 4, init: str | None = "a photo of a"):
        super().__init__()
        if not isinstance(model.text, (MiniLMTextTower, ClipTextTransformer)):
            raise ConfigError(f"CoOp supports the MiniLM and CLIP text towers, not {type(model.text).__name__}.")
        self.model = [model]  # not a submodule: the towers stay frozen and out of this module's state
        tok = model.text.tokenize(list(class_names))
        self.register_buffer("ids", tok["input_ids"], persistent=False)
        mask = tok.get("attention_mask", torch.ones_like(tok["input_ids"]))
        self.register_buffer("mask", mask, persistent=False)
        with torch.no_grad():
            if init:
                init_ids = model.text.tokenize([init])["input_ids"][0]
                end = int((init_ids != 0).sum()) - 1 if isinstance(model.text, MiniLMTextTower) else \
                    int(init_ids.argmax())  # [SEP] (MiniLM, pad id 0) / end-of-text (CLIP, highest id)
                vec = model.text.token_embeddings(init_ids[None, 1:end])[0]
                n_ctx = len(vec)
            else:
                vec = torch.randn(n_ctx, model.text.width) * 0.02
        self.ctx = nn.Parameter(vec.clone())
        self.n_ctx = n_ctx

    def forward(self) -> torch.Tensor:
        model = self.model[0]
        emb = model.text.token_embeddings(self.ids)  # (C, L, W)
        c = emb.shape[0]
        ctx = self.ctx.unsqueeze(0).expand(c, -1, -1)
        embeds = torch.cat([emb[:, :1], ctx, emb[:, 1:]], 1)
        if isinstance(model.text, MiniLMTextTower):
            mask = torch.cat([self.mask[:, :1], torch.ones(c, self.n_ctx, dtype=self.mask.dtype), self.mask[:, 1:]], 1)
            feats = model.text.forward_embeddings(embeds, mask)
        else:
            embeds = embeds[:, : model.text.context_length]
            feats = model.text.forward_embeddings(embeds, (self.ids.argmax(-1) + self.n_ctx).clamp(
                max=model.text.context_length - 1))
        return model.project_text(feats)


def coop_epochs(shots: int) -> int:
    """The paper's schedule length: 50 epochs for 1-2 shots per class, 100 for 4-8, 200 for 16 or more."""
    return 50 if shots <= 2 else 100 if shots <= 8 else 200


def fit_coop(model: TwoTower, class_names: Sequence[str], image_feats: torch.Tensor, labels: Sequence[int], *,
             epochs: int | None = None, lr: float = 2e-3, batch_size: int = 32, n_ctx: int = 16,
             init: str | None = None, momentum: float = 0.9, warmup_lr: float = 1e-5,
             logit_scale: float | None = None, seed: int = 0) -> CoOpPrompts:
    """Learn the context vectors on (N, F) trunk features with labels (N,) by the paper's recipe (module
    docstring); returns the prompts module. epochs None: `coop_epochs(shots per class)`; logit_scale None:
    the model's learned temperature. init: words to start the context from (then M = their token count)."""
    torch.manual_seed(seed)
    model.eval()
    prompts = CoOpPrompts(model, class_names, n_ctx=n_ctx, init=init)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if epochs is None:
        epochs = coop_epochs(int(np.bincount(y.numpy()).min()))
    scale = float(model.logit().detach()) if logit_scale is None else float(logit_scale)
    with torch.no_grad():
        img = model.project_image(image_feats)
    opt = torch.optim.SGD([prompts.ctx], lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(int(epochs)):
        # epoch 0: constant warm-up; then cosine from lr towards 0 over the remaining epochs
        rate = warmup_lr if epoch == 0 else 0.5 * lr * (1 + np.cos(np.pi * (epoch - 1) / max(1, epochs - 1)))
        for group in opt.param_groups:
            group["lr"] = rate
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(scale * img[idx] @ prompts().T, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return prompts


def fit_linear_probe(model: TwoTower, image_feats: torch.Tensor, labels: Sequence[int], n_classes: int,
                     weight_decay: float = 1e-3, steps: int = 300) -> nn.Linear:
    """Logistic regression (full-batch L-BFGS) on unit image embeddings; returns the (D -> C) layer."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    with torch.no_grad():
        x = model.project_image(image_feats)
    head = nn.Linear(x.shape[1], n_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=int(steps), line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head
