"""What one env.step asks of torch: ATen kernels and views per step, by function.

    python bench/task_ops.py                                   # MultiAntPush, mujoco, CPU
    python bench/task_ops.py --task MultiBallPush --engine newton --device cuda:0

On a GPU every kernel of the task layer is one launch in eager mode (plus Python and dispatch
time around it), a fixed cost per step that does not shrink with fewer worlds: this table says
where that cost comes from. The counts do not depend on num_envs (tests/test_hot_path.py checks
that) nor, for the task layer, on the device. ``env.cudaGraph`` replays the task layer in two graph launches
(before and after the engine's own physics graph).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import qmix_isaac  # noqa: E402
from qmix_isaac.debug import TorchCalls  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="MultiAntPush")
    p.add_argument("--engine", default="mujoco")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=32, help="steps counted (after 3 warm-up steps); "
                   "a multiple of env.startPool averages its draws in")
    p.add_argument("--start-pool", type=int, default=None,
                   help="env.startPool (default: the task config's; 1: start states drawn every "
                   "step)")
    a = p.parse_args(argv)
    kw = {} if a.start_pool is None else {"startPool": a.start_pool}
    env = qmix_isaac.make(a.task, num_envs=a.num_envs, sim_device=a.device, rl_device=a.device,
                          seed=0, physics_engine=a.engine, **kw)
    env.reset()
    gen = torch.Generator(device=a.device).manual_seed(0)
    shape = (a.num_envs, env.num_agents) + env.action_shape[:-1]
    for _ in range(3):
        env.step(torch.randint(0, env.action_shape[-1], shape, generator=gen, device=a.device))
    actions = torch.randint(0, env.action_shape[-1], shape, generator=gen, device=a.device)
    with TorchCalls() as calls:
        for _ in range(a.steps):
            env.step(actions)
    n = a.steps
    print("# %s, engine %s, %s, torch %s, startPool %d: per env.step (mean of %d)"
          % (a.task, env.engine.name, a.device, torch.__version__, env.start_pool, n))
    print("| function | kernels | views |")
    print("|---|---:|---:|")
    for site in sorted(set(calls.kernels) | set(calls.views), key=lambda s: -calls.kernels[s]):
        print("| %s | %.0f | %.0f |" % (site, calls.kernels[site] / n, calls.views[site] / n))
    print("| **total** | **%.0f** | **%.0f** |" % (sum(calls.kernels.values()) / n,
                                                  sum(calls.views.values()) / n))
    print("torch calls from Python per step: %.0f; values read back into Python: %d"
          % (calls.python_calls / n, sum(calls.reads.values())))
    env.close()


if __name__ == "__main__":
    main()
