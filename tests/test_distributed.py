"""torchrun scale-out on CPU (issue 6): gloo ranks, averaged gradients, one run folder, resume,
a dying rank.

The maths (gradient mean over ranks, statistics pooled over ranks) is checked against values
computed by hand in two gloo processes; the rest runs ``torchrun --nproc_per_node=2 train.py
multi_gpu=True`` on the real MuJoCo engine.
"""
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qmix_isaac.distributed import GradAllReduce, sum_over_ranks  # noqa: E402
from qmix_isaac.record.checkpoint import load_checkpoint  # noqa: E402
from qmix_isaac.runner import _DeviceMeans  # noqa: E402

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
SMALL = ["task=MultiBallPush", "num_envs=8", "physics_engine=mujoco",
         "train.params.runner.learning_starts=0", "train.params.runner.log_interval=400",
         "train.params.runner.replay_ratio=0.01", "train.params.runner.batch_size=8"]
DIGESTS = re.compile(r"parameters on 2 ranks: (\w+) \(digests (\w+) (\w+)\)")
WORLDS = re.compile(r"worlds on 2 ranks: ([\w ]+) \(observation digests (\w+) (\w+)\)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the maths, in two gloo processes ---------------------------------------------------------

def _model(rank):
    torch.manual_seed(0)  # same parameters on both ranks, different data
    net = torch.nn.Linear(3, 2)
    x = torch.tensor([[1.0, 2.0, 3.0]]) * (rank + 1)
    return net, x


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    net, x = _model(rank)
    net(x).sum().backward()
    GradAllReduce(net.parameters(), 2)()
    out[rank] = {"w": net.weight.grad.clone(), "b": net.bias.grad.clone()}
    # pooled statistics: rank 0 ended episodes of return 1 and 3, rank 1 one of return 5
    means = _DeviceMeans(torch.device("cpu"))
    returns = [torch.tensor([1.0, 3.0]), torch.tensor([5.0])][rank]
    means.add("episode/return", returns.sum(), torch.tensor(len(returns)))
    means.add("losses/td_loss", torch.tensor(float(rank + 1)), 1)
    means.add("episode/success", torch.tensor(0.0), torch.tensor(0))  # nothing ended anywhere
    out["stats%d" % rank] = {k: float(v) for k, v in means.pop(sum_over_ranks).items()}
    dist.destroy_process_group()


def test_gradients_and_statistics_are_averaged_over_ranks():
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
    # d(sum(Wx+b))/dW = x per output row; ranks have x and 2x -> mean 1.5x; bias grad 1 on both
    x = torch.tensor([1.0, 2.0, 3.0])
    for rank in (0, 1):
        assert torch.allclose(out[rank]["w"], 1.5 * x.expand(2, 3)), out[rank]["w"]
        assert torch.allclose(out[rank]["b"], torch.ones(2))
        assert torch.equal(out[rank]["w"], out[1 - rank]["w"])
    for rank in (0, 1):
        stats = out["stats%d" % rank]
        assert stats["episode/return"] == pytest.approx(3.0)  # (1+3+5)/3, not (2+5)/2
        assert stats["losses/td_loss"] == pytest.approx(1.5)
        assert stats["episode/success"] != stats["episode/success"]  # NaN: no episode, not 0


# -- torchrun end to end ------------------------------------------------------------------------

def torchrun(args, *, timeout=300, **kw):
    cmd = [TORCHRUN, "--nproc_per_node=2", "--master_port=%d" % free_port(),
           os.path.join(ROOT, "train.py"), "multi_gpu=True"] + list(args)
    # faulthandler: a rank that dies of a signal prints every thread's Python stack. CI saw rank 1
    # abort once at the end of a finished run ("terminate called without an active exception",
    # 2026-12-07), not reproduced in 58 runs since; the next one says where.
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, **kw)


