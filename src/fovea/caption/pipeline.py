"""The caption task on the task layer: uint8 images -> greedy caption token ids and their log-probabilities.

The network decodes a fixed number of steps without a cache (no data-dependent control flow), so the same
graph runs in-process and inside TorchScript / ONNX exports; the predictor cuts each row at the end token
and turns ids into words with the vocabulary stored in the recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fovea.caption.vocab import BOS, Vocab
from fovea.engine.pipeline import TaskPipeline
from fovea.models.captioner import Captioner, CaptionerConfig


class CaptionNetwork(nn.Module):
    """(B, 3, h, w) normalised -> tokens (B, L) int64, logprobs (B, L)."""

    def __init__(self, captioner: Captioner):
        super().__init__()
        self.captioner = captioner

    def forward(self, x: torch.Tensor):
        return self.captioner.generate(self.captioner.image_tokens(x), BOS)


class CaptionPipeline(TaskPipeline):
    task = "caption"
    output_names = ("tokens", "logprobs")

    def __init__(self, captioner: Captioner, vocab: Vocab, input_size=(96, 96)):
        super().__init__(CaptionNetwork(captioner), input_size)
        self.vocab = vocab

    def postprocess(self, outputs: tuple[torch.Tensor, torch.Tensor], height: int, width: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs

    @property
    def captioner(self) -> Captioner:
        return self.network.captioner

    def config(self) -> dict[str, Any]:
        return {"captioner": self.captioner.cfg.to_dict(), "vocab": list(self.vocab.tokens),
                "input_size": [self.input_h, self.input_w]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CaptionPipeline":
        cfg = CaptionerConfig.from_dict({**config["captioner"], "weights": "random"})
        return cls(Captioner(cfg), Vocab(config["vocab"]), tuple(config["input_size"]))
