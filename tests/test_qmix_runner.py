"""Runner end to end on toy envs: learning, logging, replay ratio, targets, checkpoints, configs.

    python -m pytest tests/test_qmix_runner.py -q
"""
import io
import math
import os
import pathlib

import pytest
import torch

from qmix_isaac.qmix import NoMixer, QMixer, VDNMixer
from qmix_isaac.runner import _DeviceMeans, build_runner

from qmix_isaac.tasks.toy import GridRendezvous, MatrixGame

CFG_DIR = pathlib.Path(__file__).resolve().parents[1] / "cfg" / "train"


pytestmark = pytest.mark.usefixtures("one_thread")


def _grid_config(**overrides):
    cfg = {
        "agent": {"hidden_dim": 32},
        "mixer": {"name": "qmix", "qmix": {"embed_dim": 16, "hypernet_embed": 32}},
        "learner": {"gamma": 0.95, "lr": 3e-3, "target_update_interval": 50, "td_lambda": 0.6},
        "replay": {"capacity": 2048, "seq_len": 8},
        "exploration": {"eps_start": 1.0, "eps_finish": 0.05, "eps_anneal_steps": 6000},
        "runner": {"batch_size": 32, "replay_ratio": 0.125, "learning_starts": 1000, "log_interval": 4000},
    }
    for section, values in overrides.items():
        cfg[section] = dict(cfg.get(section, {}), **values)
    return cfg


def test_masked_means_of_named_tensors_over_steps():
    """add_masked: per-name sums over the masked worlds, pooled over calls; NaN where no world
    was ever masked; single keys beside groups."""
    means = _DeviceMeans()
    means.add_masked({"a": torch.tensor([1.0, 2.0, 4.0]), "b": torch.tensor([10.0, 20.0, 40.0])},
                     torch.tensor([True, False, True]))
    means.add_masked({"a": torch.tensor([8.0, 16.0, 32.0]), "b": torch.tensor([0.0, 0.0, 1.0])},
                     torch.tensor([False, True, False]))
    means.add_masked({"c": torch.tensor([5.0, 6.0, 7.0])}, torch.zeros(3, dtype=torch.bool))
    means.add("loss", torch.tensor(3.0), 2)
    out = {k: float(v) for k, v in means.pop().items()}
    assert out["a"] == pytest.approx((1 + 4 + 16) / 3)
    assert out["b"] == pytest.approx((10 + 40 + 0) / 3)
    assert math.isnan(out["c"])
    assert out["loss"] == pytest.approx(1.5)
    assert means.pop() == {}


def test_qmix_learns_grid_rendezvous():
    torch.manual_seed(0)
    env = GridRendezvous(num_envs=16, seed=0)
    runner = build_runner(_grid_config(), env)
    eval_env = GridRendezvous(num_envs=64, seed=123)
    before = runner.evaluate(eval_env, 128)
    logs = []
    runner.learn(16_000, log_fn=lambda steps, stats: logs.append((steps, stats)))
    after = runner.evaluate(eval_env, 128)
    assert after["episodes"] >= 128
    assert before["success"] < 0.3, before
    assert after["success"] > 0.9, after
    assert after["length"] < 6.0, after  # the centre is at most 4 moves away
    # training curves came through log_fn as device tensors, read only there
    steps = [s for s, _ in logs]
    assert steps[-1] >= 16_000 and len(steps) in (4, 5)  # every 4000 env steps, plus one at the end
    assert all(b - a >= 4000 for a, b in zip(steps[:-2], steps[1:-1]))
    final = logs[-1][1]
    assert isinstance(final["losses/td_loss"], torch.Tensor) and final["losses/td_loss"].dim() == 0
    assert float(final["episode/success"]) > 0.8
    assert float(final["rollout/episode_return"]) == pytest.approx(float(final["episode/return"]), abs=1e-4)


def _ratio_runner():
    """8 matrix games, sequences of 4 steps, a gradient step per 4 env steps after 100."""
    cfg = _grid_config(runner={"replay_ratio": 0.25, "learning_starts": 100, "batch_size": 4})
    cfg["replay"]["seq_len"] = 4
    return build_runner(cfg, MatrixGame(num_envs=8))