def finished(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    train_dir = tmp_path_factory.mktemp("dist")
    rc, out = finished(torchrun(SMALL + ["max_iterations=6", "train_dir=%s" % train_dir]))
    assert rc == 0, out
    return train_dir, out


def test_two_ranks_train_one_run_folder_with_identical_parameters(two_rank_run):
    train_dir, out = two_rank_run
    runs = glob.glob(os.path.join(str(train_dir), "*"))
    assert len(runs) == 1, runs  # rank 0 alone writes
    events = glob.glob(os.path.join(runs[0], "summaries", "*"))
    assert len(events) == 1, events  # one set of logs
    assert out.count("run folder") == 1 and out.count("[it 6/6]") == 1, out  # rank 0 alone logs
    m = DIGESTS.search(out)
    assert m and m.group(1) == "identical" and m.group(2) == m.group(3), out
    w = WORLDS.search(out)  # ... while each rank simulated its own worlds (seed + rank)
    assert w and w.group(1) == "distinct" and w.group(2) != w.group(3), out
    ckpt = load_checkpoint(os.path.join(runs[0], "nn", "last.pth"))
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 6
    assert ckpt["runner"]["learner"]["grad_steps"] > 0  # both ranks learned: same steps, same weights
    steps = int(re.search(r"done: 6 iterations, ([\d,]+) env steps", out).group(1).replace(",", ""))
    assert steps == 2 * ckpt["runner"]["env_steps"]  # env steps count every rank's worlds


def test_two_ranks_resume(two_rank_run, tmp_path):
    train_dir, out = two_rank_run
    last = glob.glob(os.path.join(str(train_dir), "*", "nn", "last.pth"))[0]
    before = load_checkpoint(last)
    rc, out = finished(torchrun(["checkpoint=%s" % last, "num_envs=8", "max_iterations=10",
                                 "train_dir=%s" % tmp_path]))
    assert rc == 0, out
    assert "resumed at iteration 6" in out
    m = DIGESTS.search(out)
    assert m and m.group(1) == "identical", out
    after = load_checkpoint(glob.glob(os.path.join(str(tmp_path), "*", "nn", "last.pth"))[0])
    assert after["iteration"] == 10
    assert after["runner"]["env_steps"] > before["runner"]["env_steps"]
    assert after["runner"]["learner"]["grad_steps"] > before["runner"]["learner"]["grad_steps"]


def _rank_pid(parent_pid, rank):
    """pid of the train.py process with RANK=rank under torchrun ``parent_pid``."""
    for pid in subprocess.run(["pgrep", "-P", str(parent_pid)], capture_output=True,
                              text=True).stdout.split():
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if ("RANK=%d" % rank).encode() in f.read().split(b"\0"):
                    return int(pid)
        except OSError:
            continue
    return None


def _long_job_and_rank_1(tmp_path, extra=()):
    """A torchrun job that trains until stopped, and rank 1's pid once training runs."""
    proc = torchrun(SMALL + ["max_iterations=100000", "train_dir=%s" % tmp_path] + list(extra))
    deadline, pid = time.time() + 120, None
    while time.time() < deadline and pid is None:  # wait until rank 1 exists and training runs
        time.sleep(1.0)
        if glob.glob(os.path.join(str(tmp_path), "*", "nn", "last.pth")):
            pid = _rank_pid(proc.pid, 1)
    if pid is None:
        proc.kill()
    assert pid is not None, "rank 1 never started training"
    return proc, pid


def test_a_dying_rank_ends_the_job_with_a_clear_message(tmp_path):
    proc, pid = _long_job_and_rank_1(tmp_path)
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    rc, out = finished(proc, timeout=120)
    assert rc != 0
    assert time.time() - t0 < 60, "the job took %.0f s to stop" % (time.time() - t0)
    assert "rank 0: stopped by torchrun" in out or "rank 0: lost the other ranks" in out, out


def test_a_hung_rank_ends_the_job_after_dist_timeout_s(tmp_path):
    """A rank that stops answering (SIGSTOP: alive, holding its sockets) is not noticed by
    torchrun; the other rank's next collective gives up after dist_timeout_s and ends the job."""
    proc, pid = _long_job_and_rank_1(tmp_path, ["dist_timeout_s=10"])
    try:
        os.kill(pid, signal.SIGSTOP)
        t0 = time.time()
        rc, out = finished(proc, timeout=150)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert rc != 0
    assert "rank 0: lost the other ranks" in out, out
    assert took < 120, "the job took %.0f s to stop" % took


def test_multi_gpu_without_torchrun_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "multi_gpu=True",
                           "task=MultiBallPush", "train_dir=%s" % tmp_path], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs torchrun" in lines[0], proc.stderr
    assert os.listdir(str(tmp_path)) == []
