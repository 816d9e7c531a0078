"""Hand-checked maths of the QMIX learner: mixers, TD(lambda), double Q, masking, GRU restarts.

    python -m pytest tests/test_qmix_maths.py -q
"""
import itertools

import pytest
import torch

from qmix_isaac.qmix import (
    ActionSpec,
    NoMixer,
    QLearner,
    QMixer,
    RNNAgent,
    SequenceBatch,
    VDNMixer,
    chosen_utility,
    episode_starts,
    lambda_returns,
    loss_mask,
    next_utility,
)


# -- mixers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hypernet_layers", [1, 2])
def test_qmix_is_monotonic_in_every_agent_utility(hypernet_layers):
    torch.manual_seed(0)
    mixer = QMixer(n_agents=4, state_dim=7, embed_dim=8, hypernet_layers=hypernet_layers, hypernet_embed=16)
    qs = (torch.randn(64, 5, 4) * 10).requires_grad_(True)
    states = torch.randn(64, 5, 7) * 3
    q_tot = mixer(qs, states)
    assert q_tot.shape == (64, 5, 1)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)  # samples are independent: per-sample partials
    assert (grad >= 0).all(), "dQ_tot/dQ_a must be non-negative"
    assert (grad > 0).float().mean() > 0.5, "the mixer should not be flat"
    # and not merely additive: the partials depend on the state
    assert grad.std(dim=(0, 1)).min() > 1e-3


def test_qmix_slopes_are_the_partial_derivatives():
    torch.manual_seed(2)
    mixer = QMixer(n_agents=3, state_dim=5, embed_dim=8, hypernet_layers=2, hypernet_embed=16)
    qs = (torch.randn(16, 4, 3) * 5).requires_grad_(True)  # large: many mixing units below zero
    states = torch.randn(16, 4, 5)
    (grad,) = torch.autograd.grad(mixer(qs, states).sum(), qs)
    torch.testing.assert_close(mixer.slopes(qs.detach(), states), grad)


def test_qmix_weights_depend_on_state_and_bias_is_state_value():
    torch.manual_seed(1)
    mixer = QMixer(n_agents=2, state_dim=3)
    qs = torch.zeros(2, 1, 2)
    s = torch.randn(2, 1, 3)
    out = mixer(qs, s)
    assert not torch.allclose(out[0], out[1])
    # with all Q_a = 0: Q_tot = elu(b1(s)) . |w2(s)| + V(s), computed by hand
    hidden = torch.nn.functional.elu(mixer.hyper_b1(s))
    expected = (hidden * mixer.hyper_w2(s).abs()).sum(-1, keepdim=True) + mixer.hyper_v(s)
    torch.testing.assert_close(out, expected)


def test_vdn_is_the_sum_and_none_is_identity():
    qs = torch.randn(3, 4, 5)
    s = torch.randn(3, 4, 2)
    torch.testing.assert_close(VDNMixer(n_agents=5, state_dim=2)(qs, s), qs.sum(-1, keepdim=True))
    assert torch.equal(NoMixer(n_agents=5, state_dim=2)(qs, s), qs)


# -- TD(lambda) against a brute-force forward view ---------------------------------------------


def _brute_force_lambda_returns(r, v, term, done, gamma, lam):
    """Forward view: (1 - lam) sum_n lam^(n-1) G^(n) + lam^(N-1) G^(N), N = steps to episode/sequence end."""
    B, T, M = v.shape
    out = torch.zeros(B, T, M, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            N = 1  # number of transitions in the truncated lambda window
            while t + N - 1 < T - 1 and not done[b, t + N - 1]:
                N += 1
            for m in range(M):

                def n_step(n):
                    g = sum(gamma**k * float(r[b, t + k]) for k in range(n))
                    last = t + n - 1
                    if not term[b, last]:  # time-out, or cut by lambda / sequence end: bootstrap
                        g += gamma**n * float(v[b, last, m])
                    return g

                total = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, N))
                out[b, t, m] = total + lam ** (N - 1) * n_step(N)
    return out


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("M", [1, 3])
def test_lambda_returns_match_brute_force(lam, M):
    g = torch.Generator().manual_seed(int(lam * 10) + M)
    B, T, gamma = 4, 9, 0.9
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, M, generator=g, dtype=torch.float64)
    done = torch.rand(B, T, generator=g) < 0.3
    time_out = done & (torch.rand(B, T, generator=g) < 0.5)
    done[0, 3], time_out[0, 3] = True, True  # make sure both kinds of ending occur
    done[1, 4], time_out[1, 4] = True, False
    term = done & ~time_out
    got = lambda_returns(r, v, term, done, gamma=gamma, td_lambda=lam)
    ref = _brute_force_lambda_returns(r, v, term, done, gamma, lam)
    torch.testing.assert_close(got, ref)


