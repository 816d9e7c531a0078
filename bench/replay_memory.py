"""Bytes of replay per stored env-step for each task, and the largest replay that fits in memory.

    python bench/replay_memory.py

Builds each task (1 world, MuJoCo) and the replay its train config declares, reads the bytes the
replay's tensors take per stored env-step (all agents of one world for one step, the sequence
overlap included), and divides a 24 GiB CPU machine's and an 80 GiB GPU's memory, minus a
reserve for everything else, by it. Prints a markdown table.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import qmix_isaac  # noqa: E402
from qmix_isaac.config import CFG_DIR  # noqa: E402
from qmix_isaac.runner import build_runner  # noqa: E402

GIB = 1024 ** 3
RESERVE = {"24 GiB CPU": 6 * GIB, "80 GiB GPU": 10 * GIB}  # simulation, networks, allocator slack


def main():
    from omegaconf import OmegaConf
    print("| task | agents | seq_len | obs dtype | bytes / env-step | " +
          " | ".join("max env-steps (%s)" % k for k in RESERVE) + " |")
    print("|---|---:|---:|---|---:|" + "---:|" * len(RESERVE))
    for task, over in (("MultiBallPush", {}), ("MultiAntPush", {}), ("MultiAntPush", {"agentMode": "leg"})):
        train = OmegaConf.to_container(OmegaConf.load(os.path.join(CFG_DIR, "train", task + "QMIX.yaml")))
        train["params"]["replay"]["capacity"] = 64
        env = qmix_isaac.make(task, num_envs=1, seed=0, **over)
        runner = build_runner(train, env, device="cpu")
        per_step = runner.replay.bytes_per_env_step()
        seq = train["params"]["replay"]["seq_len"]
        fits = ["{:,.0f}M".format((total - reserve) / per_step / 1e6)
                for total, reserve in ((24 * GIB, RESERVE["24 GiB CPU"]), (80 * GIB, RESERVE["80 GiB GPU"]))]
        label = task + (" (legs)" if over else "")
        print("| %s | %d | %d | %s | %.0f | %s |" % (label, env.num_agents, seq,
                                                     train["params"]["replay"].get("obs_dtype", "float32"),
                                                     per_step, " | ".join(fits)))
        env.close()


if __name__ == "__main__":
    main()
