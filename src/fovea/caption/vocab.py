"""A word-level vocabulary for generated inspection captions: lower-case words and punctuation marks."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

from fovea.errors import ConfigError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """'A bruised apple, small.' -> ['a', 'bruised', 'apple', ',', 'small', '.']"""
    return _TOKEN.findall(text.lower())


class Vocab:
    """Token <-> id, specials first (pad 0, bos 1, eos 2, unk 3); built from captions, saved as its word list."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ConfigError(f"vocabulary must start with {SPECIALS}, got {tokens[:4]}. Fix: build it with "
                              "Vocab.build(captions) or save/load it with its `tokens` list.")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, captions: Iterable[str]) -> "Vocab":
        seen: dict[str, None] = {}
        for c in captions:
            for w in words(c):
                seen.setdefault(w, None)
        return cls([*SPECIALS, *sorted(seen)])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """[bos, words..., eos]; unknown words -> unk."""
        return [BOS, *(self.index.get(w, UNK) for w in words(text)), EOS]

    def batch(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) padded with pad (cut at max_len, keeping eos last) and pad flags (B, T) True on padding."""
        seqs = [self.encode(t) for t in texts]
        seqs = [s if len(s) <= max_len else s[: max_len - 1] + [EOS] for s in seqs]
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), PAD, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, ids == PAD

    def decode(self, ids: Iterable[int]) -> str:
        """Generated ids (no bos) -> text, stopping at eos; punctuation attached to the previous word."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else "<unk>")
        return re.sub(r" ([,.;:!?])", r"\1", " ".join(out))
