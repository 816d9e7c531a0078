"""On CUDA the hot path (act -> env.step -> store -> sample -> update) never syncs with the host.

Checked with torch.cuda.set_sync_debug_mode("error"), which raises on any blocking device-to-host
transfer or synchronisation. Skipped where there is no CUDA device.

    python -m pytest tests/test_qmix_cuda.py -q
"""
import pytest
import torch

from qmix_isaac.runner import build_runner

from qmix_isaac.tasks.toy import GridRendezvous

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize(
    "factored,mixer,burn_in,graph",
    [(False, "qmix", 0, False), (True, "qmix", 2, False), (False, "none", 0, False), (True, "qmix", 2, True)],
)
def test_learn_loop_has_no_host_sync(factored, mixer, burn_in, graph):
    torch.manual_seed(0)
    env = GridRendezvous(num_envs=256, factored=factored, rl_device="cuda", seed=0)
    cfg = {
        "agent": {"hidden_dim": 64},
        "mixer": {"name": mixer},
        "learner": {"td_lambda": 0.6, "target_update_interval": 5, "cuda_graph": graph},
        "replay": {"capacity": 4096, "seq_len": 8, "burn_in": burn_in},
        "exploration": {"eps_anneal_steps": 10_000},
        "runner": {"batch_size": 64, "replay_ratio": 1 / 256, "log_interval": 4096},
    }
    runner = build_runner(cfg, env)
    logs = []
    runner.learn(4096, log_fn=lambda steps, stats: logs.append(stats))  # warm-up: lazy CUDA init may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        runner.learn(runner.env_steps + 3 * 4096, log_fn=lambda steps, stats: logs.append(stats))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert runner.learner.grad_steps > 40
    stats = logs[-1]  # read only now, outside the checked region
    assert stats["losses/td_loss"].is_cuda and torch.isfinite(stats["losses/td_loss"])


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_cuda_graph_update_matches_eager_update(optimizer):
    torch.manual_seed(0)
    env = GridRendezvous(num_envs=64, factored=True, rl_device="cuda", seed=0)

    def make(graph):
        torch.manual_seed(1)
        cfg = {
            "agent": {"hidden_dim": 32},
            "learner": {"td_lambda": 0.6, "target_update_interval": 3, "cuda_graph": graph, "optimizer": optimizer},
            "replay": {"capacity": 512, "seq_len": 8, "burn_in": 2},
            "runner": {"batch_size": 16, "replay_ratio": 0.0},
        }
        return build_runner(cfg, env)

    eager, graphed = make(False), make(True)
    assert graphed.learner.cuda_graph and not eager.learner.cuda_graph
    eager.collect()
    eager.collect()
    for step in range(7):
        batch = eager.replay.sample(16)
        s_eager = eager.learner.update(batch)
        s_graph = graphed.learner.update(batch)
        torch.testing.assert_close(s_graph["losses/td_loss"], s_eager["losses/td_loss"], rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.learner.params, graphed.learner.params):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.learner.target_agent.parameters(), graphed.learner.target_agent.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    # loading a checkpoint into a learner whose graph is captured updates the graph-held state
    eager.learner.update(eager.replay.sample(16))
    graphed.load_state_dict(eager.state_dict())
    batch = eager.replay.sample(16)
    eager.learner.update(batch)
    graphed.learner.update(batch)
    for p, q in zip(eager.learner.params, graphed.learner.params):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
