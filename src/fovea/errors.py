"""The fovea error hierarchy.

Every error a user can cause is a `FoveaError` whose message names the file, the value and the
fix. Subclasses also derive from the matching builtin (ValueError, FileNotFoundError, ...) so
generic handlers keep working.
"""

from __future__ import annotations


class FoveaError(Exception):
    """Base class of every error fovea raises on purpose."""


class ConfigError(FoveaError, ValueError):
    """A configuration value (CLI option, YAML key, constructor argument) is invalid."""


class DataError(FoveaError, ValueError):
    """A data set is malformed: empty folders, masks that do not match images, wrong sizes."""


class ImageReadError(DataError):
    """An image file cannot be decoded."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot read image {self.path}: {reason}. Fix: replace or remove the file, "
            "or pass --skip-bad to skip unreadable files (they are counted in the report)."
        )


class MaskMismatchError(DataError):
    """Masks and images do not pair up one-to-one by file stem, or differ in size."""


class WeightsError(FoveaError, FileNotFoundError):
    """Backbone or model weights cannot be resolved or do not fit the model."""


class CheckpointError(FoveaError, ValueError):
    """A checkpoint file is missing, corrupt, or was written for another model."""


class ExportError(FoveaError, RuntimeError):
    """A model cannot be exported or an exported file cannot be loaded."""


class HardwareError(FoveaError, RuntimeError):
    """The requested feature needs hardware support this machine lacks (e.g. bf16 on CPU)."""


class CalibrationError(FoveaError, ValueError):
    """Calibration input is insufficient or inconsistent (too few views, size mismatch)."""


class LineError(FoveaError, RuntimeError):
    """A sorting-line runtime fault: source, pipeline stage, or actuator."""


class ProtocolError(LineError):
    """A malformed or unexpected message on the actuator link."""
