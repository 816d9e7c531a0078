"""QMIX vs rl-games PPO vs rl-games MAPPO on MultiBallPush, same env-step budget, on a CPU.

    python bench/compare_qmix_ppo.py                            # 1 seed, 400k env steps each
    python bench/compare_qmix_ppo.py --seeds 0 1 2 --jobs 2     # 3 seeds, two runs side by side
    python bench/compare_qmix_ppo.py --learners ppo mappo --set learning_rate=1e-3

Every learner trains on the MuJoCo engine with 64 worlds and is evaluated the same way: the
GREEDY team (``qmix_isaac.runner.evaluate``; for PPO the most likely action of each agent) on a
separate 32-world eval env every ``--eval-every`` env steps, evaluation time excluded from the
training wall time. Configs: QMIX = cfg/train/MultiBallPushQMIX.yaml with
bench/learn_ball_push.py's CPU_OVERRIDES (its measured CPU sizes); PPO / MAPPO =
cfg/train/MultiBallPush{PPO,MAPPO}.yaml as they are (``--set key=value`` overrides
``params.config`` keys of both), trained through rl_games.torch_runner.Runner exactly as
``train.py`` does (qmix_isaac.rlgames). Evaluations fall at the first epoch (PPO: 16 steps of the
64 worlds, 1,024 env steps) or collect (QMIX: 32 steps, 2,048 env steps) past each multiple of
``--eval-every``, so the rows of one table line differ by at most 1,024 env steps.

Prints success rate against env steps and training wall time for each learner, and writes a
markdown table (bench/results/compare_qmix_ppo.md) and a PNG (bench/results/compare_qmix_ppo.png).
Figures are measured, never pass/fail.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import qmix_isaac  # noqa: E402
from learn_ball_push import (EVAL_NUM_ENVS, EVAL_SEED_OFFSET, reference_success, save_figure,  # noqa: E402
                             train_and_eval)
from qmix_isaac.runner import evaluate  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
LABEL = {"qmix": "QMIX", "ppo": "PPO (rl-games)", "mappo": "MAPPO (rl-games)"}
TRAIN_CFG = {"ppo": "MultiBallPushPPO.yaml", "mappo": "MultiBallPushMAPPO.yaml"}


# ------------------------------------------------------------------------------------------------
# one rl-games run
# ------------------------------------------------------------------------------------------------
def rlgames_train_config(learner: str, sets: Optional[List[str]] = None) -> Dict[str, Any]:
    import yaml

    with open(os.path.join(ROOT, "cfg", "train", TRAIN_CFG[learner])) as f:
        cfg = yaml.safe_load(f)
    for item in sets or []:
        key, _, value = item.partition("=")
        node = cfg["params"]["config"]
        *path, leaf = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return cfg


def train_and_eval_rlgames(*, learner: str, seed: int, env_steps: int, num_envs: int, eval_every: int,
                           eval_episodes: int, final_eval_episodes: int, sets: Optional[List[str]] = None,
                           verbose: bool = True) -> Dict[str, Any]:
    """Train PPO or MAPPO for ``env_steps`` (whole epochs), evaluating the greedy team every
    ``eval_every`` env steps; the curve has the same rows as learn_ball_push.train_and_eval."""
    from qmix_isaac.rlgames.observer import EpisodeObserver
    from qmix_isaac.rlgames.runner import GreedyPolicy, RLGamesRunner

    random.seed(seed)
    torch.manual_seed(seed)
    cfg = rlgames_train_config(learner, sets)
    env = qmix_isaac.make("MultiBallPush", num_envs=num_envs, seed=seed)
    eval_env = qmix_isaac.make("MultiBallPush", num_envs=EVAL_NUM_ENVS, seed=EVAL_SEED_OFFSET + seed)
    runner = RLGamesRunner(cfg, env)
    per_epoch = int(cfg["params"]["config"]["horizon_length"]) * num_envs
    max_epochs = math.ceil(env_steps / per_epoch)
    curve: List[Dict[str, float]] = []

    class NoLogger:
        history: Dict[str, Any] = {}

        def log(self, env_steps, scalars):
            pass

    class Evaluating(EpisodeObserver):
        """Greedy evaluations at fixed env steps, their time kept out of the training time."""

        def __init__(self):
            super().__init__(NoLogger(), log_interval=10 ** 12, max_epochs=max_epochs,
                             save=lambda *a: None, quiet=True)
            self.train_s, self.next_eval = 0.0, eval_every
            self._t = None

        def after_init(self, algo):
            super().after_init(algo)
            self.policy = GreedyPolicy(algo.model, env.num_agents, None, runner.vec_env.obs_agent_id,
                                       env.rl_device)
            self.evaluate_now(eval_episodes)

        def after_print_stats(self, frame, epoch_num, total_time):
            if int(epoch_num) == self._last_epoch:
                return
            self.train_s += time.perf_counter() - self._t
            super().after_print_stats(frame, epoch_num, total_time)
            if int(epoch_num) >= max_epochs:
                self.evaluate_now(final_eval_episodes)
            elif self.env_steps >= self.next_eval:
                self.evaluate_now(eval_episodes)
                self.next_eval += eval_every
            else:
                self._t = time.perf_counter()

        def log(self):
            return {}  # the evaluations read the statistics

        def evaluate_now(self, n):
            stats = self.pop_episode_stats()  # training (sampled-policy) episodes since the last row
            losses = self.sink.pop()
            ev = evaluate(self.policy, eval_env, n)
            row = {"env_steps": self.env_steps, "train_s": self.train_s, "success": ev["success"],
                   "return": ev["return"], "length": ev["length"], "episodes": ev["episodes"],
                   "final_box_dist": ev.get("final_box_dist", float("nan")),
                   "train_success": stats.get("charts/success_rate", float("nan")),
                   "entropy": losses.get("losses/entropy", float("nan"))}
            curve.append(row)
            if verbose:
                print(f"| {row['env_steps']:>9,} | {row['train_s']:>7.1f} | {row['train_success']:>7.3f} | "
                      f"{row['entropy']:>6.3f} | {row['success']:>7.3f} | {row['return']:>7.2f} | "
                      f"{row['final_box_dist']:>6.2f} |", flush=True)
            self._t = time.perf_counter()

    if verbose:
        print(f"[compare_qmix_ppo] {LABEL[learner]} seed={seed} num_envs={num_envs} "
              f"env_steps={max_epochs * per_epoch:,}")
        print("| env steps | train s | train success | entropy | greedy success | greedy return | box-goal dist |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
    observer = Evaluating()
    with tempfile.TemporaryDirectory() as tmp:  # rl-games makes its folders; nothing is kept
        runner.run(observer, run_dir=os.path.join(tmp, "run"), max_epochs=max_epochs, seed=seed)
    env.close()
    eval_env.close()
    return {"learner": learner, "seed": seed, "curve": curve, "final": curve[-1], "config": cfg}


def run_one(learner: str, seed: int, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    t0 = time.perf_counter()
    if learner == "qmix":
        res = train_and_eval(mixer="qmix", seed=seed, **{k: v for k, v in kwargs.items() if k != "sets"})
        res["learner"] = "qmix"
    else:
        res = train_and_eval_rlgames(learner=learner, seed=seed, **kwargs)
    res["wall_s"] = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------------
# figures and tables
# ------------------------------------------------------------------------------------------------
def _mean_std(values: List[float], fmt: str = "%.3f") -> str:
    """Mean ± std over seeds; a NaN (no training episode ended in the interval) makes it n/a."""
    if any(v != v for v in values):
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (fmt + " ± " + fmt) % (statistics.fmean(values), sd) if len(values) > 1 else fmt % values[0]


def plot(runs: Dict[str, List[Dict[str, Any]]], refs: Dict[str, Dict[str, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, results in runs.items():
        n = min(len(r["curve"]) for r in results)
        xs = [statistics.fmean(r["curve"][i]["env_steps"] for r in results) for i in range(n)]
        ts = [statistics.fmean(r["curve"][i]["train_s"] for r in results) for i in range(n)]
        ys = [[r["curve"][i]["success"] for r in results] for i in range(n)]
        mean = [statistics.fmean(y) for y in ys]
        for ax, x in zip(axes, (xs, ts)):
            line, = ax.plot(x, mean, marker="o", ms=3, label=label)
            if len(results) > 1:
                ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(),
                                alpha=0.15)
    for ax, xlabel in zip(axes, ("env steps", "training wall time [s] (2-core CPU)")):
        for ref, style in (("random", ":"), ("scripted", "--")):
            ax.axhline(refs[ref]["success"], color="gray", ls=style, lw=1, label=f"{ref} policy")
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title("greedy success rate")
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e3:.0f}k"))
    axes[0].legend(fontsize=8, loc="upper left")
    save_figure(fig, path, title, "compare_qmix_ppo")


def table(args, runs, refs, total_s: float) -> str:
    seeds = ", ".join(map(str, args.seeds))
    lines = [
        "# MultiBallPush: QMIX vs rl-games PPO vs MAPPO on CPU (same env-step budget)",
        "",
        f"Measured by `python bench/compare_qmix_ppo.py{' ' + ' '.join(args.argv) if args.argv else ''}` "
        f"on {os.cpu_count()} CPU cores (shared machine: wall times are noisy; {args.jobs} run(s) side by "
        f"side). Budget {args.env_steps:,} env steps per run, {args.num_envs} envs, MuJoCo engine. QMIX: "
        f"cfg/train/MultiBallPushQMIX.yaml + bench/learn_ball_push.py CPU_OVERRIDES; PPO / MAPPO: "
        f"cfg/train/MultiBallPush{{PPO,MAPPO}}.yaml{' + ' + ', '.join(args.set) if args.set else ''}. "
        f"Greedy evaluation on a separate {EVAL_NUM_ENVS}-env eval env ({args.eval_episodes} episodes every "
        f"{args.eval_every:,} env steps, {args.final_eval_episodes} at the end). Seeds {seeds}"
        f"{'; mean ± std over seeds' if len(args.seeds) > 1 else ''}. *train s*: training wall time, "
        f"evaluations excluded. *train success*: success of the training episodes (PPO: sampled "
        f"actions; QMIX: epsilon-greedy) over the last evaluation interval.",
        "",
        "| learner | final greedy success | final greedy return | final box-goal dist m | best-eval success "
        "| train success | train s | env steps / s | per-seed success |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, results in runs.items():
        f = [r["final"] for r in results]
        steps_s = [r["final"]["env_steps"] / max(r["final"]["train_s"], 1e-9) for r in results]
        lines.append(
            f"| {label} | {_mean_std([x['success'] for x in f])} | {_mean_std([x['return'] for x in f], '%.2f')} | "
            f"{_mean_std([x['final_box_dist'] for x in f], '%.2f')} | "
            f"{_mean_std([max(c['success'] for c in r['curve']) for r in results])} | "
            f"{_mean_std([x['train_success'] for x in f])} | {statistics.fmean(x['train_s'] for x in f):.0f} | "
            f"{statistics.fmean(steps_s):,.0f} | {' / '.join('%.2f' % x['success'] for x in f)} |")
    for ref in ("random", "scripted"):
        lines.append(f"| {ref} policy | {refs[ref]['success']:.3f} | {refs[ref]['return']:.2f} | "
                     f"{refs[ref].get('final_box_dist', float('nan')):.2f} | | | | | |")
    lines += ["", "Greedy success (mean over seeds) against env steps, with the training wall time [s] "
              "at that point:", "",
              "| env steps | " + " | ".join(runs) + " |", "|---:|" + "---:|" * len(runs)]
    n = min(len(r["curve"]) for rs in runs.values() for r in rs)
    for i in range(n):
        steps = next(iter(runs.values()))[0]["curve"][i]["env_steps"]
        cells = ["%.3f (%.0f s)" % (statistics.fmean(r["curve"][i]["success"] for r in rs),
                                    statistics.fmean(r["curve"][i]["train_s"] for r in rs))
                 for rs in runs.values()]
        lines.append(f"| {steps:,} | " + " | ".join(cells) + " |")
    lines += ["", f"Whole comparison: {total_s:.0f} s wall. Curves (mean, min–max band over seeds): "
              "compare_qmix_ppo.png.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learners", nargs="+", default=["qmix", "ppo", "mappo"], choices=list(LABEL))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--env-steps", type=int, default=400_000)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=50_000)
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--final-eval-episodes", type=int, default=128)
    p.add_argument("--ref-episodes", type=int, default=128)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an rl-games params.config key of PPO and MAPPO (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (each keeps ~1 core busy)")
    p.add_argument("--out", default=os.path.join(RESULTS, "compare_qmix_ppo.png"))
    p.add_argument("--table", default=os.path.join(RESULTS, "compare_qmix_ppo.md"))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    refs = reference_success(args.ref_episodes)
    kwargs = dict(env_steps=args.env_steps, num_envs=args.num_envs, eval_every=args.eval_every,
                  eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                  sets=args.set, verbose=args.jobs == 1)
    jobs = [(lr, sd) for lr in args.learners for sd in args.seeds]
    results: List[Dict[str, Any]] = []
    if args.jobs == 1:
        results = [run_one(lr, sd, kwargs) for lr, sd in jobs]
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, lr, sd, kwargs) for lr, sd in jobs]
            for fut in cf.as_completed(futures):
                r = fut.result()
                print(f"[compare_qmix_ppo] {LABEL[r['learner']]} seed {r['seed']}: greedy success "
                      f"{r['final']['success']:.3f}, {r['final']['train_s']:.0f} s training", flush=True)
            results = [f.result() for f in futures]
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for r in results:
        runs.setdefault(LABEL[r["learner"]], []).append(r)
    text = table(args, runs, refs, time.perf_counter() - t0)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.table)), exist_ok=True)
    with open(args.table, "w") as f:
        f.write(text)
    print(f"[compare_qmix_ppo] wrote {args.table}")
    plot(runs, refs, args.out, f"MultiBallPush, CPU, {args.num_envs} envs, "
         f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''} (greedy eval)")


if __name__ == "__main__":
    main()
