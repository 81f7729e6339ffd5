"""fovea.engine.train.fit against hand-computed updates on a linear least-squares model.

Reference for every optimizer test: loss L(w, b) = mean_i (x_i . w + b - y_i)^2, whose gradient
is grad_w = 2/n X^T r, grad_b = 2/n sum r with r = X w + b - y (closed form, no autograd).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

import fovea.engine.train as train_mod
from fovea.engine.train import TrainConfig, fit
from fovea.errors import CheckpointError, ConfigError, HardwareError

D = 3


def data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64).float()
    y = (x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.1 * torch.randn(n, generator=g)).float()
    return x, y


class LinearTask:
    """Least squares on nn.Linear(D, 1); validation metrics come from `val_sequence` when given."""

    def __init__(self, w0=None, b0=0.0, model=None, val_sequence=None):
        self.model = model if model is not None else torch.nn.Linear(D, 1)
        if model is None:
            with torch.no_grad():
                self.model.weight.copy_(torch.tensor([w0 if w0 is not None else [0.2, 0.1, -0.3]]))
                self.model.bias.fill_(b0)
        self.val_sequence = val_sequence
        self.calls = 0

    def training_loss(self, model, batch):
        x, y = batch
        return ((model(x).squeeze(1) - y) ** 2).mean()

    def validation_metrics(self, model, loader):
        if self.val_sequence is not None:
            v = self.val_sequence[min(self.calls, len(self.val_sequence) - 1)]
            self.calls += 1
            return {"val_score": v}
        se = n = 0
        for x, y in loader:
            se += float(((model(x).squeeze(1) - y) ** 2).sum())
            n += len(y)
        return {"val_loss": se / n}


def grad(w, b, x, y):
    """Closed-form gradient of mean squared error for a linear model (float64)."""
    x, y = x.double(), y.double()
    r = x @ w + b - y
    return 2.0 / len(y) * (x.T @ r), 2.0 / len(y) * r.sum()


def params(model):
    return model.weight.detach().double().reshape(-1), model.bias.detach().double().reshape(())


def cfg(tmp_path, **kw):
    base = dict(optimizer="sgd", lr=0.05, momentum=0.0, max_epochs=1, shuffle=False, out_dir=str(tmp_path))
    base.update(kw)
    return TrainConfig(**base)


W0, B0 = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)


def sgd_reference(x, y, batches, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD semantics written out: g += wd*p; v = mu*v + g; step = g + mu*v (nesterov) or v."""
    w, b = W0.clone(), B0.clone()
    vw = vb = None
    for idx in batches:
        gw, gb = grad(w, b, x[idx], y[idx])
        gw, gb = gw + weight_decay * w, gb + weight_decay * b
        if momentum:
            vw = gw.clone() if vw is None else momentum * vw + gw
            vb = gb.clone() if vb is None else momentum * vb + gb
            sw, sb = (gw + momentum * vw, gb + momentum * vb) if nesterov else (vw, vb)
        else:
            sw, sb = gw, gb
        w, b = w - lr * sw, b - lr * sb
    return w, b


@pytest.mark.parametrize("batch_size", [0, 12, 1, 5])
def test_sgd_batch_modes_match_hand_steps(tmp_path, batch_size):
    """0/12 = one full-batch step; 1 = n per-sample steps in order; 5 = batches 5, 5, 2 (last kept)."""
    x, y = data(12)
    task = LinearTask()
    fit(task, TensorDataset(x, y), None, cfg(tmp_path, batch_size=batch_size))
    bs = 12 if batch_size in (0, 12) else batch_size
    batches = [list(range(i, min(i + bs, 12))) for i in range(0, 12, bs)]
    w, b = sgd_reference(x, y, batches, lr=0.05)
    w_fit, b_fit = params(task.model)
    assert torch.allclose(w_fit, w, atol=1e-5) and torch.allclose(b_fit, b, atol=1e-5)
    # the update is not the trivial one: full-batch and per-sample results differ
    w_full, _ = sgd_reference(x, y, [list(range(12))], lr=0.05)
    if bs != 12:
        assert (w_full - w).abs().max() > 1e-3


