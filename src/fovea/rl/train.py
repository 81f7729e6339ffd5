"""Training loops on gymnasium environments: DACER (one update per environment step after a random
warm-up), SAC from stable-baselines3 as the baseline, both evaluated at the same environment steps with
the same deterministic evaluation (no exploration noise, fixed evaluation seeds)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fovea.rl.dacer import DACER, DACERConfig


@dataclass
class Curve:
    """Evaluation points: env steps and mean undiscounted return over the evaluation episodes."""

    algo: str
    env_id: str
    seed: int
    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    wall_s: float = 0.0


class Replay:
    """A ring buffer of transitions (float32 arrays)."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, obs, act, rew, next_obs, done) -> None:
        i = self.pos
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i] = obs, act, rew, next_obs, done
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, n)
        return {k: torch.from_numpy(getattr(self, k)[idx]) for k in ("obs", "act", "rew", "next_obs", "done")}


def _scale(env):
    """Policy action in [-1, 1] -> the env's units: low + (a + 1) (high - low) / 2 (InvertedPendulum: 3a)."""
    low, high = env.action_space.low, env.action_space.high
    return lambda a: low + (np.asarray(a) + 1.0) * 0.5 * (high - low)


def env_step(env, obs: np.ndarray, act: np.ndarray, to_env: Callable, replay: Replay) -> tuple[np.ndarray, bool]:
    """Step `env` with `act` (policy units), store the transition and return (the next observation to act on,
    whether an episode ended). Only `terminated` is stored as done (no bootstrapping past a true end); a
    `truncated` episode (time limit) is stored with done 0 and its real last observation as next_obs, so the
    critic still bootstraps there; the env is reset after either."""
    next_obs, r, term, trunc, _ = env.step(to_env(act))
    replay.add(obs, act, r, next_obs, float(term))
    if term or trunc:
        return env.reset()[0], True
    return next_obs, False


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int, seed: int) -> float:
    """Mean return of `policy` (obs -> action in the env's units) over `episodes` seeded episodes."""
    import gymnasium as gym

    env = gym.make(env_id)
    total = []
    for k in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + k)
        ret, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            ret += float(r)
            done = term or trunc
        total.append(ret)
    env.close()
    return float(np.mean(total))


def train_dacer(env_id: str, total_steps: int, seed: int = 0, cfg: DACERConfig | None = None, warmup: int = 5000,
                eval_every: int = 5000, eval_episodes: int = 5, buffer: int = 1_000_000,
                log: Callable[[str], None] | None = None, stop_return: float | None = None,
                on_eval: Callable[[Curve], None] | None = None) -> tuple[DACER, Curve]:
    """Train DACER for total_steps env steps (one update per step after `warmup` random ones); evaluate every
    eval_every steps (on_eval(curve so far) after each); stop early once an evaluation reaches stop_return."""
    import gymnasium as gym

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agent = DACER(obs_dim, act_dim, cfg)
    replay = Replay(obs_dim, act_dim, min(buffer, total_steps))
    to_env = _scale(env)
    curve = Curve("DACER", env_id, seed)
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    for step in range(1, total_steps + 1):
        a = rng.uniform(-1, 1, act_dim).astype(np.float32) if step <= warmup else agent.act(obs)
        obs, _ = env_step(env, obs, a, to_env, replay)
        if step > warmup:
            agent.update(replay.sample(agent.cfg.batch_size, rng))  # entropy + alpha every alpha_every inside
        if step % eval_every == 0:
            ret = evaluate(lambda o: to_env(agent.act(o, explore=False)), env_id, eval_episodes, seed)
            curve.steps.append(step)
            curve.returns.append(ret)
            if log:
                log(f"DACER {env_id} seed {seed} step {step}: return {ret:.1f}, alpha {agent.log_alpha.exp().item():.3f}, "
                    f"entropy {agent.entropy:.2f}, {time.perf_counter() - t0:.0f} s")
            if on_eval:
                curve.wall_s = time.perf_counter() - t0
                on_eval(curve)
            if stop_return is not None and ret >= stop_return:
                break
    curve.wall_s = time.perf_counter() - t0
    return agent, curve


def train_sac(env_id: str, total_steps: int, seed: int = 0, warmup: int = 5000, eval_every: int = 5000,
              eval_episodes: int = 5, log: Callable[[str], None] | None = None,
              stop_return: float | None = None, on_eval: Callable[[Curve], None] | None = None) -> Curve:
    """stable-baselines3 SAC with its defaults (lr 3e-4, batch 256, auto entropy), same warm-up and evaluation."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    curve = Curve("SAC (stable-baselines3)", env_id, seed)
    t0 = time.perf_counter()

    class _Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                ret = evaluate(lambda o: self.model.predict(o, deterministic=True)[0], env_id, eval_episodes, seed)
                curve.steps.append(self.num_timesteps)
                curve.returns.append(ret)
                if log:
                    log(f"SAC {env_id} seed {seed} step {self.num_timesteps}: return {ret:.1f}, "
                        f"{time.perf_counter() - t0:.0f} s")
                if on_eval:
                    curve.wall_s = time.perf_counter() - t0
                    on_eval(curve)
                if stop_return is not None and ret >= stop_return:
                    return False
            return True

    model = SAC("MlpPolicy", gym.make(env_id), learning_starts=warmup, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=total_steps, callback=_Eval())
    curve.wall_s = time.perf_counter() - t0
    return curve
