"""Loading exported models for inference, shared by every task's Predictor."""

from __future__ import annotations

from pathlib import Path

from fovea.errors import ExportError


def onnx_session(path: str | Path, export_command: str):
    """A quiet CPU onnxruntime session for `path` and its first input's name.

    export_command: the CLI that re-creates the file, named in the error (e.g. "fovea anomaly export").
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path}: {exc}. Fix: re-export with `{export_command}`.") from exc
    return session, session.get_inputs()[0].name
