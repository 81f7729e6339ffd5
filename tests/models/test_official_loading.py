"""Official checkpoints: key layouts written out from the authors' code structure (not from fovea).

Each `official_*_shapes` function enumerates the keys and shapes the official VMamba / SparX
modules produce; their parameter totals equal the official counts, which checks the enumerations.
"""

import math

import pytest
import torch

from fovea.errors import CheckpointError, ConfigError
from fovea.models import load_official, sparx, vmamba
from fovea.models._checkpoint import read_checkpoint
from tiny_configs import TINY_SPARX, TINY_VMAMBA, TINY_VMAMBA_V0

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def official_vmamba_shapes(cfg, num_classes=1000, old_names=False):
    """VSSM keys: channels-first v2 (`v05_noz`, ln2d) or v0 (`ln`, PatchMerging2D)."""
    s, dims, n = {}, cfg.dims, cfg.d_state
    if cfg.patch_embed == "v2":
        c = dims[0]
        s.update({"patch_embed.0.weight": (c // 2, 3, 3, 3), "patch_embed.0.bias": (c // 2,),
                  "patch_embed.2.weight": (c // 2,), "patch_embed.2.bias": (c // 2,),
                  "patch_embed.5.weight": (c, c // 2, 3, 3), "patch_embed.5.bias": (c,),
                  "patch_embed.7.weight": (c,), "patch_embed.7.bias": (c,)})
    else:
        s.update({"patch_embed.0.weight": (dims[0], 3, 4, 4), "patch_embed.0.bias": (dims[0],),
                  "patch_embed.2.weight": (dims[0],), "patch_embed.2.bias": (dims[0],)})
    for i, (depth, c) in enumerate(zip(cfg.depths, dims)):
        d, r = int(cfg.ssm_ratio * c), math.ceil(c / 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            s.update({p + "norm.weight": (c,), p + "norm.bias": (c,),
                      p + "op.in_proj.weight": (d * (2 if cfg.forward_type == "v0" else 1), c),
                      p + "op.conv2d.weight": (d, 1, 3, 3),
                      p + "op.x_proj_weight": (4, r + 2 * n, d), p + "op.dt_projs_weight": (4, d, r),
                      p + "op.dt_projs_bias": (4, d), p + "op.A_logs": (4 * d, n), p + "op.Ds": (4 * d,),
                      p + "op.out_norm.weight": (d,), p + "op.out_norm.bias": (d,), p + "op.out_proj.weight": (c, d)})
            if cfg.conv_bias:
                s[p + "op.conv2d.bias"] = (d,)
            if cfg.mlp_ratio > 0:
                h = int(c * cfg.mlp_ratio)
                s.update({p + "norm2.weight": (c,), p + "norm2.bias": (c,), p + "mlp.fc1.weight": (h, c),
                          p + "mlp.fc1.bias": (h,), p + "mlp.fc2.weight": (c, h), p + "mlp.fc2.bias": (c,)})
        if i < 3:
            p, o = f"layers.{i}.downsample.", dims[i + 1]
            if cfg.downsample == "v3":
                s.update({p + "1.weight": (o, c, 3, 3), p + "1.bias": (o,), p + "3.weight": (o,), p + "3.bias": (o,)})
            else:
                s.update({p + "norm.weight": (4 * c,), p + "norm.bias": (4 * c,), p + "reduction.weight": (o, 4 * c)})
    s.update({"classifier.norm.weight": (dims[-1],), "classifier.norm.bias": (dims[-1],),
              "classifier.head.weight": (num_classes, dims[-1]), "classifier.head.bias": (num_classes,)})
    if old_names:  # early releases: patch_embed.proj/norm, ln_1, self_attention, top-level norm/head
        s = {k.replace("patch_embed.0.", "patch_embed.proj.").replace("patch_embed.2.", "patch_embed.norm.")
             .replace(".norm.", ".ln_1.").replace(".op.", ".self_attention.")
             .replace("classifier.ln_1.", "norm.").replace("classifier.head.", "head."): v for k, v in s.items()}
        s = {k.replace("downsample.ln_1.", "downsample.norm.").replace("patch_embed.ln_1.", "patch_embed.norm."): v
             for k, v in s.items()}
    return s


def _bn(p, c):
    return {p + k: ((c,) if k != "num_batches_tracked" else ()) for k in BN}


def official_sparx_shapes(cfg, num_classes=1000):
    """SparXMamba keys, with ganglion widths from the official formula (first: C(1+idx), later:
    C*min(M, #earlier ganglions) + C*(S-1))."""
    s, dims, n = {}, cfg.dims, cfg.d_state
    h = dims[0] // 2
    s.update({"patch_embed.0.weight": (h, 3, 3, 3), **_bn("patch_embed.1.", h)})
    if cfg.stem == "v2":
        s.update({"patch_embed.3.weight": (h, h, 3, 3), **_bn("patch_embed.4.", h),
                  "patch_embed.6.weight": (dims[0], h, 3, 3), **_bn("patch_embed.7.", dims[0])})
    else:
        s.update({"patch_embed.3.weight": (dims[0], h, 3, 3), **_bn("patch_embed.4.", dims[0])})
    for i, (depth, c) in enumerate(zip(cfg.depths, dims)):
        step, start, m = cfg.dense_step[i], cfg.dense_start[i], cfg.max_dense_depth[i]
        gang = list(range(depth - 1, start - 1, -step))[::-1]
        d, r, sr = int(c * cfg.ssm_ratio[i]), math.ceil(c / 16), cfg.sr_ratios[i]
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            s.update({p + "pos_embed.weight": (c, 1, 3, 3), p + "pos_embed.bias": (c,),
                      p + "norm.weight": (c,), p + "norm.bias": (c,), p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                      p + "mlp.fc1.weight": (4 * c, c, 1, 1), p + "mlp.fc1.bias": (4 * c,),
                      p + "mlp.dwconv.weight": (4 * c, 1, 3, 3), p + "mlp.dwconv.bias": (4 * c,),
                      p + "mlp.fc2.weight": (c, 4 * c, 1, 1), p + "mlp.fc2.bias": (c,),
                      p + "op.conv2d.weight": (d, 1, 5, 5), p + "op.conv2d.bias": (d,),
                      p + "op.out_norm.weight": (d,), p + "op.out_norm.bias": (d,),
                      p + "op.out_proj.weight": (c, d, 1, 1), p + "op.out_proj.bias": (c,),
                      p + "op.x_proj_weight": (4 * (r + 2 * n), d, 1), p + "op.dt_projs_weight": (4, d, r),
                      p + "op.dt_projs_bias": (4, d), p + "op.A_logs": (4 * d, n), p + "op.Ds": (4 * d,)})
            if cfg.ls_init[i] is not None:
                for ls in ("layerscale_1.", "layerscale_2."):
                    s.update({p + ls + "weight": (c, 1, 1, 1), p + ls + "bias": (c,)})
            if j in gang:
                g = gang.index(j)
                cin = c * (1 + j) if g == 0 else c * min(m, g) + c * (step - 1)
                q = p + "op."
                s.update({q + "d_norm.weight": (cin,), q + "d_norm.bias": (cin,), q + "d_proj.0.weight": (cin, 1, 3, 3),
                          **_bn(q + "d_proj.1.", cin), q + "d_proj.3.weight": (2 * c, cin, 1, 1),
                          q + "d_proj.3.bias": (2 * c,), q + "v.0.weight": (c, c, 1, 1), **_bn(q + "v.1.", c),
                          q + "in_proj.0.weight": (3 * c, 1, 3, 3), q + "in_proj.0.bias": (3 * c,),
                          q + "in_proj.2.weight": (d // 3 * 3, c, 1, 1), q + "in_proj.2.bias": (d // 3 * 3,)})
                for t in ("q.", "k."):
                    if sr > 1:
                        s.update({q + t + "0.0.weight": (c, 1, sr + 1, sr + 1), **_bn(q + t + "0.1.", c)})
                    s.update({q + t + "1.weight": (c, c, 1, 1), **_bn(q + t + "2.", c)})
            else:
                s.update({p + "op.in_proj.weight": (d, c, 1, 1), p + "op.in_proj.bias": (d,)})
        if i < 3:
            s.update({f"layers.{i}.downsample.0.weight": (dims[i + 1], c, 3, 3), **_bn(f"layers.{i}.downsample.1.", dims[i + 1])})
    s.update({"classifier.0.weight": (dims[-1],), "classifier.0.bias": (dims[-1],),
              "classifier.3.weight": (num_classes, dims[-1]), "classifier.3.bias": (num_classes,)})
    return s


def _n_params(shapes):
    return sum(math.prod(v) for k, v in shapes.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def _fake(shapes):
    return {k: (torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked") else torch.empty(v))
            for k, v in shapes.items()}


def test_enumerations_reproduce_official_counts():
    assert _n_params(official_vmamba_shapes(vmamba.VMAMBA_CONFIGS["vmamba_tiny_s1l8"])) == 30_249_064
    assert _n_params(official_vmamba_shapes(vmamba.VMAMBA_CONFIGS["vmamba_tiny_v0"])) == 22_893_448
    assert _n_params(official_sparx_shapes(sparx.SPARX_CONFIGS["sparx_mamba_t"])) == 27_051_794
    assert _n_params(official_sparx_shapes(sparx.SPARX_CONFIGS["sparx_mamba_b"])) == 83_536_168


@pytest.mark.parametrize("name", ["vmamba_tiny_s1l8", "vmamba_tiny_s2l5", "vmamba_tiny_v0", "sparx_mamba_t", "sparx_mamba_s"])
def test_full_size_official_keys_all_consumed(name):
    """Every official key maps onto a fovea parameter of the same size, and every one is filled."""
    is_vm = name.startswith("vmamba")
    cfgs, mod = (vmamba.VMAMBA_CONFIGS, vmamba) if is_vm else (sparx.SPARX_CONFIGS, sparx)
    shapes = official_vmamba_shapes(cfgs[name]) if is_vm else official_sparx_shapes(cfgs[name])
    with torch.device("meta"):
        model = (vmamba.VMamba if is_vm else sparx.SparXMamba)(cfgs[name])
    with torch.device("meta"):
        sd = {k: torch.empty(v) for k, v in shapes.items()}
    load_official(sd, model=model)  # raises CheckpointError on any mismatch
    assert mod._infer_variant(sd) == name


def _to_official(model_sd, shapes):
    """fovea weights laid out as the official checkpoint (same names; official shapes)."""
    return {k: model_sd[k].reshape(v) for k, v in shapes.items()}


@pytest.mark.parametrize("cfg,old", [(TINY_VMAMBA, False), (TINY_VMAMBA_V0, False), (TINY_VMAMBA_V0, True)])
def test_vmamba_round_trip_logits(cfg, old):
    torch.manual_seed(0)
    src = vmamba.VMamba(cfg, num_classes=10).eval()
    official = {k: src.state_dict()[k].reshape(v) for k, v in official_vmamba_shapes(cfg, 10).items()}
    if old:
        official = dict(zip(official_vmamba_shapes(cfg, 10, old_names=True), official.values()))
    # Linear2d weights may also come in 1x1-conv layout
    official = {k: (v[:, :, None, None] if k.endswith("in_proj.weight") else v) for k, v in official.items()}
    dst = load_official(official, model=vmamba.VMamba(cfg, num_classes=10))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_sparx_round_trip_logits_and_file(tmp_path):
    torch.manual_seed(0)
    src = sparx.SparXMamba(TINY_SPARX, num_classes=10).eval()
    official = _to_official(src.state_dict(), official_sparx_shapes(TINY_SPARX, 10))
    path = tmp_path / "sparx_tiny.pth"
    torch.save({"model": official, "epoch": 3}, path)
    dst = load_official(str(path), model=sparx.SparXMamba(TINY_SPARX, num_classes=10))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_mismatch_lists_keys():
    sd = _fake(official_vmamba_shapes(TINY_VMAMBA, 10))
    sd.pop("layers.0.blocks.0.op.Ds")
    sd["layers.0.blocks.0.op.extra"] = torch.zeros(1)
    sd["classifier.head.weight"] = torch.zeros(3, 32)
    with pytest.raises(CheckpointError) as err:
        load_official(sd, model=vmamba.VMamba(TINY_VMAMBA, num_classes=10))
    msg = str(err.value)
    assert "layers.0.blocks.0.op.Ds" in msg and "op.extra" in msg and "classifier.head.weight" in msg


class _Config:
    """Stands in for the yacs CfgNode that official training checkpoints carry."""

    def __reduce__(self):  # unpickling this runs exec(...) unless the loader refuses the global
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['FOVEA_PWNED']).touch()",))


def test_checkpoint_with_config_object_is_refused_without_running_code(tmp_path, monkeypatch):
    flag = tmp_path / "pwned"
    monkeypatch.setenv("FOVEA_PWNED", str(flag))
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"a": torch.ones(2)}, "config": _Config()}, path)
    with pytest.raises(CheckpointError, match="(?s)weights_only=True.*extract the tensors"):
        read_checkpoint(path)
    assert not flag.exists()


@pytest.mark.parametrize("name,old", [("vmamba_tiny_s1l8", False), ("vmamba_tiny_v0", True), ("sparx_mamba_t", False)])
def test_family_and_variant_found_from_the_keys_alone(name, old):
    """No model given: the family comes from the keys, the variant and class count from the shapes."""
    if name.startswith("vmamba"):
        shapes, cls, cfg = official_vmamba_shapes(vmamba.VMAMBA_CONFIGS[name], 7, old), vmamba.VMamba, vmamba.VMAMBA_CONFIGS[name]
    else:
        shapes, cls, cfg = official_sparx_shapes(sparx.SPARX_CONFIGS[name], 7), sparx.SparXMamba, sparx.SPARX_CONFIGS[name]
    with torch.device("meta"):
        model = load_official({k: torch.empty(v) for k, v in shapes.items()})
    assert type(model) is cls and model.cfg == cfg and model.num_classes == 7 and not model.training


def test_official_checkpoint_through_timm_create_model(tmp_path):
    """timm's pretrained path (file overlay) renames old keys and reshapes 1x1-conv layouts."""
    import timm

    torch.manual_seed(0)
    src = vmamba.VMamba(TINY_VMAMBA_V0, num_classes=10).eval()
    official = {k: src.state_dict()[k].reshape(v) for k, v in official_vmamba_shapes(TINY_VMAMBA_V0, 10).items()}
    official = dict(zip(official_vmamba_shapes(TINY_VMAMBA_V0, 10, old_names=True), official.values()))
    official = {k: (v[:, :, None, None] if k.endswith("in_proj.weight") else v) for k, v in official.items()}
    path = tmp_path / "vmamba_old.pth"
    torch.save({"model": official}, path)
    dst = timm.create_model("vmamba_tiny_v0", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                            cfg=TINY_VMAMBA_V0, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_sparx_swin_state_dict_round_trip_and_wrong_family():
    from fovea.models.sparx_swin import SparXSwin, SparXSwinConfig

    with torch.device("meta"):
        sd = SparXSwin(SparXSwinConfig(), num_classes=4).state_dict()
        model = load_official(sd)
        # the earlier fovea layout (head norm and head at top level) still loads
        old = {k.replace("classifier.", "", 1) if k.startswith("classifier.") else k: v for k, v in sd.items()}
        assert set(old) != set(sd) and type(load_official(old)) is SparXSwin
    assert type(model) is SparXSwin and model.num_classes == 4
    with pytest.raises(ConfigError, match="cannot fill a Linear"):
        load_official(sd, model=torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="fit 0 of the backbone families"):
        load_official({"weight": torch.zeros(2)})
