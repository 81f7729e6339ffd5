"""Data sets: folder and MVTec AD anomaly data, typed samples and a torch Dataset over them.

`AnomalyDataset` is imported lazily so that listing and splitting data does not import torch.
"""

from fovea.data.folder import SAME_AS_TEST, AnomalySplits, FolderSpec, Sample, load_folder, load_mvtec

__all__ = [
    "SAME_AS_TEST", "AnomalyDataset", "AnomalySplits", "FolderSpec", "Sample", "load_folder", "load_mvtec",
]


def __getattr__(name: str):
    if name == "AnomalyDataset":
        from fovea.data.dataset import AnomalyDataset

        return AnomalyDataset
    raise AttributeError(f"module 'fovea.data' has no attribute {name!r}")