def test_lambda_zero_is_one_step_target():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[[10.0], [20.0], [30.0]]])
    term = torch.tensor([[False, True, False]])
    done = torch.tensor([[False, True, False]])
    got = lambda_returns(r, v, term, done, gamma=0.5, td_lambda=0.0)
    torch.testing.assert_close(got, torch.tensor([[[1 + 5.0], [2.0], [3 + 15.0]]]))


def test_time_out_bootstraps_and_termination_does_not():
    r = torch.tensor([[1.0, 1.0]])
    v = torch.tensor([[[4.0], [4.0]]])
    ended = torch.tensor([[True, True]])
    timeout_ret = lambda_returns(r, v, torch.tensor([[False, False]]), ended, gamma=0.5, td_lambda=0.8)
    term_ret = lambda_returns(r, v, torch.tensor([[True, True]]), ended, gamma=0.5, td_lambda=0.8)
    torch.testing.assert_close(timeout_ret, torch.full((1, 2, 1), 3.0))
    torch.testing.assert_close(term_ret, torch.full((1, 2, 1), 1.0))


# -- double Q and factored utilities ---------------------------------------------------------


def test_double_q_picks_with_online_and_evaluates_with_target():
    # one agent, one branch, 4 bins; bin 0 would be the online argmax but is unavailable
    online = torch.tensor([[[9.0, 5.0, 1.0, 7.0]]])
    target = torch.tensor([[[100.0, 2.0, 50.0, 3.0]]])
    avail = torch.tensor([[[False, True, True, True]]])
    # online argmax among available = bin 3 (7.0) -> target's value there = 3.0
    torch.testing.assert_close(next_utility(online, target, avail, double_q=True), torch.tensor([3.0]))
    # without double Q: the target's own max among available = bin 2 (50.0)
    torch.testing.assert_close(next_utility(online, target, avail, double_q=False), torch.tensor([50.0]))


def test_factored_utility_is_mean_of_branch_choices_and_greedy_is_per_branch():
    q = torch.tensor([[[1.0, 4.0, 2.0], [6.0, 0.0, -9.0]]])  # [A=1, nb=2, K=3]; branch 1 has 2 bins
    spec = ActionSpec.factored_bins((3, 2))
    avail = spec.bin_mask().unsqueeze(0)  # padded bin 2 of branch 1 unavailable
    q = q.masked_fill(~avail, 99.0)  # a padded bin with a huge value must never be picked
    torch.testing.assert_close(chosen_utility(q, torch.tensor([[2, 0]])), torch.tensor([(2.0 + 6.0) / 2]))
    best = next_utility(q, q, avail, double_q=True)
    torch.testing.assert_close(best, torch.tensor([(4.0 + 6.0) / 2]))
    # brute force over all joint per-agent actions agrees with the per-branch argmax
    joint = max(chosen_utility(q, torch.tensor([[a, b]])).item() for a, b in itertools.product(range(3), range(2)))
    assert best.item() == pytest.approx(joint)


# -- episode boundaries: starts, masks, gradients ---------------------------------------------


