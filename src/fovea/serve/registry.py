"""Named models behind the server: loaded through `fovea.load_predictor`, each with its batcher.

Names are plain identifiers (`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`, no `..`): a name is never a path,
and a request names a model only among those the operator loaded at start-up. Paths come from the
command line (NAME=PATH) or the Python API, never from a request; `reload(name)` re-reads the path
the model was loaded from (after a retrain wrote a new checkpoint there) and swaps it in while
requests keep flowing (hot swap: the batch in flight finishes on the old model).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fovea.errors import ConfigError
from fovea.serve.batcher import MicroBatcher

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_model_name(name: str) -> str:
    """The name, or a ConfigError for anything that could read as a path (/, \\, .., empty, too long)."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise ConfigError(f"model name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit, no '..' and no path separators")
    return name


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """"NAME=PATH" -> (name, path); the name is checked, the path must exist."""
    name, sep, path = spec.partition("=")
    if not sep or not path:
        raise ConfigError(f"--model {spec!r}: write NAME=PATH, e.g. --model parts=runs/patchcore")
    check_model_name(name)
    if not Path(path).exists():
        raise ConfigError(f"--model {spec!r}: {path} does not exist. Fix: pass a checkpoint folder, a .pt or an "
                          ".onnx file written by fovea")
    return name, Path(path)


@dataclass
class ModelSlot:
    """One served model: its current predictor, where it came from, and its batcher."""

    name: str
    path: Path | None
    predictor: Any
    batcher: MicroBatcher | None = None
    version: int = 1

    def describe(self) -> dict[str, Any]:
        p = self.predictor
        cfg = getattr(p, "config", {}) or {}
        return {"name": self.name, "task": getattr(p, "kind", ""), "runtime": getattr(p, "runtime", ""),
                "version": self.version, "class_names": cfg.get("class_names"),
                "queue_depth": self.batcher.depth if self.batcher else 0}


class ModelRegistry:
    """name -> ModelSlot. batch_kw: MicroBatcher options (max_batch, max_wait_s, max_queue)."""

    def __init__(self, on_batch: Callable[[str, list], None] | None = None, loader: Callable | None = None,
                 **batch_kw):
        self.slots: dict[str, ModelSlot] = {}
        self.batch_kw = batch_kw
        self.on_batch = on_batch
        self._loader = loader
        self._lock = threading.Lock()

    def _load(self, path: Path):
        if self._loader is not None:
            return self._loader(path)
        import fovea

        return fovea.load_predictor(path)

    def add(self, name: str, path: str | Path | None = None, predictor: Any = None) -> ModelSlot:
        """Serve `predictor`, or the model at `path`, under `name` (replacing one of that name)."""
        check_model_name(name)
        if predictor is None:
            if path is None:
                raise ConfigError(f"model {name!r}: give a path or a predictor")
            predictor = self._load(Path(path))
        with self._lock:
            old = self.slots.get(name)
            if old is not None:
                return self._swap(old, predictor, path)
            slot = ModelSlot(name, Path(path) if path is not None else None, predictor)
            on_batch = (lambda jobs, n=name: self.on_batch(n, jobs)) if self.on_batch else None
            slot.batcher = MicroBatcher(name, lambda s=slot: s.predictor, on_batch=on_batch, **self.batch_kw)
            self.slots[name] = slot
            return slot

    def _swap(self, slot: ModelSlot, predictor: Any, path) -> ModelSlot:
        slot.predictor = predictor          # one attribute write: the worker reads it per batch
        if path is not None:
            slot.path = Path(path)
        slot.version += 1
        return slot

    def reload(self, name: str) -> ModelSlot:
        """Load `name` again from its path and swap it in (hot swap)."""
        slot = self.get(name)
        if slot.path is None:
            raise ConfigError(f"model {name!r} was given in-process, it has no path to reload from")
        predictor = self._load(slot.path)
        with self._lock:
            return self._swap(slot, predictor, None)

    def get(self, name: str) -> ModelSlot:
        check_model_name(name)
        slot = self.slots.get(name)
        if slot is None:
            raise KeyError(name)
        return slot

    def close(self) -> None:
        for slot in list(self.slots.values()):
            if slot.batcher is not None:
                slot.batcher.close()
