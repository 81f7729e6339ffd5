"""DACER's pieces against closed forms and hand-derived gradients; a tiny run on InvertedPendulum-v5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fovea.rl.dacer import DACER, DACERConfig, dsac_t_loss
from fovea.rl.diffusion import VPSchedule, clip_unit, ddpm_sample
from fovea.rl.entropy import gmm_entropy, mixture_entropy_bound
from fovea.rl.networks import Mish, NoisePredictor, sinusoidal


def test_vp_schedule_matches_the_formula():
    s = VPSchedule(20)
    for t in (1, 7, 20):
        expected = math.exp(-0.1 / 20 - 0.5 * (10 - 0.1) * (2 * t - 1) / 400)
        assert s.alphas[t - 1].item() == pytest.approx(expected, rel=1e-6)
    assert s.alpha_bars[-1].item() == pytest.approx(float(torch.prod(s.alphas.double())), rel=1e-5)
    # at t = 1 the posterior is x0 itself: coefficient 1 on x0, 0 on x_t, no variance
    assert s.post_coef_x0[0].item() == pytest.approx(1.0) and s.post_coef_xt[0].item() == pytest.approx(0.0, abs=1e-7)
    assert s.post_var[0].item() == pytest.approx(0.0, abs=1e-7)


def test_a_perfect_denoiser_samples_its_point_mass():
    s = VPSchedule(20)
    target = torch.tensor([[0.3, -0.7]]).expand(5, 2)

    def eps(x, t):  # the exact noise of x_t around x0 = target
        bar = s.alpha_bars[t - 1][:, None]
        return (x - bar.sqrt() * target) / (1 - bar).sqrt()

    out = ddpm_sample(eps, s, (5, 2), torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-5)


def test_the_chain_is_differentiable_in_the_actor():
    agent = DACER(3, 2, DACERConfig(hidden=16, depth=2, diffusion_steps=5))
    a = agent.sample(torch.randn(4, 3), torch.Generator().manual_seed(0))
    a.sum().backward()
    grads = [p.grad for p in agent.actor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert a.shape == (4, 2) and float(a.detach().abs().max()) <= 1.0


def test_mish_matches_torch_values_and_gradients():
    x = (torch.randn(500, dtype=torch.float64) * 8).requires_grad_()  # covers the > 20 branch too
    x32 = x.detach().float().requires_grad_()
    ref = torch.nn.functional.mish(x)
    ours = Mish()(x32)
    assert torch.allclose(ours.double(), ref.detach(), atol=1e-5, rtol=1e-5)
    ref.sum().backward()
    ours.sum().backward()
    assert torch.allclose(x32.grad.double(), x.grad, atol=1e-5, rtol=1e-4)


def test_bound_noise_predictor_equals_the_plain_forward():
    torch.manual_seed(0)
    net = NoisePredictor(5, 3, hidden=16, depth=2)
    obs, x = torch.randn(4, 5), torch.randn(4, 3)
    eps = net.bind(obs, 7)
    for t in (1, 4, 7):
        tt = torch.full((4,), t)
        assert torch.allclose(eps(x, tt), net(obs, x, tt), atol=1e-6)


def test_inward_clip_gradient_by_hand():
    x = torch.tensor([-2.0, -2.0, 0.5, 2.0, 2.0], requires_grad=True)
    g = torch.tensor([1.0, -1.0, 3.0, 1.0, -1.0])  # d loss / d output
    (clip_unit(x, "inward") * g).sum().backward()
    # descent x - lr g: at -2 only g < 0 moves x up into the box; at +2 only g > 0 moves it down
    assert x.grad.tolist() == [0.0, -1.0, 3.0, 1.0, 0.0]
    x.grad = None
    (clip_unit(x, "zero") * g).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 3.0, 0.0, 0.0]
    assert clip_unit(x.detach(), "inward").tolist() == [-1.0, -1.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="inward"):
        clip_unit(x, "soft")


def _bandit_policy_mean(clip_grad: str, updates: int) -> float:
    """One state, done = 1, reward -5 (a - 0.5)^2 on uniform actions: the optimal action is 0.5."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = DACERConfig(hidden=32, depth=2, diffusion_steps=5, batch_size=64, lr=3e-3, alpha_every=10 ** 9,
                      entropy_samples=20, clip_grad=clip_grad)
    agent = DACER(1, 1, cfg)
    obs = torch.zeros(64, 1)
    for _ in range(updates):
        act = torch.rand(64, 1, generator=g) * 2 - 1
        agent.update({"obs": obs, "act": act, "rew": -5 * (act[:, 0] - 0.5) ** 2, "next_obs": obs,
                      "done": torch.ones(64)})
    with torch.no_grad():
        return float(agent.sample(torch.zeros(256, 1), g).mean())