def _crafted_batch(L=8, A=2, O=3, S=4, K=3, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = SequenceBatch.empty(B, L, n_agents=A, obs_dim=O, state_dim=S, n_branches=1, max_bins=K, device="cpu")
    batch.obs.copy_(torch.randn(B, L, A, O, generator=g))
    batch.state.copy_(torch.randn(B, L, S, generator=g))
    batch.avail.fill_(True)
    batch.action.copy_(torch.randint(0, K, (B, L, A, 1), generator=g))
    batch.reward.copy_(torch.randn(B, L, generator=g))
    batch.filled.fill_(True)
    # sequence 0: episode ends (time-out) at t=2 -> t=3 is the boundary step, t=4 starts a new episode
    batch.done[0, 2], batch.time_out[0, 2], batch.boundary[0, 3] = True, True, True
    # sequence 1: unfilled head (t=0, 1), termination at t=4 -> boundary at t=5
    batch.filled[1, :2] = False
    batch.done[1, 4], batch.boundary[1, 5] = True, True
    return batch


def test_action_gap_is_best_minus_second_available_over_kept_steps():
    from qmix_isaac.qmix.learner import action_gap
    # [B=1, T=2, A=1, nb=2, K=3]
    q = torch.tensor([[[[[5.0, 1.0, 4.0], [0.0, 2.0, -1.0]]],
                       [[[9.0, 0.0, 0.0], [3.0, 3.5, 1.0]]]]])
    avail = torch.ones_like(q, dtype=torch.bool)
    avail[0, 0, 0, 0, 2] = False      # step 0 branch 0: best 5, second 1 (4 unavailable) -> 4
    avail[0, 0, 0, 1, 1:] = False     # step 0 branch 1: one bin left -> no gap, skipped
    keep = torch.tensor([[True, True]])
    # step 1: 9 - 0 = 9 and 3.5 - 3 = 0.5; mean over (4, 9, 0.5)
    assert action_gap(q, avail, keep).item() == pytest.approx((4 + 9 + 0.5) / 3)
    assert action_gap(q, avail, torch.tensor([[True, False]])).item() == pytest.approx(4.0)


def test_episode_starts_and_loss_mask():
    b = _crafted_batch()
    starts = episode_starts(b.boundary, b.filled)
    assert starts[0].tolist() == [True, False, False, False, True, False, False, False]
    assert starts[1].tolist() == [True, True, True, False, False, False, True, False]
    mask = loss_mask(b.boundary, b.filled, burn_in=1)
    assert mask[0].tolist() == [False, True, True, False, True, True, True]
    assert mask[1].tolist() == [False, False, True, True, True, False, True]


def _learner(mixer="qmix", burn_in=1, td_lambda=0.5, shared=True):
    torch.manual_seed(0)
    spec = ActionSpec.flat(3)
    agent = RNNAgent(n_agents=2, obs_dim=3, action_spec=spec, hidden_dim=16, shared=shared)
    mixers = {"qmix": QMixer(n_agents=2, state_dim=4, embed_dim=8), "vdn": VDNMixer(n_agents=2, state_dim=4)}
    mixers["none"] = NoMixer(n_agents=2, state_dim=4)
    return QLearner(agent=agent, mixer=mixers[mixer], td_lambda=td_lambda, burn_in=burn_in)


@pytest.mark.parametrize("mixer", ["qmix", "vdn", "none"])
def test_no_gradient_through_masked_steps(mixer):
    learner = _learner(mixer)
    batch = _crafted_batch()
    q, target_q = learner.q_values(batch)
    q.retain_grad()
    loss, _ = learner.loss_from_q(batch, q, target_q)
    loss.backward()
    grad = q.grad.abs().sum(dim=(2, 3, 4))  # [B, L]
    trained = torch.zeros_like(grad, dtype=torch.bool)
    trained[:, :-1] = loss_mask(batch.boundary, batch.filled, learner.burn_in)
    assert (grad[~trained] == 0).all(), "masked / boundary / burn-in / bootstrap steps must get no gradient"
    assert (grad[trained] > 0).all()


def test_loss_ignores_reward_and_action_of_boundary_and_unfilled_steps():
    learner = _learner("qmix")
    batch = _crafted_batch()
    with torch.no_grad():
        base, _ = learner.loss_from_q(batch, *learner.q_values(batch))
        for b, t in [(0, 3), (1, 0), (1, 1), (1, 5)]:  # boundary and unfilled positions
            batch.reward[b, t] += 1000.0
            batch.action[b, t] = (batch.action[b, t] + 1) % 3
        again, _ = learner.loss_from_q(batch, *learner.q_values(batch))
        torch.testing.assert_close(again, base)
        batch.reward[0, 2] += 1.0  # a trained step's reward does matter
        changed, _ = learner.loss_from_q(batch, *learner.q_values(batch))
    assert not torch.isclose(changed, base)


@pytest.mark.parametrize("shared", [True, False])
def test_gru_state_restarts_at_episode_start(shared):
    learner = _learner(shared=shared)
    batch = _crafted_batch()
    with torch.no_grad():
        q_full, _ = learner.q_values(batch)
        # sequence 0 restarts at t=4: the suffix alone, from a zero state, gives the same q-values
        suffix = SequenceBatch(**{k: v[:1, 4:].clone() for k, v in batch.items()})
        q_suffix, _ = learner.q_values(suffix)
        torch.testing.assert_close(q_full[:1, 4:], q_suffix)
        # ... while before the boundary the state carries over (t=3 sees t=0..2)
        prefix = SequenceBatch(**{k: v[:1, 3:].clone() for k, v in batch.items()})
        q_prefix, _ = learner.q_values(prefix)
    assert not torch.allclose(q_full[:1, 3], q_prefix[:, 0])


def test_non_shared_agents_have_separate_parameters():
    torch.manual_seed(0)
    agent = RNNAgent(n_agents=3, obs_dim=2, action_spec=ActionSpec.flat(4), hidden_dim=8, shared=False)
    obs = torch.randn(5, 6, 3, 2)
    prev = torch.zeros(5, 6, 3, 1, dtype=torch.long)
    start = torch.zeros(5, 6, dtype=torch.bool)
    q = agent.unroll(obs, prev, start)
    q[:, :, 0].sum().backward()  # agent 0's output touches only agent 0's slice of every weight
    for name, p in agent.named_parameters():
        assert p.grad[1:].abs().sum() == 0, name
        assert p.grad[0].abs().sum() > 0, name


def _three_step_batch():
    """One sequence of 3 filled steps, 2 agents, 2 actions each, nothing ends: two trained
    transitions (t = 0, 1), t = 2 only bootstraps."""
    b = SequenceBatch.empty(1, 3, n_agents=2, obs_dim=1, state_dim=4, n_branches=1, max_bins=2, device="cpu")
    b.filled[:] = True
    b.avail[:] = True
    b.action[0, :, :, 0] = torch.tensor([[0, 0], [1, 0], [0, 0]], dtype=b.action.dtype)
    b.reward[0] = torch.tensor([2.0, -1.0, 0.0])
    b.state[0] = torch.arange(12.0).view(3, 4) / 10  # a different state at every step
    return b


# online q [1, 3, 2 agents, 1 branch, 2 actions] and the target network's (its greedy choices differ)
_Q = torch.tensor([[[1.0, 2.0], [3.0, 0.0]], [[0.5, 1.5], [2.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]).view(1, 3, 2, 1, 2)
_TQ = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[7.0, 5.0], [6.0, 2.0]], [[3.0, 9.0], [4.0, 1.0]]]).view(1, 3, 2, 1, 2)


