"""fovea: computer-vision inspection, from a camera or a folder of images to a decision.

`fovea.load_predictor(path)` opens a checkpoint folder, a TorchScript `.pt` or an ONNX `.onnx`
of any task (anomaly, classify, segment) and returns that task's Predictor. It is imported on
first use, so `import fovea` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_predictor"]


def load_predictor(path):
    """The Predictor of any fovea model file or checkpoint folder (see `fovea.engine.predictor`)."""
    import importlib

    from fovea.engine import predictor, tasks

    for module in tasks.BUILTIN_TASK_MODULES:  # each registers its task on import
        importlib.import_module(module)
    return predictor.load_predictor(path)
