"""Selective scan: fast backends == the plain reference loop (values, gradients), gradcheck,
stability with strongly negative A, shapes, dtypes and errors."""

import pytest
import torch

from fovea.errors import ConfigError
from fovea.nn import _scan_torch
from fovea.nn.selective_scan import native_available, selective_scan, selective_scan_ref

FAST = ["chunked", "native"]


def _skip_unless(backend):
    if backend == "native" and not native_available():
        pytest.skip("native kernel could not be built on this machine (no C compiler?)")


def make_inputs(Bt, K, Dg, N, L, dtype=torch.float32, seed=0, a_scale=1.0):
    """Inputs as in VMamba: S4D-real A = -(1..N), dt bias so softplus(bias) in ~[1e-3, 0.1]."""
    g = torch.Generator().manual_seed(seed)
    KD = K * Dg
    u = torch.randn(Bt, KD, L, generator=g, dtype=dtype)
    delta = 0.5 * torch.randn(Bt, KD, L, generator=g, dtype=dtype)
    scale = torch.rand(KD, 1, generator=g, dtype=dtype).add(0.5)
    A = -a_scale * torch.arange(1, N + 1, dtype=dtype).repeat(KD, 1) * scale
    B = torch.randn(Bt, K, N, L, generator=g, dtype=dtype)
    C = torch.randn(Bt, K, N, L, generator=g, dtype=dtype)
    D = torch.randn(KD, generator=g, dtype=dtype)
    bias = -4 * torch.rand(KD, generator=g, dtype=dtype)
    return [u, delta, A, B, C, D, bias]


def value_and_grads(fn, xs, w, **kw):
    xs = [x.detach().clone().requires_grad_() for x in xs]
    y = fn(*xs, **kw)
    grads = torch.autograd.grad((y * w).sum(), xs)
    return y.detach(), grads


_REF_CACHE = {}


def reference(key, xs, w):
    """Reference values and gradients, computed once per case and shared by the backends."""
    if key not in _REF_CACHE:
        _REF_CACHE[key] = value_and_grads(selective_scan_ref, xs, w)
    return _REF_CACHE[key]


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


NAMES = ["u", "delta", "A", "B", "C", "D", "delta_bias"]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("N,L", [(1, 1), (1, 197), (16, 64), (16, 150)])
def test_fast_equals_reference_fp32(backend, N, L):
    """d_state 1 and 16, L not a multiple of the chunk; 2 batch x 4 groups x 10 channels (d_state 1
    uses blocks of 8 channels in the native kernel, so 10 also covers a partial block)."""
    _skip_unless(backend)
    xs = make_inputs(2, 4, 10 if N == 1 else 3, N, L, seed=N + L)
    w = torch.randn(xs[0].shape, generator=torch.Generator().manual_seed(7))
    y_ref, g_ref = reference(("fp32", N, L), xs, w)
    y, g = value_and_grads(selective_scan, xs, w, backend=backend)
    assert y.dtype == torch.float32 and y.shape == xs[0].shape
    assert rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(NAMES, g, g_ref):
        assert rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("backend", FAST)
def test_stage1_length_3136_d_state_1(backend):
    _skip_unless(backend)
    xs = make_inputs(1, 4, 2, 1, 3136, seed=3)
    w = torch.randn(1, 8, 3136, generator=torch.Generator().manual_seed(8))
    y_ref, g_ref = reference("3136", xs, w)
    y, g = value_and_grads(selective_scan, xs, w, backend=backend)
    assert rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(NAMES, g, g_ref):
        assert rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("backend", FAST)
def test_strongly_negative_A_stays_finite_and_exact(backend):
    """|A| up to ~500 and dt up to ~3 over 512 steps: cumulative decays underflow to 0, which a
    cumprod-and-divide scan turns into NaN; here every factor stays in [0, 1]."""
    _skip_unless(backend)
    xs = make_inputs(1, 2, 2, 16, 512, seed=5, a_scale=20.0)
    xs[6] = torch.full_like(xs[6], 1.0)  # softplus(1 + 0.5 N(0,1)) ~ 0.5 .. 3
    w = torch.randn(1, 4, 512, generator=torch.Generator().manual_seed(9))
    cum = (torch.nn.functional.softplus(xs[1] + 1.0)[:, :, None, :] * xs[2][None, :, :, None]).cumsum(-1)
    assert (cum.exp() == 0).any()  # the naive exp(A * cumsum(dt)) underflows here
    y_ref, g_ref = reference("stiff", xs, w)
    y, g = value_and_grads(selective_scan, xs, w, backend=backend)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in g)
    assert rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(NAMES, g, g_ref):
        assert rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("softplus", [True, False])
def test_gradcheck_fp64_chunked_and_reference(softplus):
    xs = make_inputs(1, 2, 1, 2, 9, dtype=torch.float64, seed=11)
    if not softplus:
        xs[1] = xs[1].abs() + 0.1  # raw dt = delta + bias must stay positive without softplus
        xs[6] = xs[6].abs()
    xs = [x.requires_grad_() for x in xs]
    for fn in (selective_scan_ref, lambda *a, **k: selective_scan(*a, backend="chunked", **k)):
        assert torch.autograd.gradcheck(
            lambda *a: fn(*a, delta_softplus=softplus), xs, eps=1e-6, atol=1e-7, rtol=1e-5
        )