@pytest.mark.slow
def test_actor_critic_loop_finds_the_bandit_optimum():
    # the official zero-gradient clip lets the actor run into the bound first and stay there; the inward rule
    # brings it back to the optimum 0.5 once the critic has learned the parabola
    assert abs(_bandit_policy_mean("inward", 500) - 0.5) < 0.1


def test_mixture_entropy_bound_closed_forms():
    cov = np.diag([0.5, 2.0])
    gauss = 0.5 * 2 * (1 + math.log(2 * math.pi)) + 0.5 * math.log(1.0)
    assert mixture_entropy_bound(np.array([1.0, 0.0, 0.0]), np.stack([cov] * 3)) == pytest.approx(gauss)
    assert mixture_entropy_bound(np.array([0.5, 0.5]), np.stack([cov, cov])) == pytest.approx(math.log(2) + gauss)
    rng = np.random.default_rng(0)
    samples = rng.normal(0, [0.3, 0.6], (2, 600, 2))
    exact = 0.5 * 2 * (1 + math.log(2 * math.pi)) + 0.5 * math.log(0.09 * 0.36)
    est = gmm_entropy(samples)
    assert exact - 0.05 < est < exact + 1.2  # an upper bound: >= the truth (up to sampling), < truth + log 3


def test_dsac_t_gradients_by_hand():
    mean = torch.tensor([1.0, 2.0], requires_grad=True)
    std = torch.tensor([0.5, 1.5], requires_grad=True)
    y_mean, y_sample, sigma_bar, eps = torch.tensor([1.5, 1.0]), torch.tensor([3.0, 2.2]), torch.tensor(0.4), 0.1
    dsac_t_loss(mean, std, y_mean, y_sample, sigma_bar, eps, 3.0).backward()
    k = (0.4 ** 2 + eps) / 2
    s = std.detach()
    y_b = torch.tensor([1.0 + 1.2, 2.0 + 0.2])  # y_sample - mean clipped to +-1.2
    assert torch.allclose(mean.grad, -k * (y_mean - mean.detach()) / (s ** 2 + eps))
    assert torch.allclose(std.grad, -k * ((mean.detach() - y_b) ** 2 - s ** 2) / (s ** 3 + eps))


def test_sinusoidal_features():
    f = sinusoidal(torch.tensor([0, 3]), 16)
    assert f.shape == (2, 16)
    assert torch.allclose(f[0], torch.cat([torch.zeros(8), torch.ones(8)]) / 4)
    assert torch.allclose((f * 4).pow(2)[:, :8] + (f * 4).pow(2)[:, 8:], torch.ones(2, 8), atol=1e-6)


def test_alpha_moves_toward_the_target_entropy():
    agent = DACER(3, 1, DACERConfig(hidden=16, depth=2, diffusion_steps=5, entropy_samples=50))
    before = agent.log_alpha.item()
    h = agent.update_alpha(torch.randn(4, 3))
    # d loss / d log_alpha = H - H_target: alpha falls when the policy is more random than the target
    assert (agent.log_alpha.item() < before) == (h > agent.target_entropy)


