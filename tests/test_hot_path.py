"""The hot-path rules of DESIGN.md §2, checked on the CPU in every CI run.

Between simulation and gradient step nothing may read a tensor back into Python (``.item()``,
``.tolist()``, ``.numpy()``, ``.cpu()``, a tensor-valued ``if``, ``int(t)``...) and no work may
grow with the number of worlds in Python. On a GPU each such read is a host sync; the CUDA test
(tests/test_qmix_cuda.py) catches them with ``torch.cuda.set_sync_debug_mode("error")``, but only
where a GPU is. Here a ``TorchFunctionMode`` sees every torch call made from Python, on any
device, so the same mistakes fail on the CPU: a read-back is named with its file and line, and a
per-world Python loop shows as a torch call count that changes with ``num_envs``.
"""
import collections
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

import qmix_isaac
from qmix_isaac.runner import build_runner
from qmix_isaac.tasks.toy import GridRendezvous

# Tensor methods that hand a value (or a host copy) to Python.
READ_BACK = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__",
             "__len__", "__iter__"}


class TorchCalls(TorchFunctionMode):
    """Counts torch calls and records read-backs as (method, innermost repo frame).

    torch.optim's own read of Adam's step count is left out: torch keeps that counter on the host
    unless the optimizer is capturable (the CUDA-graph update makes it so), so it is not a device
    sync on a GPU either."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.reads = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        name = getattr(func, "__name__", "")
        if name in READ_BACK:
            stack = traceback.extract_stack()[:-1]
            if not any("torch/optim/" in f.filename for f in stack):
                ours = [f for f in stack if "qmix_isaac" in f.filename or "/tasks/" in f.filename]
                where = "%s:%d" % (ours[-1].filename, ours[-1].lineno) if ours else "?"
                self.reads[(name, where)] += 1
        return func(*args, **(kwargs or {}))


def step_calls(task, engine, num_envs, steps=3):
    """Torch calls and read-backs of ``steps`` env.step calls after a warm-up, random actions."""
    env = qmix_isaac.make(task, num_envs=num_envs, sim_device="cpu", rl_device="cpu", seed=0,
                          physics_engine=engine)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    shape = (num_envs, env.num_agents) + env.action_shape[:-1]
    actions = [torch.randint(0, env.action_shape[-1], shape, generator=gen) for _ in range(steps + 2)]
    env.step(actions[0])
    env.step(actions[1])
    with TorchCalls() as mode:
        for a in actions[2:]:
            env.step(a)
    env.close()
    return mode


@pytest.mark.parametrize("engine", ["mujoco", "newton"])
@pytest.mark.parametrize("task", ["MultiBallPush", "MultiAntPush"])
def test_env_step_reads_nothing_back_and_does_not_loop_over_worlds(task, engine):
    small, large = step_calls(task, engine, 2), step_calls(task, engine, 5)
    assert not small.reads and not large.reads, dict(small.reads + large.reads)
    assert small.calls == large.calls > 0  # no Python work per world


def test_learn_loop_reads_nothing_back_between_logs(one_thread):
    """act -> env.step -> store -> sample -> update (TD(lambda), burn-in, factored heads, the
    exploration options) for many gradient steps, with no log in between."""
    torch.manual_seed(0)
    env = GridRendezvous(num_envs=32, factored=True, rl_device="cpu", seed=0)
    cfg = {
        "agent": {"hidden_dim": 16},
        "learner": {"td_lambda": 0.6, "target_update_interval": 5},
        "replay": {"capacity": 512, "seq_len": 8, "burn_in": 2},
        "exploration": {"eps_anneal_steps": 2000, "per_branch": True, "hold_max": 5},
        "runner": {"batch_size": 8, "replay_ratio": 1 / 32, "log_interval": 10 ** 9},
    }
    runner = build_runner(cfg, env)
    runner.learn(512, log_fn=lambda steps, stats: None)  # warm-up: replay fills, first updates
    grad_steps = runner.learner.grad_steps
    with TorchCalls() as mode:
        runner.learn(runner.env_steps + 1024, log_fn=lambda steps, stats: None)
    assert runner.learner.grad_steps - grad_steps >= 30
    assert not mode.reads, dict(mode.reads)


def test_read_back_is_caught():
    """The check itself: a tensor-valued if and an .item() in the step are reported."""
    env = qmix_isaac.make("MultiBallPush", num_envs=2, sim_device="cpu", rl_device="cpu",
                          physics_engine="mujoco")
    env.reset()
    compute = env.compute_observations

    def leaky():
        compute()
        if env.reset_buf.any():  # the mistake under test
            pass
        env.progress_buf.max().item()

    env.compute_observations = leaky
    with TorchCalls() as mode:
        env.step(torch.zeros(2, env.num_agents, dtype=torch.long))
    assert {name for name, _ in mode.reads} == {"__bool__", "item"}
