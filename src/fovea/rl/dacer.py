"""DACER (Wang et al. 2024, arXiv 2405.15177) in PyTorch, written from the paper: a diffusion model as the
policy (20-step VP/DDPM chain, Q back-propagated through it), DSAC-T's distributional twin critics, and an
entropy regulator: the entropy of the policy estimated by a Gaussian-mixture fit sets alpha, which scales the
exploration noise added to the diffusion sample.

Critic loss (DSAC-T, per critic, sg = stop-gradient): target from the target critic with the smaller mean,
y_mean = rs r + gamma (1 - d) m', y_sample = rs r + gamma (1 - d) (m' + s' clip(z, -3, 3)), z ~ N(0, 1);
sigma_bar = EMA_tau of the batch-mean std; y_b = sg(m) + clip(y_sample - sg(m), -3 sigma_bar, 3 sigma_bar);
L = -(sigma_bar^2 + eps) mean(m sg(y_mean - m) / (sg(s)^2 + eps) + s ((sg(m) - y_b)^2 - sg(s)^2) / (sg(s)^3 + eps)).
Policy loss: -mean(min(m1, m2)(s, a)) with a drawn through the chain. Alpha loss: -log alpha (-H + H_target).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fovea.rl.diffusion import VPSchedule, clip_unit, ddpm_sample
from fovea.rl.entropy import gmm_entropy
from fovea.rl.networks import DistributionalCritic, NoisePredictor


@dataclass
class DACERConfig:
    gamma: float = 0.99
    lr: float = 1e-4
    tau: float = 0.005
    policy_delay: int = 2
    reward_scale: float = 0.2
    batch_size: int = 256
    hidden: int = 256
    depth: int = 3
    diffusion_steps: int = 20
    noise_scale: float = 0.1  # the official code: 0.15 for Humanoid / HalfCheetah, 0.1 for the other envs
    log_alpha0: float = 1.2  # the official code's init (alpha = 3.32; its comment: "1.2 or 1.7")
    alpha_lr: float = 3e-2
    target_entropy_per_dim: float = -0.9
    alpha_every: int = 10_000  # updates between entropy estimates (and alpha steps), first at update 0
    entropy_samples: int = 200
    epsilon: float = 0.1
    bound: float = 3.0
    clip_grad: str = "zero"  # "zero" = the official clamp; "inward" keeps gradients that point back into [-1, 1]


class DACER(nn.Module):
    """Actor, twin critics + targets, log alpha and their Adam optimisers. The noisy policy
    a = clip(chain(s) + N(0, I) alpha noise_scale, -1, 1) is used everywhere as in the official code: acting,
    the critic target's next action, the policy loss and the entropy estimate; evaluation drops the noise."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DACERConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DACERConfig()
        self.act_dim = act_dim
        self.actor = NoisePredictor(obs_dim, act_dim, cfg.hidden, cfg.depth)
        self.critics = nn.ModuleList(DistributionalCritic(obs_dim, act_dim, cfg.hidden, cfg.depth) for _ in range(2))
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.schedule = VPSchedule(cfg.diffusion_steps)
        self.log_alpha = nn.Parameter(torch.tensor(cfg.log_alpha0))
        self.register_buffer("sigma_bar", torch.full((2,), -1.0))  # -1: set from the first batch
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.opt_critic = torch.optim.Adam(self.critics.parameters(), lr=cfg.lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.updates = 0
        self.entropy = float("nan")

    @property
    def target_entropy(self) -> float:
        return self.cfg.target_entropy_per_dim * self.act_dim

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-free actions (B, act_dim) in [-1, 1] from the diffusion chain (differentiable in the actor)."""
        eps = self.actor.bind(obs, self.schedule.steps)
        a = ddpm_sample(eps, self.schedule, (obs.shape[0], self.act_dim), generator, obs.device, self.cfg.clip_grad)
        return clip_unit(a, self.cfg.clip_grad)

    def noisy(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The behaviour policy (B, act_dim): clip(sample + N(0, I) exp(log alpha) noise_scale, -1, 1)."""
        a = self.sample(obs, generator)
        scale = self.log_alpha.detach().exp() * self.cfg.noise_scale
        return clip_unit(a + torch.randn(a.shape, generator=generator, device=a.device) * scale, self.cfg.clip_grad)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, explore: bool = True, generator: torch.Generator | None = None) -> np.ndarray:
        """One observation (obs_dim,) -> action (act_dim,) in [-1, 1]; explore adds the noise, eval does not."""
        o = torch.as_tensor(obs, dtype=torch.float32)[None]
        return (self.noisy(o, generator) if explore else self.sample(o, generator))[0].numpy()

    # --- losses ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def critic_targets(self, rew, next_obs, done, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_mean, y_sample) (B,) from the target critic with the smaller mean at the noisy next action;
        done = 1 (a true termination, never a time-limit truncation) stops the bootstrap: y = reward_scale r."""
        c = self.cfg
        next_act = self.noisy(next_obs, generator)
        (m1, s1), (m2, s2) = (t(next_obs, next_act) for t in self.targets)
        first = m1 < m2
        m_next, s_next = torch.where(first, m1, m2), torch.where(first, s1, s2)
        z = torch.randn(m_next.shape, generator=generator).clamp(-c.bound, c.bound)
        y_mean = c.reward_scale * rew + c.gamma * (1 - done) * m_next
        y_sample = c.reward_scale * rew + c.gamma * (1 - done) * (m_next + s_next * z)
        return y_mean, y_sample

    def critic_loss(self, obs, act, rew, next_obs, done, generator=None) -> torch.Tensor:
        c = self.cfg
        y_mean, y_sample = self.critic_targets(rew, next_obs, done, generator)
        total = obs.new_zeros(())
        for i, critic in enumerate(self.critics):
            mean, std = critic(obs, act)
            with torch.no_grad():
                batch_std = std.mean()
                first_batch = self.sigma_bar[i] < 0
                self.sigma_bar[i] = torch.where(first_batch, batch_std, (1 - c.tau) * self.sigma_bar[i] + c.tau * batch_std)
            total = total + dsac_t_loss(mean, std, y_mean, y_sample, self.sigma_bar[i], c.epsilon, c.bound)
        return total

    def policy_loss(self, obs, generator=None) -> torch.Tensor:
        a = self.noisy(obs, generator)
        q = torch.minimum(*(critic(obs, a)[0] for critic in self.critics))
        return -q.mean()

    # --- one update -----------------------------------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor], generator=None) -> dict[str, float]:
        """One gradient step on a batch {obs (B, o), act (B, a), rew (B,), next_obs (B, o), done (B,)}: both
        critics every call; actor and targets every policy_delay calls, the actor's gradient taken against the
        critics before their step (as in the official code); entropy + alpha every alpha_every calls."""
        out = {}
        if self.updates % self.cfg.alpha_every == 0:
            out["entropy"] = self.update_alpha(batch["obs"], generator)
        loss = self.critic_loss(batch["obs"], batch["act"], batch["rew"], batch["next_obs"], batch["done"], generator)
        self.opt_critic.zero_grad()
        loss.backward()
        out["critic"] = loss.item()
        policy_step = self.updates % self.cfg.policy_delay == 0
        if policy_step:
            self.critics.requires_grad_(False)
            p_loss = self.policy_loss(batch["obs"], generator)
            self.opt_actor.zero_grad()
            p_loss.backward()
            self.critics.requires_grad_(True)
            out["policy"] = p_loss.item()
        self.opt_critic.step()
        if policy_step:
            self.opt_actor.step()
            with torch.no_grad():
                for t, s in zip(self.targets.parameters(), self.critics.parameters()):
                    t.lerp_(s, self.cfg.tau)
        self.updates += 1
        return out

    def update_alpha(self, states: torch.Tensor, generator=None) -> float:
        """Estimate the noisy policy's entropy on `states` (S, obs_dim), entropy_samples actions each, and take
        one alpha step on L = -log alpha (-H + H_target); returns the estimate (nats)."""
        n = self.cfg.entropy_samples
        with torch.inference_mode():
            acts = self.noisy(states.repeat_interleave(n, 0), generator).view(len(states), n, self.act_dim)
        self.entropy = gmm_entropy(acts.numpy())
        loss = -self.log_alpha * (-self.entropy + self.target_entropy)
        self.opt_alpha.zero_grad()
        loss.backward()
        self.opt_alpha.step()
        return self.entropy


def dsac_t_loss(mean, std, y_mean, y_sample, sigma_bar, epsilon: float = 0.1, bound: float = 3.0) -> torch.Tensor:
    """DSAC-T's critic loss of one critic (see the module docstring); mean, std, targets (B,)."""
    m, s = mean.detach(), std.detach()
    y_b = m + (y_sample - m).clamp(-bound * sigma_bar, bound * sigma_bar)
    term_mean = mean * (y_mean - m) / (s ** 2 + epsilon)
    term_std = std * ((m - y_b) ** 2 - s ** 2) / (s ** 3 + epsilon)
    return -(sigma_bar ** 2 + epsilon) * (term_mean + term_std).mean()
