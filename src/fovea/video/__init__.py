"""Video understanding: clips (decode, sample, transform), action-recognition models, training and
evaluation, two-stream flow, temporal localization, and an online event recognizer for the line.

Models: `fovea.video.create_model(name)` / `fovea.video.list_models()` (built in
`fovea.models.video`). Data: `VideoReader`, the samplers and transforms, `VideoClipDataset`.
"""

from fovea.models.video import create_model, list_models
from fovea.video.decode import VideoInfo, VideoReadError, VideoReader, write_video

__all__ = ["VideoInfo", "VideoReadError", "VideoReader", "create_model", "list_models", "write_video"]
