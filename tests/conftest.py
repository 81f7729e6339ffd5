"""Test-wide settings: never reach a model hub; keep torch to the machine's two cores."""

import os

os.environ.setdefault("FOVEA_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
