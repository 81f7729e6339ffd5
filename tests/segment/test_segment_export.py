"""The exported segmentation pipeline (TorchScript, ONNX) answers as the in-process one; training
and inference see the same pixels; checkpoints round-trip."""

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


def test_export_parity_and_checkpoint_roundtrip(predictor, tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    ref = predictor.predict([img])[0]
    assert isinstance(ref, SegResult) and ref.class_map.shape == (70, 90) and ref.probs.shape == (3, 70, 90)
    np.testing.assert_allclose(ref.probs.sum(0), 1.0, atol=1e-5)
    paths = predictor.export(tmp_path)
    predictor.save(tmp_path / "ckpt")
    for path in (paths["torchscript"], paths["onnx"], tmp_path / "ckpt"):
        other = SegmentationPredictor.load(path)
        got = other.predict([img])[0]
        assert other.class_names == ("bg", "a", "b")
        np.testing.assert_allclose(got.probs, ref.probs, atol=1e-4, err_msg=str(path))
        assert (got.class_map == ref.class_map).mean() > 0.999
    with pytest.raises(CheckpointError, match="not a fovea segmentation checkpoint"):
        SegmentationPredictor.load(tmp_path)