def test_replay_ratio_and_learning_starts_set_the_number_of_gradient_steps():
    runner = _ratio_runner()
    runner.learn(1000, log_fn=lambda steps, stats: None)
    # env steps after each collect: 8 * (4 + 1) first, then 8 * 4 more each time; the replay
    # holds 8 sequences of 4 new steps per collect (the first collect's extra step is burn-in)
    after_collect = list(range(40, runner.env_steps + 1, 32))
    assert after_collect[-1] == runner.env_steps >= 1000
    credited = [s for s in after_collect if s - 8 >= 100]  # collects that count towards updates
    assert runner.learner.grad_steps == int(0.25 * 32) * len(credited)


def test_learning_starts_waits_for_a_resumed_runs_empty_replay_to_refill():
    first = _ratio_runner()
    first.learn(400, log_fn=lambda steps, stats: None)
    done = first.learner.grad_steps
    assert done > 0
    resumed = _ratio_runner()
    resumed.load_state_dict(first.state_dict())
    for n_collects, expect in ((3, 0), (1, 8)):  # 8 seqs x 4 steps per collect: 96 < 100, then 128
        for _ in range(n_collects):
            resumed.train(resumed.grad_steps_due(resumed.collect()))
        assert resumed.learner.grad_steps == done + expect


@pytest.mark.parametrize("train_threads, local_ranks, expect", [(None, None, 1), (2, None, 2), (0, "1", "cores"), (0, "64", 1)])
def test_gradient_steps_run_on_train_threads_and_torch_returns_to_one(monkeypatch, train_threads, local_ranks, expect):
    """The MuJoCo engine holds torch to one thread (the one_thread fixture does the same here);
    ``runner.train_threads`` gives the gradient steps more, and only them."""
    if local_ranks is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    expect = cores if expect == "cores" else expect
    runner = build_runner(_grid_config(runner={"replay_ratio": 0.25, "learning_starts": 0, "batch_size": 4,
                                               "train_threads": train_threads}), MatrixGame(num_envs=8))
    seen = []
    update = runner.learner.update
    monkeypatch.setattr(runner.learner, "update", lambda batch: (seen.append(torch.get_num_threads()), update(batch))[1])
    steps = runner.collect()
    assert torch.get_num_threads() == 1  # acting and env steps keep torch's setting
    runner.train(3)
    assert seen == [expect] * 3 and runner.learner.grad_steps == 3
    assert torch.get_num_threads() == 1
    assert steps > 0


def test_negative_train_threads_is_an_error():
    with pytest.raises(ValueError, match="runner.train_threads"):
        build_runner(_grid_config(runner={"train_threads": -1}), MatrixGame(num_envs=8))


def test_hard_target_update_every_n_gradient_steps():
    env = MatrixGame(num_envs=8)
    runner = build_runner(_grid_config(learner={"target_update_interval": 3}, runner={"replay_ratio": 0.0}), env)
    runner.collect()
    learner = runner.learner

    def same():
        return all(torch.equal(p, t) for p, t in zip(learner.agent.parameters(), learner.target_agent.parameters()))

    assert same()
    runner.train(2)
    assert not same()
    runner.train(1)
    assert same() and learner.grad_steps == 3


def test_soft_target_update_moves_targets_by_tau():
    env = MatrixGame(num_envs=8)
    runner = build_runner(_grid_config(learner={"target_tau": 0.25}, runner={"replay_ratio": 0.0}), env)
    runner.collect()
    learner = runner.learner
    old = [t.clone() for t in learner.target_agent.parameters()]
    runner.train(1)
    for o, p, t in zip(old, learner.agent.parameters(), learner.target_agent.parameters()):
        torch.testing.assert_close(t, o + 0.25 * (p - o))


def _is_rmsprop_with_separate_agents(r):
    return isinstance(r.learner.optimizer, torch.optim.RMSprop) and not r.agent.fc1.shared


