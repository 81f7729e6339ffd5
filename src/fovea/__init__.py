"""fovea: computer-vision inspection, from a camera or a folder of images to a decision.

`fovea.load_predictor(path)` opens a checkpoint folder, a TorchScript `.pt` or an ONNX `.onnx`
of any task (anomaly, classify, segment) and returns that task's Predictor. It is imported on
first use, so `import fovea` stays cheap.

Importing fovea before torch makes OpenMP threads sleep while they wait (`OMP_WAIT_POLICY=PASSIVE`,
unless the environment already sets OMP_WAIT_POLICY or GOMP_SPINCOUNT), and every predict uses only
the cores other processes leave free, up to the thread count (`fovea.engine.threads`; adaptive by
default, `FOVEA_THREAD_POLICY=fixed` or `fovea --thread-policy fixed` turns it off). Measured by
benchmarks/threads.py (docs/benchmarks/threads.md): beside one busy process, 2 fixed threads are
slower than 1 under every wait setting (PASSIVE least), and the adaptive policy drops to 1 thread;
on an idle machine a short spin (GOMP_SPINCOUNT=10000) makes 2 threads about 0.7x of 1 where
PASSIVE gives up the second thread's gain. Set OMP_WAIT_POLICY or GOMP_SPINCOUNT yourself (or
import torch first) to choose otherwise; `fovea --threads N` sets the thread count (the cap).
"""

from __future__ import annotations

import os

# what `import fovea` sets when the environment sets neither (benchmarks/threads.py marks this row)
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ.update(OPENMP_DEFAULTS)

__version__ = "0.1.0"
__all__ = ["load_predictor"]


def load_predictor(path):
    """The Predictor of any fovea model file or checkpoint folder (see `fovea.engine.predictor`)."""
    import importlib

    from fovea.engine import predictor, tasks

    for module in tasks.BUILTIN_TASK_MODULES:  # each registers its task on import
        importlib.import_module(module)
    return predictor.load_predictor(path)
