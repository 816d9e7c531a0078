"""Env-steps per second of each raw engine beside the full task step.

    python bench/sim_throughput.py                                  # CPU: mujoco, E = 1..1024
    python bench/sim_throughput.py --device cuda:0 --engines newton --num-envs 1024 4096 8192 16384 --cuda-graph

An env-step is one policy step of one world (``controlFrequencyInv`` physics steps). Columns:
``bare`` a loop of ``mujoco.rollout`` over the same MJCF with nothing else (mujoco only), ``raw``
the engine (set torques, simulate, refresh the views), ``task`` the whole ``env.step`` (actions to
torques, physics, resets, observations, rewards, episode statistics). ``task cost`` is the share
of the task step spent outside the engine: 1 - task/raw; ``layer`` times the same step with the
engine's ``simulate`` made a no-op (microseconds per step: the task layer alone, which on a GPU
without graphs is mostly launches; less noisy than the difference of two rates).
``--cuda-graph`` adds the task step replayed from CUDA graphs (``env.cudaGraph``; CUDA and newton
only) and its task cost. Timings take the median of a few repeats of ``--seconds`` each, after a
warm-up; on CUDA the clock is read after a synchronize.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import qmix_isaac  # noqa: E402


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rate(fn, num_envs, device, seconds, repeats=3):
    """Median env-steps/s of ``fn`` (one env-step of every world per call)."""
    fn(); fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn(); n += 1
            if n % 4 == 0:
                _sync(device)
                dt = time.perf_counter() - t0
                if dt >= seconds:
                    break
        out.append(n * num_envs / dt)
    return statistics.median(out)


def random_inputs(env, device):
    """Random discrete actions for every agent and random joint torques within the limits."""
    E = env.num_envs
    acts = torch.randint(0, env.action_shape[-1], (E, env.num_agents) + env.action_shape[:-1],
                         device=device)
    torques = (torch.rand(E, env.engine.num_dof, device=device) - 0.5) * env.engine.dof_effort_limit
    return acts, torques


def engine_step(env, torques):
    """One env-step of the raw engine: set torques, simulate, refresh the views."""
    def raw():
        env.engine.set_dof_torques(torques)
        env.engine.simulate(env.control_freq_inv)
        env.engine.refresh()
    return raw


def bare_rollout(env, start_state, ctrl_row, seconds):
    """mujoco.rollout stepping the task's MJCF from the same states with the same controls as
    the engine, with nothing around it."""
    import mujoco
    from mujoco import rollout
    m = mujoco.MjModel.from_xml_string(env.scene.xml)
    E, cf = env.num_envs, env.control_freq_inv
    nthread = os.cpu_count() or 1
    datas = [mujoco.MjData(m) for _ in range(nthread)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = start_state.copy()
    out = np.empty((E, cf, mujoco.mj_stateSize(m, spec)))
    ctrl = np.repeat(ctrl_row[:, None, :], cf, axis=1).copy()
    models = [m] * E
    with rollout.Rollout(nthread=nthread) as r:
        def step():
            r.rollout(models, datas, state, ctrl, nstep=cf, state=out, skip_checks=True)
            state[:] = out[:, -1]
        return rate(step, E, "cpu", seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="MultiAntPush")
    p.add_argument("--engines", nargs="+", default=["mujoco"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-envs", nargs="+", type=int, default=[1, 4, 16, 64, 256, 1024])
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time the task step replayed from CUDA graphs (env.cudaGraph)")
    p.add_argument("--start-pool", type=int, nargs="+", default=[None], metavar="N",
                   help="env.startPool values to time the task step with, one row each (default: "
                        "the task config's; 1 draws start states every step, as before 2026-12-06)")
    a = p.parse_args(argv)
    dev = a.device
    print("# %s, %s, torch %s, %s, %s" % (a.task, dev, torch.__version__, platform.processor() or
                                          platform.machine(), time.strftime("%Y-%m-%d")))
    if torch.device(dev).type == "cuda":
        print("# GPU: %s" % torch.cuda.get_device_name(0))
    graph_cols = " task step (graph) | graph task cost |" if a.cuda_graph else ""
    print("| engine | num_envs | start pool | bare rollout | raw engine | task step | task cost "
          "| raw/bare | layer µs/step |" + graph_cols)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * a.cuda_graph)
    for engine in a.engines:
        for E, pool in itertools.product(a.num_envs, a.start_pool):
            kw = {} if pool is None else {"startPool": pool}
            env = qmix_isaac.make(a.task, num_envs=E, sim_device=dev, rl_device=dev, seed=0,
                                  physics_engine=engine, **kw)
            env.reset()
            acts, torques = random_inputs(env, dev)
            raw = engine_step(env, torques)

            def task():
                env.step(acts)

            r_bare = float("nan")
            if env.engine.name == "mujoco":  # same start states and controls as the raw engine
                env.engine.set_dof_torques(torques)
                start = env.engine._state.copy()
                r_bare = bare_rollout(env, start, env.engine._ctrl[:, 0, :].copy(), a.seconds)
                env.engine._state[:] = start
            r_raw = rate(raw, E, dev, a.seconds)
            r_task = rate(task, E, dev, a.seconds)
            graphed = ""
            if a.cuda_graph:
                genv = qmix_isaac.make(a.task, num_envs=E, sim_device=dev, rl_device=dev, seed=0,
                                       physics_engine=engine, cudaGraph=True)
                genv.reset()
                r_graph = rate(lambda: genv.step(acts), E, dev, a.seconds)
                captured = genv._step_graphs is not None  # False: not CUDA, or capture failed
                graphed = " %.0f%s | %.0f%% |" % (r_graph, "" if captured else " (eager)",
                                                   100.0 * (1.0 - r_graph / r_raw))
                genv.close()
            env.engine.simulate = lambda n: None  # the task layer alone (the env is done with)
            layer_us = 1e6 * E / rate(task, E, dev, a.seconds)
            print("| %s | %d | %d | %s | %.0f | %.0f | %.0f%% | %s | %.0f |%s" % (
                env.engine.name, E, env.start_pool, "-" if r_bare != r_bare else "%.0f" % r_bare,
                r_raw, r_task,
                100.0 * (1.0 - r_task / r_raw),
                "-" if r_bare != r_bare else "%.0f%%" % (100.0 * r_raw / r_bare), layer_us,
                graphed), flush=True)
            env.close()


if __name__ == "__main__":
    main()
