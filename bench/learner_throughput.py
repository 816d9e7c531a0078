"""Throughput of the QMIX learner pieces on a toy env: acting+storing, gradient steps, replay bytes.

    python bench/learner_throughput.py [--device cuda] [--num-envs 4096] [--seq-len 32] [--batch 256]

Prints a table of measured figures (never pass/fail). Acting uses tasks/toy.py GridRendezvous,
whose own step is a handful of tensor ops, so the figure is close to the learner's acting cost.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from qmix_isaac.runner import build_runner  # noqa: E402
from qmix_isaac.tasks.toy import GridRendezvous  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-envs", type=int, default=4096)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--factored", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cuda-graph", action="store_true", help="capture the update in a CUDA graph")
    a = p.parse_args()
    device = torch.device(a.device)
    env = GridRendezvous(num_envs=a.num_envs, num_agents=a.agents, factored=a.factored, rl_device=device)
    cfg = {
        "agent": {"hidden_dim": a.hidden},
        "learner": {"td_lambda": 0.6, "cuda_graph": a.cuda_graph},
        "replay": {"capacity": 8 * a.num_envs, "seq_len": a.seq_len},
        "runner": {"batch_size": a.batch, "replay_ratio": 0.0},
    }
    runner = build_runner(cfg, env)
    runner.collect()
    runner.train(3)
    _sync(device)
    t0 = time.perf_counter()
    steps = sum(runner.collect() for _ in range(a.repeats))
    _sync(device)
    t_collect = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner.train(10 * a.repeats)
    _sync(device)
    t_train = (time.perf_counter() - t0) / (10 * a.repeats)
    rows = [
        ("device", str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")),
        ("envs x agents", f"{a.num_envs} x {a.agents}" + (" factored" if a.factored else "")),
        ("act+step+store env-steps/s", f"{steps / t_collect:,.0f}"),
        ("gradient step (B=%d, L=%d%s) ms" % (a.batch, runner.replay.length, ", graph" if runner.learner.cuda_graph else ""), f"{1000 * t_train:.2f}"),
        ("transitions trained per s", f"{a.batch * a.seq_len / t_train:,.0f}"),
        ("replay bytes per env step", f"{runner.replay.bytes_per_env_step():.1f}"),
        ("replay MiB (%d sequences)" % runner.replay.capacity, f"{runner.replay.nbytes() / 2**20:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
