"""Does a trained MultiAntPush team depend on the friction cone? Greedy success binned by the
goal's direction from the box, measured as the angle to the nearest world axis (0 deg: along x or
y, 45 deg: along a diagonal), under MuJoCo's pyramidal cone (the default, weaker along the world's
diagonals) and under the elliptic one (the same in every direction), from the same seed.

    python bench/push_direction.py runs/<run>/nn/last.pth [--num-envs 64] [--episodes 1024] [--seed 5]

The task and learner are the checkpoint's own, curriculum off (full goal distances), as
``train.py test=True``; only ``sim.cone`` changes between the two columns. CPU, MuJoCo engine.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qmix_isaac  # noqa: E402
from qmix_isaac.record.checkpoint import load_checkpoint  # noqa: E402
from qmix_isaac.runner import GreedyTeam, build_runner  # noqa: E402

BINS = (0.0, 15.0, 30.0, 45.0001)


def off_axis_deg(goal_xy: torch.Tensor, box_xy: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between the box-to-goal direction and the nearest world axis, in [0, 45]."""
    v = goal_xy - box_xy
    a = torch.rad2deg(torch.atan2(v[:, 1], v[:, 0])).remainder(90.0)
    return torch.minimum(a, 90.0 - a)


def run(ckpt, cone: str, num_envs: int, episodes: int, seed: int):
    """(off-axis angle, success) of the first ``ceil(episodes / num_envs)`` episodes of each world."""
    task_cfg = {k: v for k, v in ckpt["task_cfg"].items()}
    task_cfg["sim"] = dict(task_cfg["sim"], cone=cone)
    task_cfg["task"] = dict(task_cfg.get("task") or {})
    if task_cfg["task"].get("curriculum"):
        task_cfg["task"]["curriculum"] = dict(task_cfg["task"]["curriculum"], levels=0)
    train_cfg = {k: v for k, v in ckpt["train_cfg"].items() if k != "cpu"}
    train_cfg.get("params", train_cfg).pop("cpu", None)
    torch.manual_seed(seed)
    env = qmix_isaac.make(task_cfg["name"], num_envs=num_envs, physics_engine="mujoco", seed=seed,
                          cfg=task_cfg)
    runner = build_runner(train_cfg, env)
    runner.load_state_dict(ckpt["runner"])
    team = GreedyTeam(runner.agent, env)
    box = env.box_index

    def angle():
        return off_axis_deg(env.goal_pos, env.engine.root_states[:, box, 0:2])

    per_env = math.ceil(episodes / num_envs)
    ang, finished = angle(), torch.zeros(num_envs, dtype=torch.long)
    out_a, out_s = [], []
    while bool((finished < per_env).any()):
        _, done, extras, crossing = team.step()
        ep = extras["episode"]
        counted = done & (finished < per_env) & ep["mask"].to(torch.bool)
        out_a.append(ang[counted])
        out_s.append(ep["success"][counted])
        finished += done.long()
        ang = torch.where(crossing, angle(), ang)  # worlds that began a new episode this step
    env.close()
    return torch.cat(out_a), torch.cat(out_s)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--episodes", type=int, default=1024)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args(argv)
    ckpt = load_checkpoint(a.checkpoint)
    if ckpt["task"] != "MultiAntPush":
        sys.exit("error: %s is a %s checkpoint; this bench is for MultiAntPush" % (a.checkpoint, ckpt["task"]))
    print("# %s, greedy, %d worlds, seed %d, %s, %s" % (a.checkpoint, a.num_envs, a.seed,
                                                       datetime.date.today(), platform.machine()))
    res = {cone: run(ckpt, cone, a.num_envs, a.episodes, a.seed) for cone in ("pyramidal", "elliptic")}
    print("| goal off the nearest axis | episodes | success, pyramidal cone | success, elliptic cone |")
    print("|---|---|---|---|")
    for lo, hi in list(zip(BINS[:-1], BINS[1:])) + [(BINS[0], BINS[-1])]:
        cells = []
        for cone in ("pyramidal", "elliptic"):
            ang, suc = res[cone]
            m = (ang >= lo) & (ang < hi)
            n = int(m.sum())
            s = float(suc[m].mean()) if n else float("nan")
            cells.append("%.3f +- %.3f" % (s, math.sqrt(max(s * (1 - s), 1e-9) / max(n, 1))))
        n = int(((res["pyramidal"][0] >= lo) & (res["pyramidal"][0] < hi)).sum())
        label = "all" if (lo, hi) == (BINS[0], BINS[-1]) else "%d-%d deg" % (lo, round(hi))
        print("| %s | %d | %s | %s |" % (label, n, cells[0], cells[1]))


if __name__ == "__main__":
    main()
