"""Training and inference see the same pixels. (Export parity and checkpoint round trips of every
task: tests/engine/test_task_contract.py.)"""

import numpy as np
import pytest
import torch

from fovea.core import SegResult
from fovea.errors import CheckpointError
from fovea.segment.data import preprocess_images
from fovea.segment.model import SegmentationModel, SegmentationPipeline, SegModelConfig
from fovea.segment.predictor import SegmentationPredictor


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = SegModelConfig(num_classes=3, class_names=("bg", "a", "b"), weights="random", input_size=(64, 64),
                         inter_channels=16)
    return SegmentationPredictor.from_pipeline(SegmentationPipeline(SegmentationModel(cfg)))


def test_training_preprocessing_equals_pipeline_preprocessing(predictor):
    img = torch.randint(0, 256, (1, 90, 70, 3), dtype=torch.uint8)
    np.testing.assert_allclose(preprocess_images(img, (64, 64)).numpy(),
                               predictor.pipeline.preprocess(img).numpy(), atol=1e-6)
