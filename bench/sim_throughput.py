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
only) and its task cost. The columns of a row are timed in turn, a quarter second each, until
each has run ``--seconds`` (median over its slices), so that a shared host's drift shifts them
alike; on CUDA the clock is read after a synchronize.
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


def rates(fns, num_envs, device, seconds, slice_s=0.25):
    """Env-steps/s of each of ``fns`` (name -> one env-step of every world per call): timed in
    turn, ``slice_s`` each, until each has run ``seconds``; the median over its slices. Taking
    turns makes a host that speeds up or slows down during the run (a shared one does, by tens
    of per cent over seconds) shift every column alike, so their ratios hold."""
    for fn in fns.values():
        fn(); fn()
    _sync(device)
    slices = {k: [] for k in fns}
    for _ in range(max(1, int(round(seconds / slice_s)))):
        for k, fn in fns.items():
            n, t0 = 0, time.perf_counter()
            while True:
                fn(); n += 1
                if n % 4 == 0:
                    _sync(device)
                    dt = time.perf_counter() - t0
                    if dt >= slice_s:
                        break
            slices[k].append(n * num_envs / dt)
    return {k: statistics.median(v) for k, v in slices.items()}


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


def bare_rollout(env, start_state, ctrl_row):
    """mujoco.rollout stepping the task's MJCF from the same states with the same controls as
    the engine, with nothing around it: (one env-step of every world, the pool to close)."""
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
    pool = rollout.Rollout(nthread=nthread)

    def step():
        pool.rollout(models, datas, state, ctrl, nstep=cf, state=out, skip_checks=True)
        state[:] = out[:, -1]
    return step, pool


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="MultiAntPush")
    p.add_argument("--engines", nargs="+", default=["mujoco"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-envs", nargs="+", type=int, default=[1, 4, 16, 64, 256, 1024])
    p.add_argument("--seconds", type=float, default=3.0, help="timing per column and row")
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

            def task():
                env.step(acts)

            def layer():  # the task layer alone: the same step with the physics a no-op
                env.engine.simulate = lambda n: None
                try:
                    env.step(acts)
                finally:
                    del env.engine.simulate  # the class's method again (no bound-method cycle)

            fns, bare_pool = {}, None
            if env.engine.name == "mujoco":  # same start states and controls as the raw engine
                env.engine.set_dof_torques(torques)
                fns["bare"], bare_pool = bare_rollout(env, env.engine._state.copy(),
                                                      env.engine._ctrl[:, 0, :].copy())
            fns["raw"], fns["task"], fns["layer"] = engine_step(env, torques), task, layer
            genv = None
            if a.cuda_graph:
                genv = qmix_isaac.make(a.task, num_envs=E, sim_device=dev, rl_device=dev, seed=0,
                                       physics_engine=engine, cudaGraph=True)
                genv.reset()
                fns["graph"] = lambda: genv.step(acts)
            r = rates(fns, E, dev, a.seconds)
            r_bare, r_raw, r_task = r.get("bare", float("nan")), r["raw"], r["task"]
            layer_us = 1e6 * E / r["layer"]
            graphed = ""
            if genv is not None:
                captured = genv._step_graphs is not None  # False: not CUDA, or capture failed
                graphed = " %.0f%s | %.0f%% |" % (r["graph"], "" if captured else " (eager)",
                                                   100.0 * (1.0 - r["graph"] / r_raw))
                genv.close()
            if bare_pool is not None:
                bare_pool.close()
            print("| %s | %d | %d | %s | %.0f | %.0f | %.0f%% | %s | %.0f |%s" % (
                env.engine.name, E, env.start_pool, "-" if r_bare != r_bare else "%.0f" % r_bare,
                r_raw, r_task,
                100.0 * (1.0 - r_task / r_raw),
                "-" if r_bare != r_bare else "%.0f%%" % (100.0 * r_raw / r_bare), layer_us,
                graphed), flush=True)
            env.close()


if __name__ == "__main__":
    main()