def test_shuffled_epochs_follow_seeded_permutation(tmp_path):
    x, y = data(12)
    task = LinearTask()
    fit(task, TensorDataset(x, y), None, cfg(tmp_path, batch_size=4, max_epochs=2, shuffle=True, seed=7))
    batches = []
    for epoch in range(2):
        perm = torch.randperm(12, generator=torch.Generator().manual_seed(7 + epoch)).tolist()
        batches += [perm[i:i + 4] for i in range(0, 12, 4)]
    w, b = sgd_reference(x, y, batches, lr=0.05)
    assert torch.allclose(params(task.model)[0], w, atol=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_and_nesterov_match_hand_steps(tmp_path, nesterov):
    x, y = data(12)
    task = LinearTask()
    fit(task, TensorDataset(x, y), None,
        cfg(tmp_path, batch_size=4, max_epochs=2, momentum=0.9, nesterov=nesterov, weight_decay=0.01))
    batches = [list(range(i, i + 4)) for i in range(0, 12, 4)] * 2
    w, b = sgd_reference(x, y, batches, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    w_fit, b_fit = params(task.model)
    assert torch.allclose(w_fit, w, atol=1e-5) and torch.allclose(b_fit, b, atol=1e-5)
    w_plain, _ = sgd_reference(x, y, batches, lr=0.05, momentum=0.9, nesterov=not nesterov, weight_decay=0.01)
    assert (w_plain - w).abs().max() > 1e-4  # the two momentum variants are distinguishable


def test_adamw_one_step_matches_formula(tmp_path):
    x, y = data(12)
    task = LinearTask()
    lr, wd, eps = 0.01, 0.1, 1e-8
    fit(task, TensorDataset(x, y), None, cfg(tmp_path, optimizer="adamw", lr=lr, weight_decay=wd, batch_size=0))
    gw, gb = grad(W0, B0, x, y)
    # step 1: m_hat = g, v_hat = g^2 after bias correction; decoupled decay p *= (1 - lr*wd)
    w = W0 * (1 - lr * wd) - lr * gw / (gw.abs() + eps)
    b = B0 * (1 - lr * wd) - lr * gb / (gb.abs() + eps)
    w_fit, b_fit = params(task.model)
    assert torch.allclose(w_fit, w, atol=1e-6) and torch.allclose(b_fit, b, atol=1e-6)


class LrRecorder(Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_warmup_schedules_follow_closed_form(tmp_path, schedule):
    x, y = data(12)
    rec = LrRecorder()
    lr, spe, epochs, warm = 0.1, 3, 6, 2
    fit(LinearTask(), TensorDataset(x, y), None,
        cfg(tmp_path, lr=lr, batch_size=4, max_epochs=epochs, schedule=schedule, warmup_epochs=warm,
            step_size=2, gamma=0.5), callbacks=[rec])
    expected = []
    for s in range(spe * epochs):
        if s < warm * spe:
            expected.append(lr * (s + 1) / (warm * spe))
        elif schedule == "cosine":
            expected.append(lr * 0.5 * (1 + math.cos(math.pi * (s - warm * spe) / (spe * (epochs - warm)))))
        else:
            expected.append(lr * 0.5 ** ((s // spe) // 2))
    np.testing.assert_allclose(rec.lrs, expected, rtol=1e-9, atol=1e-12)


def test_grad_clipping_caps_the_norm(tmp_path):
    x, y = data(12)
    task = LinearTask()
    clip = 0.05
    fit(task, TensorDataset(x, y), None, cfg(tmp_path, lr=1.0, batch_size=0, grad_clip=clip))
    gw, gb = grad(W0, B0, x, y)
    norm = torch.sqrt((gw ** 2).sum() + gb ** 2)
    assert norm > 10 * clip
    scale = clip / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_
    w_fit, b_fit = params(task.model)
    assert torch.allclose(w_fit, W0 - gw * scale, atol=1e-6)
    step = torch.sqrt(((w_fit - W0) ** 2).sum() + (b_fit - B0) ** 2)
    assert step == pytest.approx(clip, rel=1e-4)


def test_early_stopping_stops_after_patience(tmp_path):
    x, y = data(12)
    task = LinearTask(val_sequence=[0.5, 0.6, 0.7, 0.7, 0.69, 0.7, 0.9])
    res = fit(task, TensorDataset(x, y), TensorDataset(x, y),
              cfg(tmp_path, batch_size=4, max_epochs=20, monitor="val_score", mode="max", early_stopping_patience=2))
    # best 0.7 at epoch 2; epochs 3 and 4 do not improve -> stop after epoch 4 (5 epochs run)
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3, 4]
    assert res.best_epoch == 2 and res.best_metric == pytest.approx(0.7)


class Snapshots(Callback):
    def __init__(self):
        self.states = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


@pytest.mark.parametrize("mode,seq,best", [("max", [0.2, 0.9, 0.5, 0.3], 1), ("min", [0.4, 0.3, 0.1, 0.2], 2)])
def test_best_checkpoint_is_the_best_epoch(tmp_path, mode, seq, best):
    x, y = data(12)
    task = LinearTask(val_sequence=seq)
    snap = Snapshots()
    res = fit(task, TensorDataset(x, y), TensorDataset(x, y),
              cfg(tmp_path, batch_size=4, max_epochs=4, monitor="val_score", mode=mode), callbacks=[snap])
    assert res.best_epoch == best and res.best_metric == pytest.approx(seq[best])
    saved = load_file(str(res.checkpoint))
    for k, v in snap.states[best].items():
        assert torch.equal(saved[k], v), k
        assert torch.equal(task.model.state_dict()[k], v)  # task.model holds the best weights
    assert not torch.equal(snap.states[best]["weight"], snap.states[-1]["weight"])
    meta = json.loads((tmp_path / "best.json").read_text())
    assert meta["epoch"] == best and meta["monitor"] == "val_score"
    assert res.curves_png.is_file() and res.curves_png.stat().st_size > 1000
    assert res.metrics == {"val_score": pytest.approx(seq[best])}  # the kept epoch's row, not the last
    assert res.task == "LinearTask" and res.monitor == "val_score" and res.last_checkpoint.is_file()
    assert res.timings_s["fit"] > 0


def test_progress_callback_pickles_without_its_function():
    """Spawned DDP processes unpickle the callbacks: a closure over a terminal bar must not stop them."""
    import pickle

    from fovea.engine._lightning import ProgressCallback

    calls = []
    cb = pickle.loads(pickle.dumps(ProgressCallback(lambda *a: calls.append(a), 3)))
    assert cb.progress is None and cb.max_epochs == 3


def test_progress_callback_counts_steps_and_epochs(tmp_path):
    x, y = data(10)
    calls = []
    fit(LinearTask(), TensorDataset(x, y), None, cfg(tmp_path, batch_size=4, max_epochs=3),
        progress=lambda stage, done, total: calls.append((stage, done, total)))
    # 10 samples in batches of 4 -> 3 steps per epoch (last batch partial), 3 epochs
    assert [c for c in calls if c[0] == "epochs"] == [("epochs", 1, 3), ("epochs", 2, 3), ("epochs", 3, 3)]
    assert [c for c in calls if c[0] == "batches"] == [("batches", i, 3) for i in (1, 2, 3)] * 3


class Crash(Callback):
    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def dropout_task():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    return LinearTask(model=model)


def test_resume_continues_the_same_run(tmp_path):
    """4 epochs straight == 2 epochs, crash, resume from last.ckpt (AdamW, cosine, shuffle, dropout)."""
    x, y = data(16)
    ds = TensorDataset(x, y)
    kw = dict(optimizer="adamw", lr=0.05, batch_size=4, max_epochs=4, schedule="cosine", warmup_epochs=1,
              shuffle=True, monitor="val_loss", mode="min")
    straight = dropout_task()
    res_a = fit(straight, ds, ds, cfg(tmp_path / "a", **kw))
    crashed = dropout_task()
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crashed, ds, ds, cfg(tmp_path / "b", **kw), callbacks=[Crash(2)])
    resumed = dropout_task()
    res_b = fit(resumed, ds, ds, cfg(tmp_path / "b", resume_from=str(tmp_path / "b" / "last.ckpt"), **kw))
    assert [h["epoch"] for h in res_b.history] == [0, 1, 2, 3]
    for h_a, h_b in zip(res_a.history, res_b.history):
        assert h_a["train_loss"] == pytest.approx(h_b["train_loss"], rel=1e-6)
    last_a = torch.load(res_a.last_checkpoint, weights_only=True)["state_dict"]
    last_b = torch.load(res_b.last_checkpoint, weights_only=True)["state_dict"]
    for k in last_a:
        assert torch.allclose(last_a[k], last_b[k], atol=1e-6), k
    assert res_a.best_epoch == res_b.best_epoch


def test_resume_refuses_a_pickled_module(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, bad)  # unpickling would build a module
    x, y = data(8)
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        fit(LinearTask(), TensorDataset(x, y), None, cfg(tmp_path, resume_from=str(bad)))


def test_ddp_spawned_processes_equal_one(tmp_path, monkeypatch):
    """The default start method ("auto" -> spawn, the tasks here pickle) inside this pytest process,
    after earlier tests have run multi-threaded torch ops in it: 2 spawned gloo processes == 1 process."""
    chosen = []
    real = train_mod.resolve_start_method
    monkeypatch.setattr(train_mod, "resolve_start_method", lambda m, p: chosen.append(real(m, p)) or chosen[-1])
    _ddp_equals_one(tmp_path, "auto")
    assert chosen == ["spawn"]


def test_ddp_start_method_resolution():
    assert train_mod.resolve_start_method("auto", LinearTask()) == "spawn"
    assert train_mod.resolve_start_method("fork", LinearTask()) == "fork"
    local = LinearTask()
    local.loss_fn = lambda a, b: (a - b).pow(2).mean()  # a lambda cannot be pickled for spawn
    with pytest.warns(RuntimeWarning, match="cannot be pickled.*module level"):
        assert train_mod.resolve_start_method("auto", local) == "fork"
    x, y = data(8)
    with pytest.raises(ConfigError, match="ddp_start_method='forkserver'.*spawn"):
        fit(LinearTask(), TensorDataset(x, y), None, cfg("unused", ddp_start_method="forkserver"))


def test_ddp_forked_processes_equal_one(tmp_path):
    """Same global batch (8 of 32, shuffled, momentum): gloo DDP with 2 forked processes == 1 process.

    Runs in a fresh interpreter: a forked child inherits the parent's OpenMP / autograd thread state,
    and after earlier tests in this pytest process it can hang or refuse (PyTorch wiki "Autograd and
    Fork") - the reason "auto" spawns.
    """
    import subprocess
    import sys
    from pathlib import Path

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_train as t; from pathlib import Path; t._ddp_equals_one(Path({str(tmp_path)!r}), 'fork')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _ddp_equals_one(tmp_path, start_method):
    x, y = data(32)
    ds = TensorDataset(x, y)
    kw = dict(batch_size=8, max_epochs=3, momentum=0.9, shuffle=True, seed=5, ddp_start_method=start_method)
    one, two = dropout_task(), dropout_task()
    one.model[1].p = two.model[1].p = 0.0  # dropout masks differ per process; the update must not
    r1 = fit(one, ds, None, cfg(tmp_path / "one", **kw))
    r2 = fit(two, ds, None, cfg(tmp_path / "two", devices=2, **kw))
    for k, v in one.model.state_dict().items():
        assert torch.allclose(two.model.state_dict()[k], v, atol=1e-5), k
    assert [h["train_loss"] for h in r2.history] == pytest.approx([h["train_loss"] for h in r1.history], rel=1e-5)
    assert not torch.allclose(one.model[0].weight, dropout_task().model[0].weight)  # it trained


def test_bf16_refuses_without_hardware(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "cpu_supports_bf16", lambda: False)
    x, y = data(8)
    with pytest.raises(HardwareError, match="avx512_bf16"):
        fit(LinearTask(), TensorDataset(x, y), None, cfg(tmp_path, precision="bf16"))


def test_bf16_autocast_where_supported(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "cpu_supports_bf16", lambda: True)
    seen = []

    class Probe(LinearTask):
        def training_loss(self, model, batch):
            x, y = batch
            out = model(x).squeeze(1)
            seen.append(out.dtype)
            return ((out.float() - y) ** 2).mean()

    x, y = data(16)
    task = Probe()
    res = fit(task, TensorDataset(x, y), None, cfg(tmp_path, precision="bf16", batch_size=4, max_epochs=3, lr=0.1))
    assert set(seen) == {torch.bfloat16}
    assert task.model.weight.dtype == torch.float32  # master weights stay fp32
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


@pytest.mark.parametrize("kw,match", [(dict(optimizer="lbfgs"), "lbfgs"), (dict(nesterov=True), "momentum"),
                                      (dict(schedule="linear"), "linear"), (dict(batch_size=-1), "batch_size"),
                                      (dict(precision="fp16"), "fp16")])
def test_bad_config_is_named(tmp_path, kw, match):
    x, y = data(8)
    with pytest.raises(ConfigError, match=match):
        fit(LinearTask(), TensorDataset(x, y), None, cfg(tmp_path, **kw))


def test_unknown_monitor_lists_available_metrics(tmp_path):
    x, y = data(8)
    with pytest.raises(ConfigError, match="val_loss"):
        fit(LinearTask(), TensorDataset(x, y), TensorDataset(x, y), cfg(tmp_path, monitor="val_acc"))


def test_given_sampler_is_drawn_under_the_epoch_seed(tmp_path):
    """A WeightedRandomSampler's draw for epoch e is the one torch makes under seed + e (resumable, DDP-safe)."""
    from torch.utils.data import WeightedRandomSampler

    x, y = data(8)
    weights = torch.tensor([8.0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.double)
    sampler = WeightedRandomSampler(weights, num_samples=8, replacement=True)
    task = LinearTask()
    fit(task, TensorDataset(x, y), None, cfg(tmp_path, batch_size=1, max_epochs=2, seed=11), sampler=sampler)
    order = []
    for epoch in range(2):
        torch.manual_seed(11 + epoch)
        order += [[int(i)] for i in WeightedRandomSampler(weights, num_samples=8, replacement=True)]
    assert sum(o == [0] for o in order) > 4  # the weighting shows
    w, b = sgd_reference(x, y, order, lr=0.05)
    assert torch.allclose(params(task.model)[0], w, atol=1e-5)