def test_auto_agrees_with_reference_without_optionals_and_ungrouped_B():
    u, delta, A, B, C, _, _ = make_inputs(2, 1, 5, 4, 40, seed=13)
    for kw in ({}, {"delta_softplus": False}):
        d = delta.abs() if kw else delta
        y = selective_scan(u, d, A, B[:, 0], C[:, 0], **kw)  # (Bt, N, L): one group
        y_ref = selective_scan_ref(u, d, A, B, C, **kw)
        assert rel_err(y, y_ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_computed_in_fp32(dtype):
    xs = make_inputs(1, 4, 2, 2, 50, seed=17)
    low = [x.to(dtype) for x in xs]
    y = selective_scan(*low)
    assert y.dtype == dtype
    y_ref = selective_scan_ref(*[x.float() for x in low])
    torch.testing.assert_close(y.float(), y_ref.to(dtype).float())


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_plain_forward_for_export_equals_reference():
    xs = make_inputs(1, 4, 2, 3, 70, seed=19)
    y = _scan_torch.plain_forward(*xs[:5], xs[5], xs[6], True)
    assert rel_err(y, selective_scan_ref(*xs)) < 1e-5
    traced = torch.jit.trace(lambda *a: selective_scan(*a), tuple(xs), check_trace=False)
    assert rel_err(traced(*xs), selective_scan_ref(*xs)) < 1e-5


def test_bad_shapes_raise_config_error():
    u, delta, A, B, C, D, bias = make_inputs(1, 4, 2, 3, 10)
    with pytest.raises(ConfigError, match="u and delta"):
        selective_scan(u, delta[..., :5], A, B, C)
    with pytest.raises(ConfigError, match="A must be"):
        selective_scan(u, delta, A[:3], B, C)
    with pytest.raises(ConfigError, match="B and C"):
        selective_scan(u, delta, A, B, C[..., :4])
    with pytest.raises(ConfigError, match="K dividing"):
        selective_scan(u, delta, A, B[:, :3], C[:, :3])
    with pytest.raises(ConfigError, match="D must be"):
        selective_scan(u, delta, A, B, C, D=D[:2])
    with pytest.raises(ConfigError, match="backend"):
        selective_scan(u, delta, A, B, C, backend="cuda")


def test_falls_back_to_chunked_when_native_is_unavailable(monkeypatch):
    from fovea.nn import selective_scan as mod

    monkeypatch.setattr(mod, "_NATIVE", {"tried": True, "impl": None, "error": RuntimeError("no cc")})
    xs = make_inputs(1, 2, 2, 2, 30, seed=23)
    assert rel_err(selective_scan(*xs), selective_scan_ref(*xs)) < 1e-5
    with pytest.raises(ConfigError, match="no cc"):
        selective_scan(*xs, backend="native")


def test_native_kernel_builds_from_scratch_and_is_cached(monkeypatch, tmp_path):
    from fovea.nn import _scan_native

    try:
        _scan_native._compiler()
    except RuntimeError:
        pytest.skip("no C compiler on this machine; the chunked fallback is tested above")
    monkeypatch.setenv("FOVEA_CACHE_DIR", str(tmp_path))
    so = _scan_native._build()
    assert so.parent == tmp_path / "scan" and so.stat().st_size > 0
    assert _scan_native._build() == so  # second call reuses the cached library


def _child_scan(queue):
    xs = make_inputs(1, 4, 4, 1, 40, seed=29)
    queue.put(rel_err(selective_scan(*xs, backend="native"), selective_scan_ref(*xs)))


def test_native_threads_work_in_a_forked_child():
    """DataLoader workers fork: the kernel's thread pool must be rebuilt in the child, not hang."""
    import multiprocessing as mp

    _skip_unless("native")
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("platform has no fork()")
    torch.set_num_threads(2)
    xs = make_inputs(1, 4, 4, 1, 40, seed=29)
    selective_scan(*xs, backend="native")  # parent creates its pool
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_scan, args=(queue,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert queue.get(timeout=5) < 1e-5


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_onnx_export_matches_reference():
    """Exporting switches to the plain chunked graph (no custom autograd Function)."""
    import io

    ort = pytest.importorskip("onnxruntime")
    xs = make_inputs(1, 4, 2, 2, 49, seed=31)

    class Scan(torch.nn.Module):
        def forward(self, u, delta, B, C):
            return selective_scan(u, delta, xs[2], B, C, xs[5], xs[6])

    feed = (xs[0], xs[1], xs[3], xs[4])
    buf = io.BytesIO()
    torch.onnx.export(Scan(), feed, buf, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue())
    out = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), feed)})[0]
    assert rel_err(torch.from_numpy(out), selective_scan_ref(*xs)) < 1e-5
