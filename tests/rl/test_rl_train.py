"""Runs that share a process in lockstep give the curves they give alone; chunked SAC equals one SB3 learn call."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from fovea.rl.dacer import DACERConfig  # noqa: E402
from fovea.rl.train import DACERRun, SACRun, train_lockstep  # noqa: E402

TINY = DACERConfig(hidden=16, depth=2, diffusion_steps=3, batch_size=16, lr=1e-3, alpha_every=40, entropy_samples=10)


def _dacer(env_id: str, seed: int) -> DACERRun:
    return DACERRun(env_id, 120, seed, TINY, warmup=40)


def test_interleaved_dacer_runs_give_their_curves_alone():
    alone = []
    for env_id, seed in (("InvertedPendulum-v5", 0), ("Hopper-v5", 1)):
        run = _dacer(env_id, seed)
        train_lockstep([run], 120, 40, 1)
        alone.append(run.curve.returns)
    torch.manual_seed(123)  # the caller's global state must neither matter nor be touched
    before = torch.get_rng_state()
    runs = [_dacer("InvertedPendulum-v5", 0), _dacer("Hopper-v5", 1)]
    assert train_lockstep(runs, 120, 40, 1)
    assert torch.equal(torch.get_rng_state(), before)
    assert [r.curve.returns for r in runs] == alone
    assert [r.curve.steps for r in runs] == [[40, 80, 120]] * 2
    assert all(r.curve.cpu_s > 0 and r.curve.wall_s > 0 for r in runs)


def test_chunked_sac_equals_one_learn_call_and_ignores_a_neighbour():
    from stable_baselines3 import SAC
    import gymnasium as gym

    ref = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=50, seed=4, device="cpu", verbose=0,
              buffer_size=150)
    ref.learn(total_timesteps=150)  # one call: the reference
    runs = [SACRun("Pendulum-v1", 150, seed=4, warmup=50), _dacer("InvertedPendulum-v5", 2)]
    train_lockstep(runs, 150, 50, 1)
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    ours = runs[0].model.predict(obs, deterministic=True)[0]
    assert runs[0].step == 150 and np.allclose(ours, ref.predict(obs, deterministic=True)[0], atol=1e-6)
    assert runs[0].model.replay_buffer.size() == ref.replay_buffer.size() == 150


def test_deadline_stops_every_run_at_the_same_step():
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    runs = [_dacer("InvertedPendulum-v5", 0), _dacer("InvertedPendulum-v5", 1)]
    assert not train_lockstep(runs, 120, 40, 1, deadline=past)
    assert [r.curve.steps for r in runs] == [[], []]
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    assert train_lockstep(runs, 120, 40, 1, deadline=soon)
    assert [r.curve.steps for r in runs] == [[40, 80, 120]] * 2