def test_one_update_changes_critics_actor_and_targets():
    torch.manual_seed(0)
    agent = DACER(3, 2, DACERConfig(hidden=16, depth=2, diffusion_steps=4, batch_size=8))
    batch = {"obs": torch.randn(8, 3), "act": torch.rand(8, 2) * 2 - 1, "rew": torch.randn(8),
             "next_obs": torch.randn(8, 3), "done": torch.zeros(8)}
    snap = {k: v.clone() for k, v in agent.state_dict().items()}
    out = agent.update(batch)
    assert set(out) == {"critic", "policy", "entropy"}  # update 0 also estimates the entropy (official)
    changed = {k.split(".")[0] for k, v in agent.state_dict().items() if not torch.equal(v, snap[k])}
    assert {"actor", "critics", "targets", "sigma_bar"} <= changed


@pytest.mark.slow
def test_dacer_learns_inverted_pendulum_a_little():
    from fovea.rl.train import train_dacer

    cfg = DACERConfig(hidden=64, depth=2, diffusion_steps=10, batch_size=64, lr=1e-3, alpha_every=1000)
    _, curve = train_dacer("InvertedPendulum-v5", 6000, seed=0, cfg=cfg, warmup=1000, eval_every=6000,
                           eval_episodes=3)
    assert curve.returns[-1] > 100  # random actions hold the pole ~5-10 steps


def test_critic_targets_stop_bootstrapping_only_at_termination():
    agent = DACER(3, 1, DACERConfig(hidden=8, depth=1, diffusion_steps=3))
    for target, (m, s) in zip(agent.targets, [(5.0, 0.5), (3.0, 0.25)]):  # constant Q: mean m, std softplus(s)
        last = target.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([m, s]))
    rew, done = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    y_mean, y_sample = agent.critic_targets(rew, torch.randn(3, 3), done, torch.Generator().manual_seed(0))
    # reward scale 0.2, gamma 0.99, the smaller target mean 3: bootstrapped rows 0.2 r + 0.99 * 3, terminal 0.2 r
    assert torch.allclose(y_mean, torch.tensor([0.2 + 2.97, 0.4, 2.97]))
    assert y_sample[1].item() == pytest.approx(0.4)
    std = math.log1p(math.exp(0.25)) + 1e-6  # the smaller-mean critic's std, z clipped to +-3
    assert torch.all((y_sample - y_mean)[[0, 2]].abs() <= 0.99 * 3 * std + 1e-6)


def test_env_step_stores_termination_not_truncation_and_scales_actions():
    gymnasium = pytest.importorskip("gymnasium")
    from gymnasium.wrappers import TimeLimit

    from fovea.rl.train import Replay, _scale, env_step

    class Rail(gymnasium.Env):
        """x_{k+1} = x_k + u, reward 1, terminated when |x| > 2.5; actions in [-3, 3]."""

        action_space = gymnasium.spaces.Box(-3.0, 3.0, (1,), np.float32)
        observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.x = np.zeros(1, np.float32)
            return self.x.copy(), {}

        def step(self, u):
            self.x = self.x + np.asarray(u, np.float32)
            return self.x.copy(), 1.0, bool(abs(self.x[0]) > 2.5), False, {}

    env = TimeLimit(Rail(), max_episode_steps=4)
    replay, to_env = Replay(1, 1, 10), _scale(env)
    obs, ended = env.reset()[0], []
    for a in [0.1, 0.1, 0.1, 0.1, 1.0]:  # policy units: 0.1 -> 0.3 in the env's [-3, 3]
        obs, end = env_step(env, obs, np.array([a], np.float32), to_env, replay)
        ended.append(end)
    n = replay.size
    assert ended == [False, False, False, True, True]
    assert np.allclose(replay.next_obs[:n, 0], [0.3, 0.6, 0.9, 1.2, 3.0])  # the real last obs, not the reset one
    assert np.allclose(replay.obs[:n, 0], [0.0, 0.3, 0.6, 0.9, 0.0])
    assert replay.done[:n].tolist() == [0, 0, 0, 0, 1]  # step 4 truncated (time limit): still bootstraps
    assert np.allclose(replay.act[:n, 0], [0.1, 0.1, 0.1, 0.1, 1.0]) and obs.tolist() == [0.0]
