"""One checkpoint format for every task: `recipe.json` beside `model.safetensors`.

`recipe.json` = {"task": "anomaly" | "classify" | "segment" | ..., "format": 2, "config": {...},
"info": {...}}: `config` is what the task's `TaskPipeline.from_config` rebuilds the architecture
from; `info` is free-form provenance (training metrics, weights source). `model.safetensors` holds
the whole pipeline's state dict (network weights, normalisation constants, fitted buffers such as
memory banks and thresholds). Nothing is pickled.

The layouts written before this format keep loading (`LEGACY_LAYOUTS`): anomaly and segment
`config.json` + `model.safetensors` (formats "fovea.anomaly/1", "fovea.segment/1"), classify
`classifier.json` + `best.safetensors`. The same recipe dict also travels inside exports
(TorchScript extra file / ONNX metadata), so `Recipe.from_dict` reads both the new and the old
shapes of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fovea.engine.tasks import get_task
from fovea.errors import CheckpointError

RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 2  # the legacy per-task formats were "fovea.anomaly/1", "fovea.segment/1" and classify's unversioned


@dataclass(frozen=True)
class LegacyLayout:
    """A checkpoint layout written before `recipe.json`: file names, how its recipe maps onto the task's
    config, and how its state-dict keys map onto the pipeline's (`key_prefixes`: old prefix -> new)."""

    task: str
    recipe_file: str
    weights_file: str
    key_prefixes: tuple[tuple[str, str], ...]


LEGACY_LAYOUTS: dict[str, LegacyLayout] = {
    "fovea.anomaly/1": LegacyLayout("anomaly", "config.json", "model.safetensors", (("core.", "network."),)),
    "fovea.segment/1": LegacyLayout("segment", "config.json", "model.safetensors", (("", "network."),)),
    "fovea.classify/0": LegacyLayout("classify", "classifier.json", "best.safetensors", (("backbone.", "network."),)),
}


@dataclass
class Recipe:
    """What rebuilds a model of any task: task name, format version, the task's config, provenance.

    legacy: the `LEGACY_LAYOUTS` key this recipe was read from (None for the current format).
    """

    task: str
    config: dict[str, Any]
    format: int = FORMAT_VERSION
    info: dict[str, Any] = field(default_factory=dict)
    legacy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"task": self.task, "format": self.format, "config": self.config}
        if self.info:
            d["info"] = self.info
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> "Recipe":
        """The current shape, or any legacy one (anomaly/segment `format: fovea.*/1`, classify's bare dict)."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: a recipe must be a JSON object, got {type(d).__name__}.")
        if "task" in d:
            version = d.get("format")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise CheckpointError(f"{source}: recipe format {version!r} is not one this fovea reads (<= "
                                      f"{FORMAT_VERSION}). Fix: upgrade fovea, or re-save the model with this version.")
            if not isinstance(d.get("config"), dict):
                raise CheckpointError(f"{source}: the recipe has no 'config' object. Fix: re-save the checkpoint.")
            return cls(str(d["task"]), dict(d["config"]), version, dict(d.get("info") or {}))
        fmt = d.get("format")
        body = {k: v for k, v in d.items() if k not in ("format", "info")}
        if fmt == "fovea.anomaly/1":
            return cls("anomaly", body, FORMAT_VERSION, dict(d.get("info") or {}), legacy=fmt)
        if fmt == "fovea.segment/1":
            return cls("segment", dict(d["model_config"]), FORMAT_VERSION, dict(d.get("info") or {}), legacy=fmt)
        if fmt is None and "class_names" in d and "backbone" in d:
            return cls("classify", body, FORMAT_VERSION, legacy="fovea.classify/0")
        raise CheckpointError(f"{source}: unknown recipe (format {fmt!r}, keys {sorted(d)}). Fix: pass a checkpoint "
                              f"written by fovea (a folder with {RECIPE_FILE} + {WEIGHTS_FILE}, a .pt or an .onnx).")

    def upgrade_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """State-dict keys of a legacy layout renamed to the pipeline's (unchanged for the current format)."""
        if self.legacy is None:
            return state
        out = {}
        for key, value in state.items():
            for old, new in LEGACY_LAYOUTS[self.legacy].key_prefixes:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            out[key] = value
        return out


def checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """(recipe file, weights file) of a checkpoint folder (or a file inside one), current or legacy layout."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    layouts = [(RECIPE_FILE, WEIGHTS_FILE)] + [(v.recipe_file, v.weights_file) for v in LEGACY_LAYOUTS.values()]
    for recipe_file, weights_file in layouts:
        if (folder / recipe_file).is_file() and (folder / weights_file).is_file():
            return folder / recipe_file, folder / weights_file
    raise CheckpointError(f"{folder} is not a fovea checkpoint: it needs {RECIPE_FILE} + {WEIGHTS_FILE} (or an older "
                          "layout: config.json + model.safetensors, classifier.json + best.safetensors). Fix: pass "
                          "the folder written by `fovea <task> fit/train`.")


def read_recipe(path: str | Path) -> Recipe:
    """The recipe of a checkpoint folder, whatever its layout."""
    recipe_file, _ = checkpoint_files(path)
    try:
        d = json.loads(recipe_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {recipe_file}: {exc}. Fix: re-save the checkpoint.") from exc
    return Recipe.from_dict(d, str(recipe_file))


def save_checkpoint(pipeline: nn.Module, out_dir: str | Path, info: dict | None = None) -> Path:
    """Write `out_dir/recipe.json` + `out_dir/model.safetensors` for any `TaskPipeline`; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in pipeline.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    recipe = Recipe(pipeline.task, pipeline.config(), info=dict(info or {}))
    (out / RECIPE_FILE).write_text(recipe.to_json())
    return out


def load_checkpoint(path: str | Path, pipeline_cls: type | None = None):
    """(pipeline in eval mode, Recipe) from a checkpoint folder of any registered task (or a legacy layout).

    pipeline_cls: the `TaskPipeline` subclass to build (default: the registered task's); a
    checkpoint of another task is then an error naming both.
    """
    from safetensors.torch import load_file

    recipe_file, weights_file = checkpoint_files(path)
    recipe = read_recipe(path)
    if pipeline_cls is None:
        pipeline_cls = get_task(recipe.task, str(recipe_file)).pipeline
    elif recipe.task != pipeline_cls.task:
        raise CheckpointError(f"{recipe_file} holds a {recipe.task!r} model, not a {pipeline_cls.task!r} one. Fix: "
                              f"open it with fovea.load_predictor or the `fovea {recipe.task}` commands.")
    pipeline = pipeline_cls.from_config(recipe.config)
    try:
        state = recipe.upgrade_state(load_file(str(weights_file)))
    except Exception as exc:
        raise CheckpointError(f"cannot read {weights_file}: {exc}. Fix: re-save the checkpoint.") from exc
    load_pipeline_state(pipeline, state, str(weights_file), fill_constants=recipe.legacy is not None)
    return pipeline.eval(), recipe


def load_pipeline_state(pipeline: nn.Module, state: dict[str, torch.Tensor], source: str,
                        fill_constants: bool = False) -> None:
    """Strict `load_state_dict`, after giving fitted-size buffers (memory banks, Gaussians) their saved shapes.

    fill_constants: take `pixel_mean`/`pixel_std` from the fresh pipeline when the file lacks them
    (legacy segment checkpoints saved the network only).
    """
    if fill_constants:
        own = pipeline.state_dict()
        state = {**{k: own[k] for k in ("pixel_mean", "pixel_std") if k in own}, **state}
    _fit_buffer_shapes(pipeline, state)
    try:
        pipeline.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit its recipe's architecture: {exc}. Fix: re-save the "
                              "checkpoint with the code that trained it.") from exc


def _fit_buffer_shapes(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Replace every buffer whose saved tensor has another shape by zeros of that shape (parameters keep theirs)."""
    for name, buf in list(module.named_buffers()):
        saved = state.get(name)
        if buf is None or saved is None or saved.shape == buf.shape:
            continue
        *parents, leaf = name.split(".")
        owner = module
        for p in parents:
            owner = getattr(owner, p)
        owner._buffers[leaf] = torch.zeros(saved.shape, dtype=buf.dtype)
