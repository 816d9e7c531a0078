"""Sequence replay: what the runner stores matches the env's trajectory, boundaries included.

An echo env (written here, independently of tasks/toy.py) encodes in its observation the step
counter and the action it received, so every stored field can be checked against the truth.

    python -m pytest tests/test_qmix_replay.py -q
"""
import pytest
import torch

from qmix_isaac.qmix import SequenceBatch, SequenceReplay, episode_starts
from qmix_isaac.runner import build_runner


class EchoEnv:
    """Env e has episodes of 1 + e % 4 steps; those of max_episode_length (4) end by time-out.

    obs[..., 0] = number of step() calls so far, obs[..., 1] = env id, obs[..., 2] = the action
    the agent sent at the previous call (-1 after reset). reward = the step() call number
    (0 on the ignored restart step).
    """

    num_agents, num_obs, num_states, num_actions, max_episode_length = 2, 3, 2, 3, 4

    def __init__(self, num_envs=6):
        self.num_envs = num_envs
        self.rl_device = torch.device("cpu")
        self.lengths = 1 + torch.arange(num_envs) % 4

    def _obs(self, echo):
        E, A = self.num_envs, self.num_agents
        obs = torch.stack(
            [self.calls.float().expand(E, A), torch.arange(E).float()[:, None].expand(E, A), echo.float()], -1
        )
        avail = torch.ones(E, A, 3, dtype=torch.bool)
        avail[:, 1, 2] = False  # agent 1 may never take action 2
        return {"obs": obs, "states": obs[:, :, 0], "avail_actions": avail}

    def reset(self):
        self.calls = torch.zeros(())
        self.progress = torch.zeros(self.num_envs, dtype=torch.long)
        self.pending = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._obs(torch.full((self.num_envs, 2), -1))

    def step(self, actions):
        self.calls = self.calls + 1
        pending = self.pending
        self.progress = torch.where(pending, 0, self.progress + 1)
        done = ~pending & (self.progress >= self.lengths)
        time_out = done & (self.lengths == self.max_episode_length)
        reward = torch.where(pending, 0.0, self.calls.float())
        self.pending = done
        return self._obs(actions), reward, done, {"time_outs": time_out}


def _expected_flags(length, n_steps):
    """Plain-Python truth for one env: done and boundary flags of steps 0 .. n_steps-1."""
    done, boundary, progress, pending = [], [], 0, False
    for _ in range(n_steps):
        boundary.append(pending)
        progress = 0 if pending else progress + 1
        d = (not pending) and progress >= length
        done.append(d)
        pending = d
    return done, boundary


def _runner(env, burn_in, seq_len):
    cfg = {
        "agent": {"hidden_dim": 8},
        "replay": {"capacity": 64 * env.num_envs, "seq_len": seq_len, "burn_in": burn_in},
        "exploration": {"eps_start": 1.0, "eps_finish": 1.0},
        "runner": {"replay_ratio": 0.0},
    }
    return build_runner(cfg, env)


@pytest.mark.parametrize("burn_in,seq_len", [(0, 3), (2, 3), (3, 1)])
def test_stored_sequences_reproduce_the_trajectory(burn_in, seq_len):
    torch.manual_seed(0)
    env = EchoEnv()
    runner = _runner(env, burn_in, seq_len)
    n_chunks = 6
    for _ in range(n_chunks):
        runner.collect()
    E, L, T = env.num_envs, burn_in + seq_len + 1, seq_len
    n_steps = n_chunks * T + 1
    assert runner.env_steps == n_steps * E
    s = runner.replay.storage
    for k in range(n_chunks):
        for e in range(E):
            row = k * E + e
            done_truth, boundary_truth = _expected_flags(int(env.lengths[e]), n_steps)
            for p in range(L):
                step = k * T + p - burn_in  # global step index stored at position p
                if step < 0:
                    assert not s.filled[row, p]
                    continue
                assert s.filled[row, p]
                assert s.obs[row, p, :, 0].eq(step).all() and s.obs[row, p, :, 1].eq(e).all()
                assert bool(s.done[row, p]) == done_truth[step]
                assert bool(s.boundary[row, p]) == boundary_truth[step]
                assert bool(s.time_out[row, p]) == (done_truth[step] and int(env.lengths[e]) == 4)
                assert s.reward[row, p] == (0.0 if boundary_truth[step] else step + 1)
                if p + 1 < L:  # the action stored at p is the one the env received at step p
                    assert torch.equal(s.action[row, p, :, 0].long(), s.obs[row, p + 1, :, 2].long())
            assert (s.action[row, :, 1, 0] != 2).all(), "unavailable action stored"
    assert runner.replay.num_stored == n_chunks * E


def test_acting_and_learning_see_the_same_q_values():
    """Within an episode that starts inside a stored sequence, the learner's unroll reproduces the
    Q-values the runner acted on (same GRU restart and last-action rules on both sides)."""
    torch.manual_seed(0)
    env = EchoEnv()
    runner = _runner(env, burn_in=0, seq_len=7)
    seen = []
    select = runner.explorer.select

    def recording_select(q, avail, epsilon, generator=None):
        seen.append(q.clone())
        return select(q, avail, epsilon, generator)

    runner.explorer.select = recording_select
    runner.collect()
    runner.collect()
    acted = torch.stack(seen, dim=1)  # [E, steps, A, 1, K]
    batch = runner.replay.storage.index_select(torch.arange(env.num_envs, 2 * env.num_envs))  # chunk 1
    with torch.no_grad():
        q, _ = runner.learner.q_values(batch)
    starts = episode_starts(batch.boundary, batch.filled)
    compared = 0
    for e in range(env.num_envs):
        first = int(starts[e, 1:].float().argmax()) + 1 if starts[e, 1:].any() else None
        if first is None:
            continue
        for p in range(first, batch.reward.shape[1]):
            step = 8 + p - 1  # chunk 1 position p holds global step 7 + p
            torch.testing.assert_close(q[e, p], acted[e, step])
            compared += 1
    assert compared > 10


def test_bytes_per_env_step_matches_a_hand_count():
    replay = SequenceReplay(
        capacity=10, num_envs=4, seq_len=8, burn_in=2, n_agents=3, obs_dim=5, state_dim=7, n_branches=2,
        max_bins=4, device="cpu",
    )  # fmt: skip
    per_step = 3 * 5 * 4 + 7 * 4 + 3 * 2 * 4 * 1 + 3 * 2 * 1 + 4 + 4 * 1  # obs, state, avail, action, reward, 4 flags
    assert replay.storage.bytes_per_step() == per_step
    assert replay.bytes_per_env_step() == pytest.approx(per_step * 11 / 8)
    assert replay.capacity == 12  # rounded up to a multiple of num_envs
    assert replay.nbytes() == per_step * 12 * 11


def test_ring_buffer_wraps_and_samples_only_stored_rows():
    replay = SequenceReplay(
        capacity=6, num_envs=2, seq_len=1, n_agents=1, obs_dim=1, state_dim=1, n_branches=1, max_bins=2,
        device="cpu",
    )  # fmt: skip
    seqs = SequenceBatch.empty(2, 2, n_agents=1, obs_dim=1, state_dim=1, n_branches=1, max_bins=2, device="cpu")
    for i in range(1, 5):
        seqs.reward.fill_(float(i))
        replay.insert(seqs)
        assert replay.num_stored == min(2 * i, 6)
        got = replay.sample(200).reward[:, 0]
        lowest = max(1, i - 2)
        assert set(got.tolist()) == set(float(j) for j in range(lowest, i + 1))
