"""The hot-path rules, checked on the CPU in every CI run.

Between simulation and gradient step nothing may read a tensor back into Python (``.item()``,
``.tolist()``, ``.numpy()``, ``.cpu()``, a tensor-valued ``if``, ``int(t)``...) and no work may
grow with the number of worlds in Python. On a GPU each such read is a host sync; the CUDA test
(tests/test_qmix_cuda.py) catches them with ``torch.cuda.set_sync_debug_mode("error")``, but only
where a GPU is. Here a ``TorchFunctionMode`` sees every torch call made from Python, on any
device, so the same mistakes fail on the CPU (qmix_isaac/debug.py): a read-back is named with its
file and line, and a per-world Python loop shows as a torch call count that changes with
``num_envs``. A tensor made without ``device=`` (on a GPU: a CPU tensor, so a device mismatch or a
host-to-device copy) is named the same way.
"""
import pytest
import torch

import qmix_isaac
from qmix_isaac.debug import TorchCalls
from qmix_isaac.runner import build_runner
from qmix_isaac.tasks.toy import GridRendezvous


def step_calls(task, engine, num_envs, steps=3, **kw):
    """Torch calls and read-backs of ``steps`` env.step calls after a warm-up, random actions."""
    env = qmix_isaac.make(task, num_envs=num_envs, sim_device="cpu", rl_device="cpu", seed=0,
                          physics_engine=engine, **kw)
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
    assert not small.undeviced and not large.undeviced, dict(small.undeviced + large.undeviced)
    assert small.python_calls == large.python_calls > 0  # no Python work per world
    assert sum(small.kernels.values()) == sum(large.kernels.values()) > 0


def test_start_pool_takes_the_start_sampling_out_of_most_steps():
    """Drawing start states for every world on every step (startPool=1, what env.cudaGraph
    records) is a fifth of MultiAntPush's kernels; a pool of 16 steps' worth draws once in 16
    steps. On a GPU without graphs every kernel is a launch."""
    every_step = step_calls("MultiAntPush", "mujoco", 4, steps=16, startPool=1)
    pooled = step_calls("MultiAntPush", "mujoco", 4, steps=16, startPool=16)
    n_every, n_pooled = sum(every_step.kernels.values()), sum(pooled.kernels.values())
    assert n_pooled < 0.85 * n_every, (n_pooled, n_every)
    assert not pooled.reads


def test_start_states_are_converted_for_the_engine_once_per_pool():
    """The pool keeps its start states in the engine's own layout too (``Engine.encode_state``,
    run with the pool's draw): a step's resets only select rows of it (``set_encoded_state``),
    so 16 pooled steps convert as much as one step with a pool of 1."""
    def conversion(calls):
        return calls.kernels["qmix_isaac/sim/mujoco_engine.py:_rows"]
    every_step = step_calls("MultiAntPush", "mujoco", 4, steps=16, startPool=1)
    pooled = step_calls("MultiAntPush", "mujoco", 4, steps=16, startPool=16)  # one draw in 16
    assert conversion(every_step) == 16 * conversion(pooled) > 0


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
    assert not mode.undeviced, dict(mode.undeviced)


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


def test_a_tensor_made_without_a_device_is_caught():
    """The check itself: factory calls without ``device=`` are named (on a GPU run they would
    make CPU tensors); ``*_like``, an explicit device and ``as_tensor`` of a tensor are fine."""
    x = torch.ones(2)
    with TorchCalls() as mode:
        torch.zeros(2)
        torch.tensor([1.0])
        torch.arange(3, device=x.device)
        torch.zeros_like(x)
        torch.as_tensor(x)
    assert sorted(name for name, _ in mode.undeviced) == ["tensor", "zeros"]
