"""DACER vs stable-baselines3 SAC (baseline) on gymnasium v5 MuJoCo environments, same environment steps, same
random warm-up, one gradient step per environment step on both sides (SB3's default train_freq 1 /
gradient_steps 1), same deterministic evaluation (mean return of --episodes seeded episodes every --eval-every
steps), several seeds; learning curves plotted next to the table (docs/benchmarks/dacer*.png).

v5 environments are not the paper's v3 (which needs mujoco-py / MuJoCo 2.1): returns are not directly
comparable with the paper's. `--size paper` runs the paper's networks and hyper-parameters (3x256 mish MLPs,
20 diffusion steps, lr 1e-4, batch 256, reward scale 0.2, alpha from a 3-component GMM entropy estimate every
--alpha-every updates); `--size small` (64x2, 10 diffusion steps, batch 64, lr 1e-3) is what a shared 2-core
CPU allows. `--clip-grad inward` keeps the gradients of the x0 clip that point back into [-1, 1] (the official
zero-gradient clip can leave the actor stuck at the action bound; see tests/rl/test_dacer.py's bandit).
`--tau` and `--alpha-every` change DACER's target-critic rate and entropy/alpha period (rows are labelled with
both). The pendulum block also evaluates hand-set linear controllers on the same episodes (no learning), to
show what a plateau at ~100-300 means and that the environment and evaluation loop can give 1000.

Every finished run is saved as JSON under --results/<block>/ at once (nothing is lost when a long job is
stopped) and the block is rewritten from all results there, so two processes (e.g. `--algos DACER` and
`--algos SAC`) can fill one block.
Blocks: `--block pendulum` (the "solved" check), `--block curves` (HalfCheetah / Hopper), `--profile` (speed).
Quick version: `--quick` (InvertedPendulum-v5, seed 0, 3,000 steps, small networks; minutes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import ROOT, Run, add_doc_args, table  # noqa: E402

PAPER_STEPS = "1-1.5 M"  # the paper's curves: 1.5e6 updates (3e7 env steps over 20 envs)


def _config(args, env_id: str):
    from fovea.rl.dacer import DACERConfig

    cfg = DACERConfig(alpha_every=args.alpha_every, clip_grad=args.clip_grad,
                      noise_scale=0.15 if env_id.split("-")[0] in ("HalfCheetah", "Humanoid") else 0.1)
    if args.size == "small":
        cfg = replace(cfg, hidden=64, depth=2, diffusion_steps=10, batch_size=64, lr=1e-3)
    if args.tau is not None:
        cfg = replace(cfg, tau=args.tau)
    return replace(cfg, lr=args.lr) if args.lr is not None else cfg


def _label(rec) -> str:
    """Row label: SAC, or DACER with the settings that the runs here vary (from the saved config)."""
    c = rec["config"]
    if rec["algo"] != "DACER":
        return rec["algo"]
    return (f"DACER {c['hidden']}x{c['depth']}/{c['diffusion_steps']} steps, lr {c['lr']:g}, clip {c['clip_grad']}, "
            f"tau {c['tau']:g}, alpha every {c['alpha_every']:,}")


def _run_all(args, out_dir: Path, write) -> None:
    """Every (seed, env, algo) of this invocation without a saved result, advanced in lockstep (one evaluation
    period each in turn), so a deadline or a stopped job leaves all of them at the same step."""
    from fovea.rl.train import DACERRun, SACRun, train_lockstep

    runs, paths = [], {}
    for seed in args.seeds:
        for env_id in args.envs:
            for algo in args.algos:
                tag = ""
                if algo == "DACER":
                    c = _config(args, env_id)
                    tag = f"_{c.hidden}x{c.depth}_lr{c.lr:g}_{c.clip_grad}_tau{c.tau:g}_ae{c.alpha_every}"
                path = out_dir / f"{env_id}_{algo}{tag}_s{seed}.json"
                if path.is_file() and not args.overwrite:
                    print(f"have {path}, skipped (--overwrite reruns)", flush=True)
                    continue
                if algo == "DACER":
                    run = DACERRun(env_id, args.steps, seed, _config(args, env_id), args.warmup)
                    run.config = asdict(run.agent.cfg)
                else:
                    run = SACRun(env_id, args.steps, seed, args.warmup)
                    run.config = "stable-baselines3 SAC defaults (2x256 ReLU, lr 3e-4, batch 256, auto alpha)"
                runs.append(run)
                paths[id(run)] = path
    command = " ".join(sys.argv)
    load_start = os.getloadavg()[0]

    def save(run, finished: bool = False) -> None:  # after every evaluation: a stopped job keeps its curve
        c = run.curve
        rec = {"algo": c.algo, "env": c.env_id, "seed": c.seed, "steps": c.steps, "returns": c.returns,
               "wall_s": c.wall_s, "cpu_s": c.cpu_s, "load_start": load_start, "load_end": os.getloadavg()[0], "finished": finished,
               "planned_steps": args.steps, "warmup": args.warmup, "eval_every": args.eval_every,
               "episodes": args.episodes, "command": command, "config": run.config}
        paths[id(run)].write_text(json.dumps(rec))

    deadline = None
    if args.deadline:
        now = datetime.datetime.now(datetime.timezone.utc)
        hh, mm = map(int, args.deadline.split(":"))
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if deadline < now:
            deadline += datetime.timedelta(days=1)
    if runs:
        train_lockstep(runs, args.steps, args.eval_every, args.episodes, log=print, stop_return=args.stop_return,
                       on_eval=save, deadline=deadline)
        for run in runs:
            done = run.step >= args.steps or (args.stop_return is not None and run.curve.returns
                                              and run.curve.returns[-1] >= args.stop_return)
            save(run, finished=bool(done))
    write()


def _doc_body(args, out_dir: Path, png: Path | None) -> list[str]:
    recs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    recs = [r for r in recs if r["steps"]]
    if not recs:
        return ["No evaluated runs yet."]
    rows, summary, goal = [], {}, args.stop_return
    for r in sorted(recs, key=lambda r: (r["env"], _label(r), r["seed"])):
        cpu = r.get("cpu_s")
        stopped = "" if r.get("finished", True) else f" (stopped at {r['steps'][-1]:,})"
        reached = [s for s, v in zip(r["steps"], r["returns"]) if goal is not None and v >= goal]
        rows.append([r["env"], _label(r), f"{r['seed']}{stopped}", " / ".join(f"{v:.0f}" for v in r["returns"]),
                     f"{r['returns'][-1]:.0f}", f"{max(r['returns']):.0f}",
                     *([f"{reached[0]:,}" if reached else "not reached"] if goal is not None else []),
                     f"{cpu:.0f}" if cpu is not None else "-", f"{r['wall_s']:.0f}",
                     f"{r['steps'][-1] / cpu:.1f}" if cpu else "-",
                     f"{r['load_start']:.1f} / {r['load_end']:.1f}" if "load_start" in r else f"- / {r['load_end']:.1f}"])
        summary.setdefault((r["env"], _label(r)), []).append(r)
    dacer_cfgs = {json.dumps(r["config"], sort_keys=True) for r in recs if r["algo"] == "DACER"}
    steps_sets = sorted({tuple(r["steps"]) for r in recs})
    cpu_h = sum(r.get("cpu_s", float("nan")) for r in recs) / 3600
    wall_h = sum(r["wall_s"] for r in recs) / 3600
    commands = sorted({r["command"] for r in recs if "command" in r})
    stopped = [r for r in recs if not r.get("finished", True)]
    planned = ", ".join(f"{n:,}" for n in sorted({r.get("planned_steps", r["steps"][-1]) for r in recs}))
    body = [
        f"**Budget**: {max(r['steps'][-1] for r in recs):,} environment steps per run at most "
        f"(planned: {planned}), "
        f"{len(recs)} runs, {cpu_h:.1f} CPU h and {wall_h:.1f} h of wall time in all, counted per run while it "
        f"worked (shared 2-core CPU, 1 thread per run, several runs per process in lockstep, load shown below). "
        f"This is **far below the paper's {PAPER_STEPS} steps** per curve: the returns show the first stretch of "
        "learning only and say nothing about the methods' final performance.", "",
    ]
    if stopped:
        body += [f"**{len(stopped)} run(s) stopped before their planned steps** (a `--deadline` or a stopped job; "
                 "marked in the seed column): the summary compares returns at the last step every run of an "
                 "environment reached.", ""]
    if commands:
        body += ["Runs made by:", "", *[f"    .venv/bin/python {c}" for c in commands], ""]
    def values(key: str, default) -> str:  # what the runs recorded (older records: this invocation's value)
        return " / ".join(f"{v:,}" for v in sorted({r.get(key, default) for r in recs}))

    body += [
        f"Evaluation every {values('eval_every', args.eval_every)} env steps ({values('episodes', args.episodes)} "
        "seeded episodes, deterministic: DACER without the exploration noise, SAC with its mean action, after the "
        f"gradient step of that env step); random warm-up {values('warmup', args.warmup)} steps on both sides; one "
        "gradient step per environment step on both sides.", "",
        "DACER configuration(s): " + "; ".join(f"`{c}`" for c in sorted(dacer_cfgs)) + ".", "",
        *table(["env", "algorithm", "seed", f"returns at {', '.join(map(str, max(steps_sets, key=len)))}",
                "final", "best", *([f"first eval >= {goal:g} at step"] if goal is not None else []), "CPU s",
                "wall s", "env steps per CPU s", "load (1 min) start / end"], rows), "",
    ]
    if goal is None:  # equal budgets: returns at the last step every run of the environment reached
        common = {e: min(r["steps"][-1] for r in recs if r["env"] == e) for e in {r["env"] for r in recs}}
        srows = []
        for (e, a), rs in sorted(summary.items()):
            vals = [r["returns"][r["steps"].index(common[e])] for r in rs if common[e] in r["steps"]]
            srows.append([e, a, f"{common[e]:,}", len(vals), f"{statistics.mean(vals):.0f} +- "
                          f"{statistics.stdev(vals) if len(vals) > 1 else float('nan'):.0f}",
                          f"{min(vals):.0f}", f"{max(vals):.0f}",
                          f"{sum(r.get('cpu_s', float('nan')) for r in rs) / len(rs):.0f}",
                          f"{sum(r['wall_s'] for r in rs) / len(rs):.0f}"])
        body += ["Evaluation return at the same step for every run (mean +- sample std over seeds):", "",
                 *table(["env", "algorithm", "step", "seeds", "return mean +- std", "min", "max",
                         "CPU s per run (mean)", "wall s per run (mean)"], srows)]
    else:
        body += ["Mean (min-max) final return over seeds:", "",
                 *table(["env", "algorithm", "last eval step (min-max)", "seeds", "mean final", "min", "max"],
                        [[e, a, f"{min(r['steps'][-1] for r in rs):,}-{max(r['steps'][-1] for r in rs):,}", len(rs),
                          f"{statistics.mean(r['returns'][-1] for r in rs):.0f}",
                          f"{min(r['returns'][-1] for r in rs):.0f}", f"{max(r['returns'][-1] for r in rs):.0f}"]
                         for (e, a), rs in sorted(summary.items())])]
    if "InvertedPendulum-v5" in {r["env"] for r in recs}:
        body += ["", *_pendulum_references(args.episodes)]
    if png is not None and _plot(recs, png):
        body += ["", f"![learning curves]({png.name})"]
    return body


def _pendulum_references(episodes: int) -> list[str]:
    """Hand-set linear controllers a = clip(K . obs, -3, 3), obs = (cart x, pole angle, x velocity, angle
    velocity), on the same evaluation episodes: what a return near 100-300 means (a policy that balances the
    pole without feedback on the cart drives the cart into the end of its rail) and that the task is solvable."""
    from fovea.rl.train import evaluate

    rows = []
    for name, k in [("pole only (no cart feedback)", (0, 10, 0, 1)), ("pole only, stiffer", (0, 20, 0, 2)),
                    ("full state", (0.5, 10, 0.5, 1)), ("full state, stiffer", (1, 20, 1, 2))]:
        gains = np.array(k, np.float64)
        ends = []

        def policy(o, g=gains):
            ends.append(abs(float(o[0])))  # |cart x|; the last one of each episode is read below
            return np.clip([g @ o], -3.0, 3.0)

        ret = evaluate(policy, "InvertedPendulum-v5", episodes, seed=0)
        rows.append([name, f"({', '.join(map(str, k))})", f"{ret:.0f}", f"{max(ends):.2f}"])
    return ["Reference: hand-set linear controllers on the seed-0 evaluation episodes (no learning):", "",
            *table(["controller", "K on (x, angle, x vel, angle vel)", "mean return", "max cart |x| seen"], rows)]


def _plot(recs, path: Path) -> bool:
    """One panel per environment: thin lines single seeds, thick lines the mean over seeds (where every seed has
    an evaluation); one legend beside the panels (colours are the same in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in recs})
    colours: dict[str, str] = {}
    legend: dict[str, object] = {}
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.5), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        groups: dict[str, list] = {}
        for r in recs:
            if r["env"] == env_id and r["steps"]:
                groups.setdefault(_label(r), []).append(r)
        for label, rs in groups.items():
            colour = colours.setdefault(label, f"C{len(colours)}")
            for r in rs:
                (line,) = ax.plot(r["steps"], r["returns"], marker=".", lw=0.8, color=colour,
                                  alpha=0.45 if len(rs) > 1 else 0.9)
            if len(rs) > 1:
                common = sorted(set.intersection(*(set(r["steps"]) for r in rs)))
                mean = [statistics.mean(r["returns"][r["steps"].index(s)] for r in rs) for s in common]
                (line,) = ax.plot(common, mean, lw=2.2, color=colour)
            legend.setdefault(f"{label} ({'mean of ' + str(len(rs)) + ' seeds' if len(rs) > 1 else 'seed ' + str(rs[0]['seed'])})", line)
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
    fig.legend(list(legend.values()), list(legend), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.95),
               title="thin lines: single seeds", title_fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def _profile(args) -> list[str]:
    """Median ms of the pieces of one DACER env step + update, exact fast paths vs the plain ones, same run."""
    from fovea.rl import networks
    from fovea.rl.dacer import DACER, DACERConfig
    from fovea.rl.entropy import gmm_entropy

    def med_ms(fn, n):
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(ts)

    obs_dim, act_dim, n = 17, 6, 3 if args.quick else 9  # HalfCheetah-v5 sizes
    rows = []
    sizes = [("paper", DACERConfig(alpha_every=10 ** 9)),
             ("small", DACERConfig(hidden=64, depth=2, diffusion_steps=10, batch_size=64, alpha_every=10 ** 9))]
    for size, cfg in sizes[1:] if args.quick else sizes:  # --quick: the small size only
        for variant in ("plain (nn.Mish, unsplit first layer)", "fovea (closed-form mish, split first layer)"):
            torch.manual_seed(0)
            agent = DACER(obs_dim, act_dim, cfg)
            if variant.startswith("plain"):  # the straightforward version, for the ratio
                for m in agent.modules():
                    for name, child in m.named_children():
                        if isinstance(child, networks.Mish):
                            setattr(m, name, torch.nn.Mish())
                agent.actor.bind = lambda obs, steps, a=agent.actor: (lambda x, t: a(obs, x, t))
            b = cfg.batch_size
            batch = {"obs": torch.randn(b, obs_dim), "act": torch.rand(b, act_dim) * 2 - 1, "rew": torch.randn(b),
                     "next_obs": torch.randn(b, obs_dim), "done": torch.zeros(b)}
            agent.update(batch)  # update 0 (entropy) out of the way
            o = np.random.default_rng(0).normal(size=obs_dim).astype(np.float32)
            act = med_ms(lambda: agent.act(o), 5 * n)
            upd = med_ms(lambda: (agent.update(batch), agent.update(batch)), n) / 2
            rows.append([size, variant, f"{act:.2f}", f"{upd:.1f}", f"{1e3 / (act + upd):.1f}"])
    ratio_rows = []
    for i in range(0, len(rows), 2):
        ratio_rows.append([rows[i][0], f"{(float(rows[i][2]) + float(rows[i][3])) / (float(rows[i + 1][2]) + float(rows[i + 1][3])):.2f}x"])
    with torch.inference_mode():
        agent = DACER(obs_dim, act_dim, DACERConfig())
        acts = agent.noisy(torch.randn(32, obs_dim).repeat_interleave(200, 0)).view(32, 200, act_dim).numpy()
    fit_ms = med_ms(lambda: gmm_entropy(acts), 1 if args.quick else 3) / 32
    per_update_ms = float(rows[1][3])  # the first size's fovea variant (paper size unless --quick)
    return [
        f"Profile of one DACER environment step (act on one observation) + one update (critics every step, actor "
        f"every 2nd; the mean of two), median of {n} (act: {5 * n}), HalfCheetah-v5 sizes (obs 17, act 6), 1 thread.",
        "", *table(["size", "variant", "act ms", "update ms", "steps/s"], rows), "",
        *table(["size", "speed-up of the fovea variant (act + update)"], ratio_rows), "",
        f"GMM entropy estimate (sklearn GaussianMixture(3, full), 1 BLAS thread): {fit_ms:.1f} ms per state, so "
        f"{256 * fit_ms / 1e3:.1f} s for the official 256 states x 200 actions, once every 10,000 updates = "
        f"{100 * 256 * fit_ms / (10_000 * per_update_ms):.2f} % of the {rows[1][0]}-size update time: not worth a torch "
        "EM; kept sklearn (the official estimator).",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--algos", nargs="+", default=["DACER", "SAC"], choices=["DACER", "SAC"])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--warmup", type=int, default=5_000)
    ap.add_argument("--eval-every", type=int, default=5_000)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--alpha-every", type=int, default=10_000)
    ap.add_argument("--stop-return", type=float, default=None, help="stop a run once an evaluation reaches this")
    ap.add_argument("--size", choices=["paper", "small"], default="paper")
    ap.add_argument("--lr", type=float, default=None, help="DACER learning rate (default: the size's)")
    ap.add_argument("--tau", type=float, default=None, help="DACER target-critic update rate (default 0.005)")
    ap.add_argument("--clip-grad", choices=["zero", "inward"], default="zero")
    ap.add_argument("--block", default="curves", help="name of the doc block and results folder")
    ap.add_argument("--results", default=str(ROOT / "runs" / "dacer"), help="folder of per-run JSON results")
    ap.add_argument("--overwrite", action="store_true", help="rerun runs whose JSON exists")
    ap.add_argument("--deadline", default=None, metavar="HH:MM",
                    help="UTC time: no new evaluation period starts unless the last one still fits before it")
    ap.add_argument("--collect-only", action="store_true", help="rewrite the block from the saved results")
    ap.add_argument("--profile", action="store_true", help="time one env step + update (block 'speed')")
    add_doc_args(ap, "dacer", "InvertedPendulum-v5, seed 0, 3,000 steps, --size small (block 'quick')")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick and not args.profile:
        args.envs, args.seeds, args.steps, args.warmup, args.eval_every, args.episodes = (
            ["InvertedPendulum-v5"], [0], 3000, 1000, 1000, 3)
        args.size, args.alpha_every, args.block, args.overwrite = "small", 1000, "quick", True
    run = Run(args, full_command=".venv/bin/python benchmarks/dacer.py --block curves --envs HalfCheetah-v5 "
                                 "Hopper-v5 --seeds 0 1 2 --steps 50000")
    if args.profile:
        run.write("DACER vs SAC", _profile(args), tag="speed")
        return
    out_dir = Path(args.results) / args.block
    out_dir.mkdir(parents=True, exist_ok=True)
    png = None if args.doc == "-" else Path(args.doc).with_name(f"dacer_{args.block}.png")

    def write():
        run.write("DACER vs SAC", _doc_body(args, out_dir, png), tag=args.block)

    if not args.collect_only:
        _run_all(args, out_dir, write)
    write()


if __name__ == "__main__":
    main()