@pytest.mark.parametrize("double_q, expected", [
    # chosen: t0 1 + 3 = 4, t1 1.5 + 2 = 3.5; rewards x 0.5: 1.0, -0.5; gamma 0.9
    # double Q: online argmax (1, 1) at t1, (0, 1) at t2, valued by the target: 5 + 2, 3 + 1
    #   Y = 1 + 0.9 * 7 = 7.3, -0.5 + 0.9 * 4 = 3.1; loss = ((4 - 7.3)^2 + (3.5 - 3.1)^2) / 2
    (True, (3.3 ** 2 + 0.4 ** 2) / 2),
    # target max: 7 + 6, 9 + 4 -> Y = 12.7, 11.2
    (False, (8.7 ** 2 + 7.7 ** 2) / 2),
])
def test_vdn_loss_hand_computed_with_target_network_and_reward_scale(double_q, expected):
    learner = QLearner(agent=RNNAgent(n_agents=2, obs_dim=1, action_spec=ActionSpec.flat(2), hidden_dim=4),
                       mixer=VDNMixer(n_agents=2, state_dim=4), gamma=0.9, td_lambda=0.0,
                       double_q=double_q, reward_scale=0.5)
    loss, stats = learner.loss_from_q(_three_step_batch(), _Q, _TQ)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["values/q_taken"].item() == pytest.approx((4 + 3.5) / 2)


