"""Training loops on gymnasium environments: DACER (one update per environment step after a random
warm-up), SAC from stable-baselines3 as the baseline, both evaluated at the same environment steps with
the same deterministic evaluation (no exploration noise, fixed evaluation seeds).

A run (`DACERRun`, `SACRun`) advances in chunks of environment steps and keeps its own global random states
(torch, numpy, random) and clocks, so several runs can share one process in lockstep (`train_lockstep`) and
give the same curves as each run alone."""

from __future__ import annotations

import datetime
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fovea.rl.dacer import DACER, DACERConfig


@dataclass
class Curve:
    """Evaluation points: env steps and mean undiscounted return over the evaluation episodes; the run's own
    wall and process-CPU seconds (training + evaluation, counted only while this run was active)."""

    algo: str
    env_id: str
    seed: int
    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


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


class _Run:
    """What DACERRun and SACRun share: the run's global random states, swapped in while it works; its clocks;
    its curve. Subclasses set self.curve and implement _advance(n) and _policy() (obs -> action, env units)."""

    curve: Curve

    def __init__(self) -> None:
        self.step = 0
        self._rng_states: tuple | None = None

    @contextmanager
    def _active(self):
        """Swap in this run's torch / numpy / random global states (saved on the way out) and clock the work."""
        outside = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        if self._rng_states is not None:
            torch.set_rng_state(self._rng_states[0])
            np.random.set_state(self._rng_states[1])
            random.setstate(self._rng_states[2])
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.curve.wall_s += time.perf_counter() - t0
            self.curve.cpu_s += time.process_time() - c0
            self._rng_states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
            torch.set_rng_state(outside[0])
            np.random.set_state(outside[1])
            random.setstate(outside[2])

    def advance(self, n: int) -> None:
        """n more environment steps (each followed by its gradient step once past the warm-up)."""
        with self._active():
            self._advance(n)

    def evaluate(self, episodes: int) -> float:
        """Deterministic evaluation now (the curve's seed picks the episodes); appended to the curve."""
        with self._active():
            ret = evaluate(self._policy(), self.curve.env_id, episodes, self.curve.seed)
        self.curve.steps.append(self.step)
        self.curve.returns.append(ret)
        return ret

    def _advance(self, n: int) -> None:
        raise NotImplementedError

    def _policy(self) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        return ""


class DACERRun(_Run):
    """DACER on one env: `warmup` uniform random steps, then one update per env step (entropy + alpha every
    alpha_every updates inside DACER.update)."""

    def __init__(self, env_id: str, total_steps: int, seed: int = 0, cfg: DACERConfig | None = None,
                 warmup: int = 5000, buffer: int = 1_000_000):
        import gymnasium as gym

        super().__init__()
        self.curve = Curve("DACER", env_id, seed)
        self.warmup = warmup
        with self._active():
            torch.manual_seed(seed)
            self.rng = np.random.default_rng(seed)
            self.env = gym.make(env_id)
            obs_dim, self.act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
            self.agent = DACER(obs_dim, self.act_dim, cfg)
            self.replay = Replay(obs_dim, self.act_dim, min(buffer, total_steps))
            self.to_env = _scale(self.env)
            self.obs, _ = self.env.reset(seed=seed)
            self.env.action_space.seed(seed)

    def _advance(self, n: int) -> None:
        for _ in range(n):
            self.step += 1
            a = (self.rng.uniform(-1, 1, self.act_dim).astype(np.float32) if self.step <= self.warmup
                 else self.agent.act(self.obs))
            self.obs, _ = env_step(self.env, self.obs, a, self.to_env, self.replay)
            if self.step > self.warmup:
                self.agent.update(self.replay.sample(self.agent.cfg.batch_size, self.rng))

    def _policy(self):
        return lambda o: self.to_env(self.agent.act(o, explore=False))

    def describe(self) -> str:
        return f", alpha {self.agent.log_alpha.exp().item():.3f}, entropy {self.agent.entropy:.2f}"


