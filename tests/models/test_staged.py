"""The shared staged-backbone base: official init rules, stochastic-depth schedule, head handling."""

import pytest
import torch

from fovea.models._staged import drop_path_rates
from fovea.models.sparx import SparXMamba
from fovea.models.sparx_swin import SparXSwin, SparXSwinConfig
from fovea.models.vmamba import VMamba
from tiny_configs import TINY_SPARX, TINY_VMAMBA


def test_drop_path_rates_rise_linearly_over_all_blocks():
    rates = drop_path_rates((2, 1, 3), 0.5)
    assert [len(r) for r in rates] == [2, 1, 3]
    flat = [v for r in rates for v in r]
    assert flat == pytest.approx([0.5 * i / 5 for i in range(6)])


def test_official_init_rules():
    """VMamba: trunc-normal(0.02) on Linear/Linear2d only (convs keep torch's default);
    SparX: on every Conv2d too; norms weight 1, bias 0."""
    torch.manual_seed(0)
    vm, sp = VMamba(TINY_VMAMBA), SparXMamba(TINY_SPARX)
    in_proj = torch.cat([b.op.in_proj.weight.flatten() for s in vm.layers for b in s.blocks])
    assert in_proj.std().item() == pytest.approx(0.02, rel=0.1)
    stem = vm.patch_embed[0].weight  # Conv2d(3, C/2, 3): default kaiming-uniform, bound 1/sqrt(27)
    assert stem.abs().max().item() > 0.1 and stem.abs().max().item() <= 27 ** -0.5
    ffn = torch.cat([b.mlp.fc1.weight.flatten() for s in sp.layers for b in s.blocks])
    assert ffn.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(sp.classifier[0].weight, torch.ones_like(sp.classifier[0].weight))
    assert not sp.classifier[0].bias.any() and not vm.classifier.head.bias.any()


@pytest.mark.parametrize("build", [
    lambda: VMamba(TINY_VMAMBA, num_classes=5),
    lambda: SparXMamba(TINY_SPARX, num_classes=5),
    lambda: SparXSwin(SparXSwinConfig(depths=(1, 1, 2, 2), dims=(12, 24, 48, 96), heads=(1, 2, 4, 8), img_size=64),
                      num_classes=5),
], ids=["vmamba", "sparx", "sparx_swin"])
def test_head_is_the_last_classifier_entry_and_decay_keywords_exist(build):
    model = build()
    assert model.get_classifier() is model.classifier[-1] and model.get_classifier().out_features == 5
    names = [n for n, _ in model.named_parameters()]
    assert all(any(k in n for n in names) for k in model.no_weight_decay_keywords())
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