def test_qmix_loss_mixes_each_step_with_its_own_state_and_the_target_mixer():
    """Q_tot(t) = mixer(chosen_t, s_t); Y_t = r_t + gamma * target_mixer(next_t, s_{t+1}), with a
    target mixer whose weights differ from the online one's."""
    torch.manual_seed(0)
    learner = QLearner(agent=RNNAgent(n_agents=2, obs_dim=1, action_spec=ActionSpec.flat(2), hidden_dim=4),
                       mixer=QMixer(n_agents=2, state_dim=4, embed_dim=8), gamma=0.9, td_lambda=0.0,
                       reward_scale=0.5)
    with torch.no_grad():
        for p in learner.target_mixer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = _three_step_batch()
    loss, _ = learner.loss_from_q(batch, _Q, _TQ)
    s = batch.state[0]
    with torch.no_grad():
        ys, qs = [], []
        for t, (chosen, nxt) in enumerate([((1.0, 3.0), (5.0, 2.0)), ((1.5, 2.0), (3.0, 1.0))]):
            qs.append(learner.mixer(torch.tensor([[list(chosen)]]), s[t].view(1, 1, 4)).item())
            v = learner.target_mixer(torch.tensor([[list(nxt)]]), s[t + 1].view(1, 1, 4)).item()
            ys.append(0.5 * batch.reward[0, t].item() + 0.9 * v)
    expected = sum((q - y) ** 2 for q, y in zip(qs, ys)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_learner_bootstraps_from_the_final_observation_only_at_time_outs():
    """The boundary step's observation is the episode's final one: a time-out's target uses it,
    a termination's target does not (value zero after it)."""
    learner = _learner("qmix", burn_in=0, td_lambda=0.0)
    batch = _crafted_batch()
    with torch.no_grad():
        base, _ = learner.loss_from_q(batch, *learner.q_values(batch))
        batch.obs[1, 5] += 5.0  # final obs after the termination at t=4 (sequence 1)
        batch.state[1, 5] += 5.0
        after_termination, _ = learner.loss_from_q(batch, *learner.q_values(batch))
        torch.testing.assert_close(after_termination, base)
        batch.obs[0, 3] += 5.0  # final obs after the time-out at t=2 (sequence 0)
        batch.state[0, 3] += 5.0
        after_time_out, _ = learner.loss_from_q(batch, *learner.q_values(batch))
    assert not torch.isclose(after_time_out, base)


def test_an_optimiser_state_written_with_cuda_graphs_resumes_without_them():
    """A checkpoint of a CUDA run (learner.cuda_graph: Adam with capturable=True) resumed on a CPU:
    torch's load_state_dict would take the writer's capturable=True along, and CPU Adam refuses
    to step with it. The learner keeps its own flag; the moments carry over unchanged."""
    import copy
    learner = _learner("qmix")
    batch = _crafted_batch()
    learner.update(batch)
    state = copy.deepcopy(learner.state_dict())
    for group in state["optimizer"]["param_groups"]:
        group["capturable"] = True  # as a CUDA run with learner.cuda_graph writes it
    other = _learner("qmix")
    other.load_state_dict(state)
    assert not any(g["capturable"] for g in other.optimizer.param_groups)
    p = other.params[0]
    torch.testing.assert_close(other.optimizer.state[p]["exp_avg"], learner.optimizer.state[learner.params[0]]["exp_avg"])
    other.update(batch)  # raised "If capturable=True, params and state_steps must be on ... cuda"
    learner.update(batch)
    for a, b in zip(other.params, learner.params):
        torch.testing.assert_close(a, b)  # and steps on exactly as the original learner does
