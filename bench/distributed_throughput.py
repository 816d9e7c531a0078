"""Throughput of torchrun scale-out: 1 process vs N ranks, same per-rank work (issue 6).

    .venv/bin/python bench/distributed_throughput.py                      # CPU: 1 vs 2 gloo ranks
    .venv/bin/python bench/distributed_throughput.py --ranks 1 2 4 8 --device cuda --num-envs 4096 \\
        --task MultiAntPush --iterations 200                               # one node, 1..8 GPUs

Each configuration is one ``train.py`` run (``torchrun --nproc_per_node=N ... multi_gpu=True`` for
N > 1) of a fixed number of collect-and-train iterations with learning from the first one; the
figures come from its final ``done:`` line: env steps of all ranks per second of the loop, and
gradient steps per second (every rank takes the same steps on a batch N times larger). Prints a
markdown table; ``--out`` appends it to a file.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DONE = re.compile(r"done: (\d+) iterations, ([\d,]+) env steps, (\d+) gradient steps in (\d+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        common = ["task=%s" % args.task, "num_envs=%d" % args.num_envs,
                  "max_iterations=%d" % args.iterations, "train_dir=%s" % tmp,
                  "sim_device=%s" % args.device, "rl_device=%s" % args.device,
                  "train.params.runner.learning_starts=0",
                  "train.params.runner.log_interval=1000000000"] + args.overrides
        if ranks == 1:
            cmd = [sys.executable, os.path.join(ROOT, "train.py")] + common
        else:
            torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
            cmd = [torchrun, "--nproc_per_node=%d" % ranks, "--master_port=%d" % free_port(),
                   os.path.join(ROOT, "train.py"), "multi_gpu=True"] + common
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    m = DONE.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        raise SystemExit("run with %d ranks failed:\n%s\n%s" % (ranks, proc.stdout[-2000:],
                                                                  proc.stderr[-2000:]))
    steps, grads = int(m.group(2).replace(",", "")), int(m.group(3))
    # the loop's wall time is printed in whole seconds: take the env-steps/s of the last log line
    rate = float(re.findall(r"\| (\d+) steps/s \|", proc.stdout)[-1])
    wall = steps / rate
    return {"ranks": ranks, "env_steps": steps, "env_steps_per_s": rate, "grad_steps": grads,
            "grad_steps_per_s": grads / wall, "samples_per_s": grads * ranks * args.batch / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--task", default="MultiBallPush")
    p.add_argument("--num-envs", type=int, default=64, help="worlds per rank")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32, help="sequences per gradient step per rank")
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*", help="more train.py overrides")
    args = p.parse_args()
    args.overrides = ["train.params.runner.batch_size=%d" % args.batch,
                      "physics_engine=%s" % ("mujoco" if args.device == "cpu" else "auto")] + args.overrides
    rows = [run(n, args) for n in args.ranks]
    base = rows[0]
    lines = ["%s, %s (%d cores), %s, %d worlds per rank, %d iterations"
             % (datetime.date.today().isoformat(), platform.node() or "this machine", os.cpu_count(),
                args.task, args.num_envs, args.iterations), "",
             "| ranks | env steps/s (all ranks) | x vs 1 | gradient steps/s | sequences/s learned |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %d | %.0f | %.2f | %.1f | %.0f |" % (
            r["ranks"], r["env_steps_per_s"], r["env_steps_per_s"] / base["env_steps_per_s"],
            r["grad_steps_per_s"], r["samples_per_s"]))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
