"""fovea: computer-vision inspection, from a camera or a folder of images to a decision.

`fovea.load_predictor(path)` opens a checkpoint folder, a TorchScript `.pt` or an ONNX `.onnx`
of any task (anomaly, classify, segment) and returns that task's Predictor. It is imported on
first use, so `import fovea` stays cheap.

Importing fovea before torch makes OpenMP threads sleep while they wait (`OMP_WAIT_POLICY=PASSIVE`,
unless the environment already sets a policy). A trade-off, measured by benchmarks/threads.py
(docs/benchmarks/threads.md): beside one busy process, torch's spinning default made 2 threads
slower than 1 (on a heavily loaded machine many times slower) and PASSIVE keeps 2 threads level
with 1; on an idle machine PASSIVE gives up the second thread's gain. Set OMP_WAIT_POLICY yourself
(or import torch first) to choose otherwise; `fovea --threads N` sets the thread count.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["load_predictor"]


def load_predictor(path):
    """The Predictor of any fovea model file or checkpoint folder (see `fovea.engine.predictor`)."""
    import importlib

    from fovea.engine import predictor, tasks

    for module in tasks.BUILTIN_TASK_MODULES:  # each registers its task on import
        importlib.import_module(module)
    return predictor.load_predictor(path)
