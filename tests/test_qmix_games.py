"""The QMIX paper's matrix games, learned end to end through the runner (uniform exploration).

Claims checked (Rashid et al. 2018 §6.1; Rashid et al. 2020, Weighted QMIX, §3 / Table 1):
- Two-step game: QMIX's greedy policy earns 8 (it represents matrix 2B = [[0,1],[1,8]] exactly,
  a monotonic payoff); VDN's earns 7 (its additive fit of 2B peaks at 6.5 < 7, so it prefers 2A).
- One-step non-monotonic matrix [[8,-12,-12],[-12,0,0],[-12,0,0]]: neither factorisation can
  represent it. VDN converges to the least-squares additive fit (greedy payoff 0). QMIX fits it
  better (lower error) but, as Weighted QMIX reports, with uniform data it settles on
  Q_tot ~ [[-8,-8,-8],[-8,0,0],[-8,0,0]] and its greedy joint action also pays 0, not 8.

    python -m pytest tests/test_qmix_games.py -q
"""
import numpy as np
import pytest
import torch

from qmix_isaac.qmix import chosen_utility
from qmix_isaac.runner import build_runner

from qmix_isaac.tasks.toy import NONMONOTONIC_PAYOFF, TWO_STEP_PAYOFF_2B, MatrixGame, TwoStepGame


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(mixer, seq_len):
    return {
        "agent": {"hidden_dim": 32},
        "mixer": {"name": mixer, "qmix": {"embed_dim": 16, "hypernet_embed": 32}},
        "learner": {"gamma": 0.99, "lr": 3e-3, "target_update_interval": 50},
        "replay": {"capacity": 1024, "seq_len": seq_len},
        "exploration": {"eps_start": 1.0, "eps_finish": 1.0},  # uniform exploration, as in the papers
        "runner": {"batch_size": 128, "replay_ratio": 1 / 32, "log_interval": 10**9},
    }


def _train(env_cls, mixer, env_steps, seq_len, fine_tune_steps=0):
    """Learn for env_steps; then fine_tune_steps more at a tenth of the learning rate (the
    least-squares fits are compared to targets with irreducible noise of std ~7 on the matrix)."""
    torch.manual_seed(0)
    env = env_cls(num_envs=32, seed=0)
    runner = build_runner(_config(mixer, seq_len), env)
    runner.learn(env_steps, log_fn=lambda steps, stats: None)
    if fine_tune_steps:
        for group in runner.learner.optimizer.param_groups:
            group["lr"] *= 0.1
        runner.learn(env_steps + fine_tune_steps, log_fn=lambda steps, stats: None)
    return runner


@torch.no_grad()
def _q_tot_table(learner, obs_seq, state_seq, prev_actions):
    """Q_tot of every joint action at the last step of a crafted history.

    obs_seq [L, A, O], state_seq [L, S], prev_actions long[L, A] (row t: actions of step t-1).
    """
    L, A, _ = obs_seq.shape
    start = torch.zeros(1, L, dtype=torch.bool)
    start[0, 0] = True
    q = learner.agent.unroll(obs_seq[None], prev_actions[None, :, :, None], start)[0, -1]  # [A, 1, K]
    K = q.shape[-1]
    joint = torch.cartesian_prod(torch.arange(K), torch.arange(K))[:, :, None]  # [K*K, A=2, 1]
    utilities = chosen_utility(q.expand(K * K, A, 1, K), joint)  # [K*K, A]
    return learner.mixer(utilities, state_seq[-1].expand(K * K, -1)).view(K, K)


def _two_step_tables(runner):
    """Q_tot in state 1, and in 2B after agent 1 chose B (for each of agent 2's first actions)."""
    s = torch.eye(3)
    obs = s[:, None, :].expand(3, 2, 3)
    first = _q_tot_table(runner.learner, obs[:1], s[:1], torch.zeros(1, 2, dtype=torch.long))
    tables_2b = [
        _q_tot_table(runner.learner, obs[[0, 2]], s[[0, 2]], torch.tensor([[0, 0], [1, a2]])) for a2 in range(2)
    ]
    return first, tables_2b


def test_two_step_game_qmix_earns_8():
    runner = _train(TwoStepGame, "qmix", 24_000, seq_len=3)
    assert runner.evaluate(TwoStepGame(num_envs=8), 8)["return"] == pytest.approx(8.0)
    first, tables_2b = _two_step_tables(runner)
    assert first[1].min() > first[0].max(), "QMIX values state 1's action B (-> 2B) above A (-> 2A)"
    payoff = torch.tensor(TWO_STEP_PAYOFF_2B)
    for table in tables_2b:  # a monotonic payoff: QMIX represents it up to learning noise
        assert (table - payoff).abs().max() < 1.2, table


def test_two_step_game_vdn_earns_7():
    runner = _train(TwoStepGame, "vdn", 24_000, seq_len=3)
    assert runner.evaluate(TwoStepGame(num_envs=8), 8)["return"] == pytest.approx(7.0)
    first, tables_2b = _two_step_tables(runner)
    assert first[0].min() > first[1].max(), "VDN values action A (-> 2A, worth 7) above B"
    for table in tables_2b:  # additive: Q(B,B) - Q(B,A) - Q(A,B) + Q(A,A) = 0, so max 2B ~ 6.5 < 7
        interaction = table[1, 1] - table[1, 0] - table[0, 1] + table[0, 0]
        assert abs(interaction) < 1e-4
        assert table.max() < 7.0


def _least_squares_additive_fit(payoff):
    """argmin over u1, u2 of sum_ij (u1_i + u2_j - payoff_ij)^2, uniform weights (numpy lstsq)."""
    K = payoff.shape[0]
    rows = []
    for i in range(K):
        for j in range(K):
            x = np.zeros(2 * K)
            x[i], x[K + j] = 1.0, 1.0
            rows.append(x)
    u, *_ = np.linalg.lstsq(np.array(rows), payoff.reshape(-1), rcond=None)
    return u[:K, None] + u[None, K:]


def test_nonmonotonic_matrix_neither_vdn_nor_qmix_is_exact():
    payoff = np.array(NONMONOTONIC_PAYOFF)
    tables, errors = {}, {}
    for mixer in ("vdn", "qmix"):
        runner = _train(MatrixGame, mixer, 20_000, seq_len=2, fine_tune_steps=8_000)
        env = MatrixGame(num_envs=1)
        o = env.reset()
        table = _q_tot_table(runner.learner, o["obs"], o["states"], torch.zeros(1, 2, dtype=torch.long)).numpy()
        tables[mixer], errors[mixer] = table, ((table - payoff) ** 2).mean()
        greedy = np.unravel_index(table.argmax(), table.shape)
        assert payoff[greedy] == 0.0, f"{mixer}: greedy joint action {greedy} (the papers report a payoff of 0)"
        assert runner.evaluate(env, 4)["return"] == 0.0
        # no monotonic (hence no additive) Q_tot is within 6 of every entry: an exact fit is impossible
        assert np.abs(table - payoff).max() >= 6.0 - 1e-3, mixer
    # VDN: the uniform least-squares additive fit ([[-6.2,-4.9,-4.9],[-4.9,-3.6,-3.6],...])
    np.testing.assert_allclose(tables["vdn"], _least_squares_additive_fit(payoff), atol=1.0)
    # QMIX fits the matrix better than VDN can, with (0, 0) pulled down to its row and column
    assert errors["qmix"] < errors["vdn"] - 5.0
    assert tables["qmix"][0, 0] < -5.0 and np.abs(tables["qmix"][1:, 1:]).max() < 1.0
