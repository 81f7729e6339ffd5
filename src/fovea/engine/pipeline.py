"""The uint8-in pipeline every task builds on: input -> resize -> normalise -> network -> post-process.

A task subclasses `TaskPipeline`, gives it its `network` (the fixed-size part that sees
normalised (B, 3, h, w) float input) and overrides `postprocess`. Three views of one module:

- `pipe(images)` / `pipe.raw(images)`: uint8 (B, H, W, 3) -> the network's raw outputs (logits,
  raw anomaly scores and maps): the training graph, what losses and threshold fitting see;
- `pipe.infer(images)`: raw outputs -> `postprocess(outputs, H, W)`: the task's answer at the
  images' own size (probabilities, normalised maps);
- `InferenceGraph(pipe)`: a module whose forward is `pipe.infer`; in-process predictors run it and
  TorchScript/ONNX exports contain it, so an exported model answers as the trained one does.

The normalisation constants are buffers (`pixel_mean`, `pixel_std`, in 0..255 units), so they are
saved with the weights and travel inside every export. Subclasses name their task (`task`), the
names of their inference outputs (`output_names`) and how to rebuild themselves from a recipe
config (`from_config` / `config`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fovea.weights import IMAGENET_MEAN, IMAGENET_STD


class TaskPipeline(nn.Module):
    """uint8 images (B, H, W, 3) -> task outputs; `network` maps (B, 3, h, w) normalised float -> raw outputs.

    input_size: (h, w) the network sees (bilinear, antialiased resize). channels_last: hand the
    network a channels-last tensor (faster convolutions for timm CNNs).
    """

    task: ClassVar[str] = ""
    output_names: ClassVar[tuple[str, ...]] = ("output",)

    def __init__(self, network: nn.Module, input_size: Sequence[int], *, channels_last: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.network = network
        self.input_h, self.input_w = int(input_size[0]), int(input_size[1])
        self.channels_last = bool(channels_last)
        self.register_buffer("pixel_mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("pixel_std", torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    # --- the graph -----------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, h, w): bilinear antialiased resize, then (x - mean) / std."""
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=[self.input_h, self.input_w], mode="bilinear", align_corners=False,
                          antialias=True)
        x = (x - self.pixel_mean) / self.pixel_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def raw(self, images: torch.Tensor):
        """uint8 (B, H, W, 3) -> the network's raw outputs at model resolution."""
        return self.network(self.preprocess(images))

    def forward(self, images: torch.Tensor):
        """The training graph: same as `raw`."""
        return self.raw(images)

    def postprocess(self, outputs, height: int, width: int):
        """Raw outputs -> the task's answer at the input images' (height, width). Identity by default."""
        return outputs

    def infer(self, images: torch.Tensor):
        """uint8 (B, H, W, 3) -> post-processed outputs (the exported graph)."""
        return self.postprocess(self.raw(images), images.shape[1], images.shape[2])

    # --- the recipe ----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able dict that `from_config` rebuilds this pipeline from (weights aside)."""
        raise NotImplementedError(f"{type(self).__name__} must define config()")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TaskPipeline":
        """A pipeline of the saved architecture with random weights, ready for `load_state_dict`."""
        raise NotImplementedError(f"{cls.__name__} must define from_config()")


class InferenceGraph(nn.Module):
    """forward(images uint8 (B, H, W, 3)) = `pipeline.infer(images)`: what predictors run and exports hold."""

    def __init__(self, pipeline: TaskPipeline):
        super().__init__()
        self.pipeline = pipeline

    def forward(self, images: torch.Tensor):
        return self.pipeline.infer(images)