class SACRun(_Run):
    """stable-baselines3 SAC with its defaults (2x256 ReLU, lr 3e-4, batch 256, auto entropy), `warmup` random
    steps (learning_starts), one gradient step per env step; replay capacity min(1e6, total_steps), which
    changes nothing while the buffer never wraps. Evaluation uses the mean action."""

    def __init__(self, env_id: str, total_steps: int, seed: int = 0, warmup: int = 5000):
        import gymnasium as gym
        from stable_baselines3 import SAC

        super().__init__()
        self.curve = Curve("SAC", env_id, seed)
        with self._active():
            self.model = SAC("MlpPolicy", gym.make(env_id), learning_starts=warmup, seed=seed, device="cpu",
                             verbose=0, buffer_size=min(1_000_000, max(total_steps, 1)))

    def _advance(self, n: int) -> None:
        # the first call resets the env; later calls continue the same episode and step count
        self.model.learn(total_timesteps=n, reset_num_timesteps=self.step == 0)
        self.step = self.model.num_timesteps

    def _policy(self):
        return lambda o: self.model.predict(o, deterministic=True)[0]


def train_lockstep(runs: list[_Run], total_steps: int, eval_every: int, eval_episodes: int,
                   log: Callable[[str], None] | None = None, stop_return: float | None = None,
                   on_eval: Callable[[_Run], None] | None = None,
                   deadline: datetime.datetime | None = None) -> bool:
    """Advance every run eval_every env steps in turn, evaluate each, on_eval(run); repeat to total_steps. A
    run stops early once an evaluation reaches stop_return. With a deadline (aware UTC datetime) no new round
    starts unless the previous round's wall time still fits before it, so all runs stop at the same step.
    Returns True if every run finished (total_steps or stop_return), False if the deadline stopped them."""
    if eval_every < 1 or total_steps < 1:
        raise ValueError(f"train_lockstep: eval_every ({eval_every}) and total_steps ({total_steps}) must be >= 1")
    active, last_round_s = list(runs), 0.0
    while active:
        if deadline is not None:
            now = datetime.datetime.now(datetime.timezone.utc)
            if now + datetime.timedelta(seconds=last_round_s) > deadline:
                if log:
                    log(f"deadline {deadline:%H:%M} UTC: stopped at step {active[0].step} (a round takes {last_round_s:.0f} s)")
                return False
        t0 = time.perf_counter()
        for run in list(active):
            before = run.step
            run.advance(min(eval_every, total_steps - run.step))
            if run.step <= before:
                raise RuntimeError(f"{type(run).__name__} {run.curve.env_id} seed {run.curve.seed} did not advance "
                                   f"from step {before}: a bug in its _advance")
            ret = run.evaluate(eval_episodes)
            c = run.curve
            if log:
                log(f"{c.algo} {c.env_id} seed {c.seed} step {run.step}: return {ret:.1f}{run.describe()}, "
                    f"{c.cpu_s:.0f} CPU s, {c.wall_s:.0f} s")
            if on_eval:
                on_eval(run)
            if run.step >= total_steps or (stop_return is not None and ret >= stop_return):
                active.remove(run)
        last_round_s = time.perf_counter() - t0
    return True


def train_dacer(env_id: str, total_steps: int, seed: int = 0, cfg: DACERConfig | None = None, warmup: int = 5000,
                eval_every: int = 5000, eval_episodes: int = 5, buffer: int = 1_000_000,
                log: Callable[[str], None] | None = None, stop_return: float | None = None,
                on_eval: Callable[[Curve], None] | None = None) -> tuple[DACER, Curve]:
    """Train DACER for total_steps env steps (one update per step after `warmup` random ones); evaluate every
    eval_every steps (on_eval(curve so far) after each); stop early once an evaluation reaches stop_return."""
    run = DACERRun(env_id, total_steps, seed, cfg, warmup, buffer)
    train_lockstep([run], total_steps, eval_every, eval_episodes, log, stop_return,
                   (lambda r: on_eval(r.curve)) if on_eval else None)
    return run.agent, run.curve


def train_sac(env_id: str, total_steps: int, seed: int = 0, warmup: int = 5000, eval_every: int = 5000,
              eval_episodes: int = 5, log: Callable[[str], None] | None = None,
              stop_return: float | None = None, on_eval: Callable[[Curve], None] | None = None) -> Curve:
    """stable-baselines3 SAC with its defaults (lr 3e-4, batch 256, auto entropy), same warm-up and evaluation
    (after the gradient step of the evaluation's env step, as for DACER)."""
    run = SACRun(env_id, total_steps, seed, warmup)
    train_lockstep([run], total_steps, eval_every, eval_episodes, log, stop_return,
                   (lambda r: on_eval(r.curve)) if on_eval else None)
    return run.curve