@pytest.mark.parametrize(
    "name,env_kwargs,overrides,built",
    [
        ("factored-decqn", {"factored": True}, {}, lambda r: r.agent.action_spec.n_branches > 1),
        ("non-shared-rmsprop", {}, {"agent": {"shared": False}, "learner": {"optimizer": "rmsprop"}},
         _is_rmsprop_with_separate_agents),
        ("iql-burn-in-fp16", {"num_agents": 3}, {"mixer": {"name": "none"}, "replay": {"burn_in": 3, "obs_dtype": "float16"}},
         lambda r: isinstance(r.learner.mixer, NoMixer) and r.replay.storage.obs.dtype == torch.float16
         and r.replay.storage.state.dtype == torch.float16 and r.learner.burn_in == 3),
        ("vdn-1-layer", {}, {"mixer": {"name": "vdn"}, "learner": {"double_q": False, "td_lambda": 0.0}},
         lambda r: isinstance(r.learner.mixer, VDNMixer) and not r.learner.double_q and r.learner.td_lambda == 0),
        ("qmix-1-layer", {}, {"mixer": {"name": "qmix", "qmix": {"hypernet_layers": 1}}},
         lambda r: isinstance(r.learner.mixer, QMixer) and isinstance(r.learner.mixer.hyper_w1, torch.nn.Linear)),
    ],
)
def test_variants_train_with_finite_loss(name, env_kwargs, overrides, built):
    torch.manual_seed(0)
    env = GridRendezvous(num_envs=8, **env_kwargs)
    runner = build_runner(_grid_config(runner={"learning_starts": 0, "log_interval": 10**9}, **overrides), env)
    assert built(runner), "the config's option did not reach the object it names"
    logs = []
    runner.learn(400, log_fn=lambda steps, stats: logs.append(stats))
    stats = logs[-1]
    assert runner.learner.grad_steps > 10
    assert math.isfinite(float(stats["losses/td_loss"])) and math.isfinite(float(stats["losses/grad_norm"]))


def test_state_dict_round_trip_with_weights_only_load():
    torch.manual_seed(0)
    env = GridRendezvous(num_envs=8, seed=0)
    cfg = _grid_config(runner={"learning_starts": 0})
    runner = build_runner(cfg, env)
    runner.learn(600, log_fn=lambda steps, stats: None)
    buffer = io.BytesIO()
    torch.save(runner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    other = build_runner(cfg, GridRendezvous(num_envs=8, seed=0))
    other.load_state_dict(state)
    assert (other.env_steps, other.learner.grad_steps) == (runner.env_steps, runner.learner.grad_steps)
    batch = runner.replay.sample(4)
    with torch.no_grad():
        for a, b in zip(runner.learner.q_values(batch), other.learner.q_values(batch)):
            assert torch.equal(a, b)
    for name in ("mixer", "target_mixer"):
        for (k, v), (_, w) in zip(
            getattr(runner.learner, name).state_dict().items(), getattr(other.learner, name).state_dict().items()
        ):
            assert torch.equal(v, w), k
    # identical optimiser state: the same batch gives the same update
    other.replay = runner.replay
    runner.learner.update(batch)
    other.learner.update(batch)
    for p, q in zip(runner.learner.params, other.learner.params):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "file,env",
    [
        ("MatrixGameQMIX.yaml", lambda: MatrixGame(num_envs=4)),
        ("MultiBallPushQMIX.yaml", lambda: GridRendezvous(num_envs=4)),
        ("MultiAntPushQMIX.yaml", lambda: GridRendezvous(num_envs=4, factored=True)),
    ],
)
def test_train_configs_build(file, env):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.load(CFG_DIR / file)
    runner = build_runner(cfg, env())
    assert runner.learner.agent.action_spec.factored == bool(getattr(runner.env, "action_branches", None))
    runner.collect()


def test_unknown_config_keys_are_errors():
    env = MatrixGame(num_envs=4)
    with pytest.raises(TypeError):
        build_runner(_grid_config(learner={"learning_rate": 1e-3}), env)
    with pytest.raises(KeyError):
        build_runner(dict(_grid_config(), optimiser={}), env)
    with pytest.raises(KeyError):
        build_runner(_grid_config(mixer={"name": "qmix", "qmixx": {}}), env)


def test_evaluating_on_the_training_env_restarts_the_sequence_cleanly():
    env = GridRendezvous(num_envs=4, seed=0)
    runner = build_runner(_grid_config(replay={"seq_len": 4, "burn_in": 1}, runner={"replay_ratio": 0.0}), env)
    runner.collect()
    runner.collect()
    runner.evaluate(n_episodes=4)  # resets the env under the runner's feet
    runner.collect()
    rows = runner.replay.storage.index_select(torch.arange(8, 12))  # the sequence collected after it
    assert not rows.filled[:, :1].any(), "the old overlap must not be spliced onto the new episodes"
    assert rows.filled[:, 1:].all()
