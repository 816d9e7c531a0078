"""QMIX (or VDN / IQL) learning MultiBallPush on a CPU: greedy success curve, and a mixer comparison.

    python bench/learn_ball_push.py                         # QMIX, seed 0, CPU budget below
    python bench/learn_ball_push.py --mixer vdn --seed 1 --env-steps 600000
    python bench/learn_ball_push.py --budget-s 180          # stop after 180 s of training wall time
    python bench/learn_ball_push.py --set learner.lr=0.001 --set runner.batch_size=64
    python bench/learn_ball_push.py --compare               # QMIX vs VDN vs IQL x 3 seeds, same budget

Trains on the MuJoCo engine (CPU) with ``cfg/train/MultiBallPushQMIX.yaml`` merged with
``CPU_OVERRIDES`` (below), and every ``--eval-every`` env steps evaluates the GREEDY team
(``qmix_isaac.runner.evaluate``, epsilon 0) on a separate eval env. Prints a table of env steps,
training wall seconds (evaluation excluded), greedy success and return, with the success of a
uniformly random team and of the hand-written ``scripted_ball_push_actions`` as reference lines,
and writes a PNG curve to ``--out`` (default bench/results/learn_ball_push.png).

``--compare`` runs mixer in {qmix, vdn, none (IQL)} x seeds {0, 1, 2} at the same env-step
budget and writes a markdown table (mean +- std over seeds of the final greedy success and return,
and the wall time) to bench/results/ball_push_mixers.md, with the mean curves in
bench/results/ball_push_mixers.png. Figures are measured, never pass/fail.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import qmix_isaac  # noqa: E402
from qmix_isaac.runner import build_runner, evaluate  # noqa: E402
from qmix_isaac.tasks.multi_ball_push import scripted_ball_push_actions  # noqa: E402

TRAIN_CFG = os.path.join(ROOT, "cfg", "train", "MultiBallPushQMIX.yaml")
RESULTS = os.path.join(ROOT, "bench", "results")

# The yaml is sized for thousands of envs on a GPU (4096 envs, batch 512, 2.1M-step replay,
# epsilon annealed over 5M steps). A 2-core CPU collects ~15k env steps/s at 64 envs and does
# one gradient step on 32 sequences x 32 steps in ~25 ms on one torch thread, so a few minutes
# is a few hundred thousand env steps: the yaml's cpu: block (what train.py takes on a CPU, with
# the measurements behind each value) shrinks everything to that budget. This script reads
# statistics at its own evaluations, so the runner never logs.
def _cpu_block() -> Dict[str, Any]:
    import yaml

    with open(TRAIN_CFG) as f:
        return yaml.safe_load(f)["cpu"]


_CPU = _cpu_block()
CPU_NUM_ENVS = int(_CPU["num_envs"])
CPU_OVERRIDES: Dict[str, Dict[str, Any]] = _CPU["params"]
CPU_OVERRIDES["runner"]["log_interval"] = 10 ** 12
CPU_TASK_OVERRIDES: Dict[str, Any] = {}
DEFAULT_ENV_STEPS = 400_000
EVAL_NUM_ENVS = 32
EVAL_SEED_OFFSET = 10_000


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def cpu_train_config(mixer: str = "qmix", sets: Optional[List[str]] = None) -> Dict[str, Any]:
    """cfg/train/MultiBallPushQMIX.yaml ``params`` + CPU_OVERRIDES + ``section.key=value`` overrides."""
    import yaml

    with open(TRAIN_CFG) as f:
        cfg = yaml.safe_load(f)["params"]
    cfg = _merge(cfg, CPU_OVERRIDES)
    cfg["mixer"]["name"] = mixer
    return apply_sets(cfg, sets)


def apply_sets(cfg: Dict[str, Any], sets: Optional[List[str]]) -> Dict[str, Any]:
    """Apply ``section.key=value`` items (values parsed as YAML) to a train config, in place."""
    for item in sets or []:
        key, _, value = item.partition("=")
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = _parse_value(value)
    return cfg


def task_overrides(task_sets: Optional[List[str]] = None) -> Dict[str, Any]:
    """CPU_TASK_OVERRIDES + ``key=value`` items, as keyword arguments of ``qmix_isaac.make``."""
    out = dict(CPU_TASK_OVERRIDES)
    for item in task_sets or []:
        key, _, value = item.partition("=")
        out[key] = _parse_value(value)
    return out


# ------------------------------------------------------------------------------------------------
# reference policies, evaluated by the same qmix_isaac.runner.evaluate as the learner
# ------------------------------------------------------------------------------------------------
class PolicyAsAgent(nn.Module):
    """Wraps ``fn(obs [E, A, O]) -> actions [E, A]`` (None: uniform random) as an agent whose
    q-values are one-hot of the actions, so ``evaluate`` scores it exactly like the learner."""

    def __init__(self, n_agents: int, n_actions: int, fn: Optional[Callable] = None, seed: int = 0) -> None:
        super().__init__()
        self.n_agents, self.n_actions, self.fn = n_agents, n_actions, fn
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)
        self.gen = torch.Generator().manual_seed(seed)

    def init_hidden(self, *batch: int) -> torch.Tensor:
        return torch.zeros(*batch, self.n_agents, 1)

    def forward(self, obs, prev_action, start, hidden):
        if self.fn is None:
            act = torch.randint(0, self.n_actions, obs.shape[:2], generator=self.gen)
        else:
            act = self.fn(obs)
        q = torch.nn.functional.one_hot(act, self.n_actions).float().unsqueeze(-2)  # [E, A, 1, K]
        return q, hidden


def reference_success(n_episodes: int, seed: int = 0, task_sets: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    env = qmix_isaac.make("MultiBallPush", num_envs=EVAL_NUM_ENVS, seed=EVAL_SEED_OFFSET + 999 + seed,
                          **task_overrides(task_sets))
    out = {}
    for name, fn in (("random", None), ("scripted", scripted_ball_push_actions)):
        out[name] = evaluate(PolicyAsAgent(env.num_agents, env.num_actions, fn, seed), env, n_episodes)
    return out


# ------------------------------------------------------------------------------------------------
# one training run
# ------------------------------------------------------------------------------------------------
def train_and_eval(
    *,
    mixer: str = "qmix",
    seed: int = 0,
    env_steps: int = DEFAULT_ENV_STEPS,
    budget_s: Optional[float] = None,
    num_envs: int = CPU_NUM_ENVS,
    eval_every: int = 50_000,
    eval_episodes: int = 64,
    final_eval_episodes: int = 128,
    sets: Optional[List[str]] = None,
    task_sets: Optional[List[str]] = None,
    verbose: bool = True,
) -> Dict[str, Any]:
    """Train for ``env_steps`` (or ``budget_s`` training seconds, whichever first), evaluating the
    greedy team every ``eval_every`` env steps. Returns the curve and the final evaluation."""
    torch.manual_seed(seed)
    cfg = cpu_train_config(mixer, sets)
    task = task_overrides(task_sets)
    env = qmix_isaac.make("MultiBallPush", num_envs=num_envs, seed=seed, **task)
    eval_env = qmix_isaac.make("MultiBallPush", num_envs=EVAL_NUM_ENVS, seed=EVAL_SEED_OFFSET + seed, **task)
    runner = build_runner(cfg, env)
    curve: List[Dict[str, float]] = []
    train_s = 0.0

    def do_eval(n: int) -> Dict[str, float]:
        stats = {k: float(v) for k, v in runner.pop_stats().items()}  # training episodes since the last row
        ev = runner.evaluate(eval_env, n)
        row = {"env_steps": runner.env_steps, "train_s": train_s, "success": ev["success"],
               "return": ev["return"], "length": ev["length"], "episodes": ev["episodes"],
               "final_box_dist": ev.get("final_box_dist", float("nan")),
               "epsilon": runner.explorer.epsilon(runner.env_steps), "grad_steps": runner.learner.grad_steps,
               "train_success": stats.get("episode/success", float("nan")),
               "td_loss": stats.get("losses/td_loss", float("nan")),
               "q_taken": stats.get("values/q_taken", float("nan")),
               "mix_slope": stats.get("values/mix_slope", float("nan"))}
        row.update({k: v for k, v in ev.items() if k.startswith("rew/")})
        curve.append(row)
        if verbose:
            print(f"| {row['env_steps']:>9,} | {row['train_s']:>7.1f} | {row['grad_steps']:>6} | "
                  f"{row['epsilon']:>5.2f} | {row['train_success']:>7.3f} | {row['td_loss']:>7.4f} | "
                  f"{row['q_taken']:>6.2f} | {row['mix_slope']:>5.2f} | {row['success']:>7.3f} | {row['return']:>7.2f} | "
                  f"{row['final_box_dist']:>6.2f} |", flush=True)
        return row

    if verbose:
        print(f"[learn_ball_push] mixer={mixer} seed={seed} num_envs={num_envs} env_steps={env_steps:,}"
              + (f" budget_s={budget_s}" if budget_s else ""))
        print("| env steps | train s | grad steps | eps | train success | td loss | Q taken "
              "| dQtot/dQa | greedy success | greedy return | box-goal dist |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    do_eval(eval_episodes)
    next_eval = eval_every
    while runner.env_steps < env_steps and (budget_s is None or train_s < budget_s):
        t0 = time.perf_counter()
        new = runner.collect()
        n_grad = runner.grad_steps_due(new)
        runner.train(n_grad)  # torch stays on the engine's 1 thread: 2 would spin against its pool
        train_s += time.perf_counter() - t0
        if runner.env_steps >= next_eval and runner.env_steps < env_steps:
            do_eval(eval_episodes)
            next_eval += eval_every
    final = do_eval(final_eval_episodes)
    return {"mixer": mixer, "seed": seed, "curve": curve, "final": final, "config": cfg}


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def plot(runs: Dict[str, List[Dict[str, Any]]], refs: Dict[str, Dict[str, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, results in runs.items():
        xs = [r["env_steps"] for r in results[0]["curve"]]
        for ax, key in zip(axes, ("success", "return")):
            ys = [[r["curve"][i][key] for r in results] for i in range(len(xs))]
            mean = [statistics.fmean(y) for y in ys]
            line, = ax.plot(xs, mean, marker="o", ms=3, label=label)
            if len(results) > 1:
                lo = [min(y) for y in ys]
                hi = [max(y) for y in ys]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    for ax, key, name in zip(axes, ("success", "return"), ("greedy success rate", "greedy episode return")):
        for ref, style in (("random", ":"), ("scripted", "--")):
            ax.axhline(refs[ref][key], color="gray", ls=style, lw=1, label=f"{ref} policy")
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e3:.0f}k"))
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8, loc="upper left")
    save_figure(fig, path, title, "learn_ball_push")


def save_figure(fig, path: str, title: str, tag: str) -> None:
    """Title, tight layout, write ``path`` (creating its folder), close, say where."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"[{tag}] wrote {path}")


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
MIXER_LABEL = {"qmix": "QMIX", "vdn": "VDN", "none": "IQL"}


