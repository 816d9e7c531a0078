"""MuJoCo (C) against Newton (MuJoCo Warp) on MultiAntPush's scene: how far the two engines'
trajectories part from the same start and torques, set beside the same MuJoCo run with one joint
velocity nudged by 1e-6 rad/s (chaos alone), and the statistics of many worlds under random
torques (what a learner sees), which must agree if the engines model the same physics.

    python bench/engine_parity.py [--num-envs 128] [--seconds 5] [--seeds 0 1 2]   (the defaults)

Torques: each joint at -1, 0 or +1 x powerScale x its motor limit, drawn anew every
controlFrequencyInv physics steps (the task's policy rate). Newton runs on the CPU here (slow: minutes at 128 worlds).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("WARP_CACHE_PATH", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".warp_cache"))

import qmix_isaac  # noqa: E402
from qmix_isaac.sim import make_engine  # noqa: E402
from qmix_isaac.sim.rotations import quat_rotate  # noqa: E402

ROWS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


def run(scene, name, start, torques, hold, steps, nudge=0.0):
    """Root states [steps, E, actors, 13] of engine ``name`` from ``start`` under ``torques``."""
    E = start[0].shape[0]
    eng = make_engine(name, scene, E, "cpu")
    dof_vel = start[2].clone()
    dof_vel[:, 0] += nudge
    eng.set_state(torch.ones(E, dtype=torch.bool), start[0], start[1], dof_vel)
    out = []
    for s in range(steps):
        if s % hold == 0:
            eng.set_dof_torques(torques[s // hold])
        eng.simulate(1)
        eng.refresh()
        out.append(eng.root_states.clone())
    eng.close()
    return torch.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=128, help="worlds per seed for the statistics")
    p.add_argument("--seconds", type=float, default=5.0, help="simulated time per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="start layouts and torque streams (the first one's worlds for the divergence)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print("# MultiAntPush scene, MuJoCo (C) vs Newton (MuJoCo Warp) on the CPU, %s, %s, %s"
          % (datetime.date.today(), platform.machine(), platform.python_version()))
    stats = {k: [] for k in ("mujoco", "mujoco nudged", "newton")}
    divergence = None
    for seed in a.seeds:
        env = qmix_isaac.make("MultiAntPush", num_envs=a.num_envs, physics_engine="mujoco", seed=seed)
        env.reset()
        e = env.engine
        start = (e.root_states.clone(), e.dof_pos.clone(), e.dof_vel.clone())
        dt, scene, ants, box, fall_z = e.dt, env.scene, env.ant_index, env.box_index, env.fall_up_z
        hold = env.control_freq_inv
        scale = e.dof_effort_limit * env.power_scale
        env.close()
        steps = int(round(a.seconds / dt))
        g = torch.Generator().manual_seed(1000 + seed)
        torques = [(torch.randint(0, 3, (a.num_envs, scale.numel()), generator=g).float() - 1) * scale
                   for _ in range(steps // hold + 1)]
        traj = {"mujoco": run(scene, "mujoco", start, torques, hold, steps),
                "mujoco nudged": run(scene, "mujoco", start, torques, hold, steps, nudge=1e-6),
                "newton": run(scene, "newton", start, torques, hold, steps)}
        if divergence is None:  # the first seed's worlds, step by step
            divergence = traj
        for k, r in traj.items():
            up = quat_rotate(r[:, :, ants, 3:7], torch.tensor([0.0, 0.0, 1.0]).expand(r[:, :, ants, :3].shape))
            fallen = (up[..., 2] < fall_z).any(0).float().mean()       # per ant, ever
            travel = (r[-1, :, ants, :2] - start[0][:, ants, :2]).norm(dim=-1).mean()
            box_moved = (r[-1, :, box, :2] - start[0][:, box, :2]).norm(dim=-1).mean()
            stats[k].append(torch.stack([fallen, travel, box_moved]))

    print("\nSame start, same torques (seed %d, %d worlds): largest difference from the MuJoCo run"
          % (a.seeds[0], a.num_envs))
    print("| t [s] | Newton: torso z [m] | torso xy [m] | box xy [m] | nudged MuJoCo: torso z | torso xy | box xy |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    ref = divergence["mujoco"]
    for t in ROWS_S:
        s = int(round(t / dt)) - 1
        if s >= ref.shape[0]:
            break
        cells = []
        for k in ("newton", "mujoco nudged"):
            d = divergence[k][s] - ref[s]
            cells += ["%.1e" % d[:, ants, 2].abs().max(), "%.1e" % d[:, ants, :2].norm(dim=-1).max(),
                      "%.1e" % d[:, box, :2].norm(dim=-1).max()]
        print("| %.2f | %s |" % (t, " | ".join(cells)))

    print("\nStatistics over %d seeds x %d worlds, %.0f s of random torques (mean, and the seeds' spread)"
          % (len(a.seeds), a.num_envs, a.seconds))
    print("| engine | ants fallen | torso travel [m] | box moved [m] |")
    print("|---|---:|---:|---:|")
    for k, rows in stats.items():
        x = torch.stack(rows)
        sd = x.std(0) if len(rows) > 1 else torch.zeros(3)
        print("| %s | %s |" % (k, " | ".join("%.3f +- %.3f" % (m, v) for m, v in zip(x.mean(0), sd))))


if __name__ == "__main__":
    main()
