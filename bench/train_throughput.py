"""Training end to end against simulation alone: where the time of a QMIX iteration goes.

    python bench/train_throughput.py                                   # CPU: MultiAntPush, mujoco, E = 64, 256
    python bench/train_throughput.py --device cuda:0 --num-envs 1024 4096 8192 16384 [--cuda-graph]
    python bench/train_throughput.py --cpu-block --num-envs 64          # what train.py runs on a CPU

For each ``num_envs`` E, on the real task with the QMIX learner of ``cfg/train/<task>QMIX.yaml``
(``--set section.key=value`` overrides it; ``learning_starts`` is 0 so every iteration trains):

- ``raw``: env-steps/s of the engine alone (set torques, simulate, refresh views);
- ``task``: env-steps/s of ``env.step`` (the simulation as the learner sees it);
- ``collect``: env-steps/s of the runner's acting loop (recurrent agents, epsilon-greedy,
  ``env.step``, sequence writes into the replay) for one iteration of ``seq_len`` steps of every world;
- ``grad``: gradient steps/s (sample sequences, TD(lambda) targets, loss, Adam step);
- ``e2e``: env-steps/s of whole iterations (collect, then the gradient steps the replay ratio owes);
- ``train/sim``: time of an iteration not spent in ``env.step`` over the time the env steps take
  (issue 3's goal: under 0.5 at 4096 envs on a GPU).

``--cuda-graph`` sets ``env.cudaGraph`` (the task step replayed from CUDA graphs; CUDA + newton).
Timings read the clock after a device synchronize; this is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import qmix_isaac  # noqa: E402
from qmix_isaac.runner import build_runner  # noqa: E402

from learn_ball_push import _merge, apply_sets  # noqa: E402
from sim_throughput import _sync, engine_step, random_inputs, rates  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_config(task: str, sets, cpu_block: bool = False):
    """The train config's ``params`` (with its ``cpu:`` block's on top when asked), learning
    from the first iteration, then the ``--set`` overrides."""
    with open(os.path.join(ROOT, "cfg", "train", "%sQMIX.yaml" % task)) as f:
        doc = yaml.safe_load(f)
    cfg = doc["params"]
    if cpu_block:
        cfg = _merge(cfg, (doc.get("cpu") or {}).get("params") or {})
    cfg["runner"]["learning_starts"] = 0
    return apply_sets(cfg, sets)


def measure(task, num_envs, device, engine, cfg, iterations, seconds, cuda_graph):
    E = num_envs
    env = qmix_isaac.make(task, num_envs=E, sim_device=device, rl_device=device, seed=0,
                          physics_engine=engine, cudaGraph=cuda_graph)
    env.reset()
    acts, torques = random_inputs(env, device)
    r = rates({"raw": engine_step(env, torques), "task": lambda: env.step(acts)}, E, device,
              seconds)  # timed in turn (sim_throughput.rates)
    r_raw, r_task = r["raw"], r["task"]

    runner = build_runner(cfg, env)
    steps = runner.collect()                                     # warm-up: first captures, allocations
    runner.train(max(1, runner.grad_steps_due(steps)))
    _sync(device)
    t_collect = t_train = 0.0
    n_env = n_grad = 0
    for _ in range(iterations):
        t0 = time.perf_counter()
        steps = runner.collect()
        _sync(device)
        t1 = time.perf_counter()
        n = runner.grad_steps_due(steps)
        runner.train(n)
        _sync(device)
        t2 = time.perf_counter()
        t_collect, t_train = t_collect + t1 - t0, t_train + t2 - t1
        n_env, n_grad = n_env + steps, n_grad + n
    # gradient steps/s measured on their own (the replay ratio may owe only one or two per iteration)
    k = 5
    t0 = time.perf_counter()
    runner.train(k)
    _sync(device)
    r_grad = k / (time.perf_counter() - t0)
    env.close()
    t_iter = t_collect + t_train
    t_sim = n_env / r_task
    return {
        "raw": r_raw, "task": r_task, "collect": n_env / t_collect, "grad": r_grad,
        "grad_per_iter": n_grad / iterations, "e2e": n_env / t_iter,
        "train_over_sim": (t_iter - t_sim) / t_sim,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="MultiAntPush")
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default="auto")
    p.add_argument("--num-envs", nargs="+", type=int, default=[64, 256])
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per size")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds each of raw and task is timed (in turns)")
    p.add_argument("--cuda-graph", action="store_true", help="env.cudaGraph: the task step replayed from CUDA graphs")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="train config override, e.g. --set runner.batch_size=64")
    p.add_argument("--cpu-block", action="store_true",
                   help="the train config's cpu: block on top of its params, as train.py on a CPU")
    a = p.parse_args(argv)
    cfg = train_config(a.task, a.sets, a.cpu_block)
    print("# %s, %s, engine %s, torch %s, %s, %s" % (
        a.task, a.device, a.engine, torch.__version__, platform.processor() or platform.machine(),
        time.strftime("%Y-%m-%d")))
    if torch.device(a.device).type == "cuda":
        print("# GPU: %s; env.cudaGraph %s" % (torch.cuda.get_device_name(0), a.cuda_graph))
    print("# replay ratio %g, batch %d x %d steps, hidden %d, train_threads %s" % (
        cfg["runner"]["replay_ratio"], cfg["runner"]["batch_size"], cfg["replay"]["seq_len"],
        cfg["agent"]["hidden_dim"], cfg["runner"].get("train_threads")))
    print("| num_envs | raw | task | collect | grad steps/s | grad/iter | e2e | e2e/raw | train/sim |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for E in a.num_envs:
        m = measure(a.task, E, a.device, a.engine, cfg, a.iterations, a.seconds, a.cuda_graph)
        print("| %d | %.0f | %.0f | %.0f | %.1f | %.1f | %.0f | %.0f%% | %.2f |" % (
            E, m["raw"], m["task"], m["collect"], m["grad"], m["grad_per_iter"], m["e2e"],
            100.0 * m["e2e"] / m["raw"], m["train_over_sim"]), flush=True)


if __name__ == "__main__":
    main()