def _mean_std(values: List[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def _timed_run(**kwargs) -> Dict[str, Any]:
    t0 = time.perf_counter()
    res = train_and_eval(**kwargs)
    res["wall_s"] = time.perf_counter() - t0
    return res


def compare(args) -> None:
    mixers = args.mixers
    refs = reference_success(args.ref_episodes, task_sets=args.task_set)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    wall: Dict[str, List[float]] = {}
    t_all = time.perf_counter()
    jobs = [(mixer, seed) for mixer in mixers for seed in args.seeds]
    kwargs = dict(env_steps=args.env_steps, num_envs=args.num_envs, eval_every=args.eval_every,
                  eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                  sets=args.set, task_sets=args.task_set, verbose=False)
    # One run keeps about one core busy (torch on 1 thread, physics in short bursts): on 2 cores
    # two runs side by side take about as long as one alone.
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_timed_run, mixer=m, seed=sd, **kwargs): (m, sd) for m, sd in jobs}
        for fut in cf.as_completed(futures):
            res = fut.result()
            f = res["final"]
            print(f"[compare] {MIXER_LABEL[res['mixer']]} seed {res['seed']}: greedy success {f['success']:.3f}, "
                  f"return {f['return']:.2f}, {f['train_s']:.0f} s training, {res['wall_s']:.0f} s wall", flush=True)
    results = sorted((fut.result() for fut in futures), key=lambda r: (mixers.index(r["mixer"]), r["seed"]))
    for res in results:
        runs.setdefault(MIXER_LABEL[res["mixer"]], []).append(res)
        wall.setdefault(MIXER_LABEL[res["mixer"]], []).append(res["wall_s"])
    extra = "".join(f" + `{x}`" for x in args.set + args.task_set)  # the --set / --task-set items
    lines = [
        f"# MultiBallPush: QMIX vs VDN vs IQL on CPU ({len(args.seeds)} seeds, same budget)",
        "",
        f"Measured by `python bench/learn_ball_push.py --compare` on {os.cpu_count()} CPU cores "
        f"(shared machine: wall times are noisy; {args.jobs} runs side by side). Budget {args.env_steps:,} env steps per run, "
        f"{args.num_envs} envs, MuJoCo engine; config = cfg/train/MultiBallPushQMIX.yaml + CPU_OVERRIDES "
        f"of the script{extra}, "
        f"only `mixer.name` differing. Final greedy evaluation: "
        f"{args.final_eval_episodes} episodes on a separate 32-env eval env per run. "
        f"Seeds {', '.join(map(str, args.seeds))}; mean ± std over seeds.",
        "",
        "| mixer | final greedy success | final greedy return | best-eval success | train wall s | total wall s | per-seed success |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, results in runs.items():
        succ = [r["final"]["success"] for r in results]
        ret = [r["final"]["return"] for r in results]
        best = [max(c["success"] for c in r["curve"]) for r in results]
        tr = [r["final"]["train_s"] for r in results]
        lines.append(f"| {label} | {_mean_std(succ)} | {_mean_std(ret)} | {_mean_std(best)} | "
                     f"{statistics.fmean(tr):.0f} | {statistics.fmean(wall[label]):.0f} | "
                     f"{' / '.join(f'{s:.2f}' for s in succ)} |")
    lines.append(f"| random policy | {refs['random']['success']:.3f} | {refs['random']['return']:.2f} | | | | |")
    lines.append(f"| scripted policy | {refs['scripted']['success']:.3f} | {refs['scripted']['return']:.2f} | | | | |")
    lines += ["", f"Whole comparison: {time.perf_counter() - t_all:.0f} s wall. Curves (mean, min–max band): "
              "ball_push_mixers.png.", ""]
    lines += ["Mean greedy success over seeds at each evaluation:", "",
              "| env steps | " + " | ".join(runs) + " |", "|---:|" + "---:|" * len(runs)]
    for i, row in enumerate(next(iter(runs.values()))[0]["curve"]):
        cells = [f"{statistics.fmean(r['curve'][i]['success'] for r in rs):.3f}" for rs in runs.values()]
        lines.append(f"| {row['env_steps']:,} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    out_md = args.table or os.path.join(RESULTS, "ball_push_mixers.md")
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    with open(out_md, "w") as f:
        f.write(text)
    print(f"[learn_ball_push] wrote {out_md}")
    out_png = args.out if args.out_given else os.path.join(RESULTS, "ball_push_mixers.png")
    plot(runs, refs, out_png, f"MultiBallPush, CPU, {args.num_envs} envs, {len(args.seeds)} seeds (greedy eval)")


def single(args) -> None:
    refs = reference_success(args.ref_episodes, task_sets=args.task_set)
    print(f"reference: random success {refs['random']['success']:.3f} (return {refs['random']['return']:.2f}), "
          f"scripted success {refs['scripted']['success']:.3f} (return {refs['scripted']['return']:.2f}) "
          f"over {int(refs['random']['episodes'])} episodes")
    t0 = time.perf_counter()
    res = train_and_eval(mixer=args.mixer, seed=args.seed, env_steps=args.env_steps, budget_s=args.budget_s,
                         num_envs=args.num_envs, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                         final_eval_episodes=args.final_eval_episodes, sets=args.set, task_sets=args.task_set)
    f = res["final"]
    print(f"final greedy success {f['success']:.3f} (random {refs['random']['success']:.3f}, scripted "
          f"{refs['scripted']['success']:.3f}), return {f['return']:.2f}, {f['env_steps']:,} env steps, "
          f"{f['train_s']:.0f} s training, {time.perf_counter() - t0:.0f} s with evaluations")
    terms = lambda ev: ", ".join(f"{k[4:]} {v:.2f}" for k, v in ev.items() if k.startswith("rew/"))  # noqa: E731
    print(f"greedy return by term: {terms(f)}\nscripted: {terms(refs['scripted'])}\nrandom: {terms(refs['random'])}")
    plot({MIXER_LABEL[args.mixer] + f" seed {args.seed}": [res]}, refs, args.out,
         f"MultiBallPush, CPU, {args.num_envs} envs (greedy eval)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixer", default="qmix", choices=["qmix", "vdn", "none"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-steps", type=int, default=DEFAULT_ENV_STEPS, help="training budget in env steps")
    p.add_argument("--budget-s", type=float, default=None, help="also stop after this many training seconds")
    p.add_argument("--num-envs", type=int, default=CPU_NUM_ENVS)
    p.add_argument("--eval-every", type=int, default=50_000, help="env steps between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--final-eval-episodes", type=int, default=128)
    p.add_argument("--ref-episodes", type=int, default=128, help="episodes for the random / scripted lines")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a train-config key, e.g. learner.lr=0.001 (repeatable)")
    p.add_argument("--task-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task-config key (qmix_isaac.make), e.g. controlFrequencyInv=10 (repeatable)")
    p.add_argument("--compare", action="store_true", help="QMIX vs VDN vs IQL x --seeds, same budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mixers", nargs="+", default=["qmix", "vdn", "none"], choices=["qmix", "vdn", "none"],
                   help="mixers in --compare")
    p.add_argument("--jobs", type=int, default=2, help="runs side by side in --compare")
    p.add_argument("--out", default=None, help="PNG path (default bench/results/learn_ball_push.png, "
                   "or ball_push_mixers.png with --compare)")
    p.add_argument("--table", default=None, help="markdown path for --compare (default bench/results/ball_push_mixers.md)")
    args = p.parse_args(argv)
    args.out_given = args.out is not None
    if args.out is None:
        args.out = os.path.join(RESULTS, "learn_ball_push.png")
    compare(args) if args.compare else single(args)


if __name__ == "__main__":
    main()
