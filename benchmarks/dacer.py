"""DACER vs stable-baselines3 SAC (baseline) on gymnasium v5 MuJoCo environments, same environment steps, same
random warm-up, same deterministic evaluation (mean return of --episodes seeded episodes every --eval-every
steps), several seeds; learning curves plotted to docs/benchmarks/dacer.png and tabulated.

v5 environments are not the paper's v3 (which needs mujoco-py / MuJoCo 2.1): returns are not directly
comparable with the paper's. DACER runs the paper's networks and hyper-parameters (3x256 mish MLPs, 20
diffusion steps, lr 1e-4, batch 256, reward scale 0.2, alpha from a 3-component GMM entropy estimate every
--alpha-every updates) unless --small is given.
Quick version: `--quick` (InvertedPendulum-v5, 1 seed, 6,000 steps, small networks; minutes).
Full: `--envs InvertedPendulum-v5 HalfCheetah-v5 Hopper-v5 --seeds 0 1 2 --steps 200000` (days on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import DOCS, Run, add_doc_args, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=["InvertedPendulum-v5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--warmup", type=int, default=5_000)
    ap.add_argument("--eval-every", type=int, default=5_000)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--alpha-every", type=int, default=10_000)
    ap.add_argument("--small", action="store_true", help="64x2 networks, 10 diffusion steps, batch 64, lr 1e-3")
    add_doc_args(ap, "dacer", "InvertedPendulum-v5, seed 0, 6,000 steps, --small")
    args = ap.parse_args()
    if args.quick:
        args.envs, args.seeds, args.steps, args.warmup, args.eval_every, args.episodes = (
            ["InvertedPendulum-v5"], [0], 6000, 1000, 2000, 3)
        args.small, args.alpha_every = True, 1000
    torch.set_num_threads(1)
    run = Run(args, full_command=".venv/bin/python benchmarks/dacer.py --envs InvertedPendulum-v5 HalfCheetah-v5 "
                                 "Hopper-v5 --seeds 0 1 2 --steps 200000")

    from fovea.rl.dacer import DACERConfig
    from fovea.rl.train import train_dacer, train_sac

    cfg = DACERConfig(alpha_every=args.alpha_every)
    if args.small:
        cfg = DACERConfig(hidden=64, depth=2, diffusion_steps=10, batch_size=64, lr=1e-3, alpha_every=args.alpha_every)
    curves = []
    for env_id in args.envs:
        for seed in args.seeds:
            _, c = train_dacer(env_id, args.steps, seed, cfg, args.warmup, args.eval_every, args.episodes, log=print)
            curves.append(c)
            curves.append(train_sac(env_id, args.steps, seed, args.warmup, args.eval_every, args.episodes, log=print))
    rows = [[c.env_id, c.algo, c.seed, " / ".join(f"{r:.0f}" for r in c.returns), f"{c.returns[-1]:.0f}",
             f"{c.wall_s:.0f}"] for c in curves]
    png = _plot(curves, Path(args.doc).with_suffix(".png") if args.doc != "-" else None)
    body = [f"Evaluation every {args.eval_every} env steps ({args.episodes} episodes, no exploration noise); "
            f"random warm-up {args.warmup} steps; DACER config {cfg}.", "",
            *table(["env", "algorithm", "seed", f"returns at {', '.join(str(s) for s in curves[0].steps)}",
                    "final", "wall s"], rows)]
    if png:
        body += ["", f"![learning curves]({png.name})"]
    run.write("DACER vs SAC", body)


def _plot(curves, path: Path | None) -> Path | None:
    if path is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({c.env_id for c in curves})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.5), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for c in curves:
            if c.env_id == env_id:
                ax.plot(c.steps, c.returns, label=f"{c.algo} s{c.seed}", color="C0" if c.algo == "DACER" else "C1")
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
