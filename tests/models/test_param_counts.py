"""Parameter counts equal the official implementations' (built on the meta device: no memory)."""

import pytest
import torch

from fovea.models.sparx import SPARX_CONFIGS, SparXMamba, ganglion_indices
from fovea.models.vmamba import VMAMBA_CONFIGS, VMamba

# Official code, num_classes=1000 (notes: measured on MzeroMiko/VMamba 2ed52ea, LMMMEng/SparX 1e84174).
EXACT = {
    "vmamba_tiny_v0": 22_893_448,
    "vmamba_tiny_s2l5": 30_705_832,
    "vmamba_tiny_s1l8": 30_249_064,
    "vmamba_small_s2l15": 50_147_752,
    "vmamba_base_s2l15": 88_557_800,
    "vmamba_small_s1l20": 49_012_840,
    "vmamba_base_s1l20": 86_614_504,
    "sparx_mamba_t": 27_051_794,
    "sparx_mamba_s": 47_444_712,
    "sparx_mamba_b": 83_536_168,
}
# Published rounded counts (README, millions) where no exact figure is recorded.
ROUNDED_M = {"vmamba_small_v0": 44, "vmamba_base_v0": 76}


def _build(name):
    with torch.device("meta"):
        if name in VMAMBA_CONFIGS:
            return VMamba(VMAMBA_CONFIGS[name])
        return SparXMamba(SPARX_CONFIGS[name])


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_param_count(name):
    model = _build(name)
    assert sum(p.numel() for p in model.parameters()) == EXACT[name]


@pytest.mark.parametrize("name", sorted(ROUNDED_M))
def test_rounded_param_count(name):
    n = sum(p.numel() for p in _build(name).parameters())
    assert round(n / 1e6) == ROUNDED_M[name]


def test_ganglion_indices_match_the_notes():
    got = {name: [ganglion_indices(d, s, st) for d, s, st in zip(c.depths, c.dense_step, c.dense_start)]
           for name, c in SPARX_CONFIGS.items()}
    assert got["sparx_mamba_t"] == [[], [1], [0, 2, 4, 6], [0, 1]]
    assert got["sparx_mamba_s"] == [[], [1], [1, 4, 7, 10, 13, 16], [0, 1]]
    assert got["sparx_mamba_b"] == [[], [1], [2, 5, 8, 11, 14, 17, 20], [2]]


def test_sparx_t_stage3_ganglion_widths():
    """T stage 3 (C=320, S=2, M=3): ganglions aggregate C, 2C, 3C, 4C channels."""
    model = _build("sparx_mamba_t")
    widths = [model.layers[2].blocks[j].op.d_norm.num_channels for j in (0, 2, 4, 6)]
    assert widths == [320, 640, 960, 1280]


def test_official_init_values():
    """S4D-real A (log 1..N), D = 1, softplus(dt bias) in [dt_min, dt_max] (VMamba v0, d_state 16)."""
    from fovea.models.vmamba import SS2D

    torch.manual_seed(0)
    op = SS2D(32, d_state=16, ssm_ratio=2.0, forward_type="v0", conv_bias=True)
    assert torch.allclose(op.A_logs, torch.log(torch.arange(1, 17.0)).expand(4 * 64, 16))
    assert torch.equal(op.Ds, torch.ones(4 * 64))
    dt = torch.nn.functional.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert op.dt_projs_weight.abs().max() <= 2 ** -0.5  # U(+-dt_rank^-0.5), dt_rank = ceil(32/16)
