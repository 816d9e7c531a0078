"""Epsilon-greedy over all envs x agents honours avail_actions (flat and factored with padding).

    python -m pytest tests/test_qmix_exploration.py -q
"""
import pytest
import torch

from qmix_isaac.qmix import ActionSpec, EpsilonGreedy, random_available_actions


def _random_avail(spec, n, A, g):
    avail = (torch.rand(n, A, spec.n_branches, spec.max_bins, generator=g) < 0.5) & spec.bin_mask()
    first_real = torch.zeros_like(avail)
    first_real[..., 0] = True  # every branch keeps at least one available bin
    return avail | first_real


@pytest.mark.parametrize("spec", [ActionSpec.flat(6), ActionSpec.factored_bins((3, 5, 2))])
def test_random_actions_are_always_available_and_uniform(spec):
    g = torch.Generator().manual_seed(0)
    n, A = 64, 3
    avail = _random_avail(spec, n, A, g)
    counts = torch.zeros(n, A, spec.n_branches, spec.max_bins)
    draws = 400
    for _ in range(draws):
        a = EpsilonGreedy().select(torch.randn(avail.shape, generator=g), avail, epsilon=1.0, generator=g)
        assert a.shape == (n, A, spec.n_branches)
        picked = torch.nn.functional.one_hot(a, spec.max_bins).bool()
        assert not (picked & ~avail).any(), "an unavailable action was drawn"
        counts += picked
    # every available bin is drawn, about uniformly: mean count draws / n_available per branch
    expected = draws / avail.sum(-1, keepdim=True).float()
    assert (counts[avail] > 0).all()
    ratio = counts[avail] / expected.expand_as(counts)[avail]
    assert ratio.mean() == pytest.approx(1.0, abs=0.02)
    assert ratio.min() > 0.5 and ratio.max() < 1.6


def test_greedy_never_picks_an_unavailable_action_even_if_best():
    q = torch.tensor([[[[10.0, 1.0, 2.0]]]])  # [1, 1, 1, 3]
    avail = torch.tensor([[[[False, True, True]]]])
    for eps in (0.0, 0.5, 1.0):
        for _ in range(50):
            a = EpsilonGreedy().select(q, avail, epsilon=eps)
            assert a.item() in (1, 2)
    assert EpsilonGreedy().select(q, avail, epsilon=0.0).item() == 2


def test_epsilon_mixes_greedy_and_random_at_the_given_rate():
    g = torch.Generator().manual_seed(1)
    n, A, K = 20000, 2, 4
    q = torch.zeros(n, A, 1, K)
    q[..., 3] = 1.0  # greedy = 3
    avail = torch.ones(n, A, 1, K, dtype=torch.bool)
    a = EpsilonGreedy().select(q, avail, epsilon=0.4, generator=g)
    non_greedy = (a != 3).float().mean().item()
    assert non_greedy == pytest.approx(0.4 * 3 / 4, abs=0.02)


@pytest.mark.parametrize("per_branch", [False, True])
def test_agents_or_branches_explore_as_configured(per_branch):
    # 8 branches of 2 bins, greedy = bin 1: a branch leaves greedy when it explores and draws bin 0
    # (probability eps / 2). Per agent, all 8 branches explore together; per branch, each alone.
    g = torch.Generator().manual_seed(2)
    n, A, nb, eps = 20000, 2, 8, 0.4
    q = torch.zeros(n, A, nb, 2)
    q[..., 1] = 1.0
    avail = torch.ones(n, A, nb, 2, dtype=torch.bool)
    off = EpsilonGreedy(per_branch=per_branch).select(q, avail, epsilon=eps, generator=g) == 0
    assert off.float().mean().item() == pytest.approx(eps / 2, abs=0.01)  # same rate either way
    # P(branches 0 and 1 both off): per agent eps * 1/4 = 0.1; per branch (eps / 2)^2 = 0.04
    both = (off[..., 0] & off[..., 1]).float().mean().item()
    assert both == pytest.approx((eps / 2) ** 2 if per_branch else eps / 4, abs=0.01)


@pytest.mark.parametrize("hold_max", [7, 8])   # float32(1/7) > 1/7: a clamp before the floor lost 7
@pytest.mark.parametrize("per_branch", [False, True])
def test_held_exploration_keeps_its_random_action_for_zeta_durations(per_branch, hold_max):
    # Every agent starts exploring at step 0 (epsilon 1), none after (epsilon ~0): the run of
    # steps that repeat the step-0 random action has P(length >= k) = 1/k up to hold_max.
    g = torch.Generator().manual_seed(3)
    n, A, nb, K, steps = 20000, 1, 2, 100, 12
    q = torch.zeros(n, A, nb, K)
    q[..., 0] = 1.0  # greedy = bin 0; a random bin is 0 with probability 1/K only
    avail = torch.ones(n, A, nb, K, dtype=torch.bool)
    ex = EpsilonGreedy(per_branch=per_branch, hold_max=hold_max)
    first = ex.select(q, avail, epsilon=1.0, generator=g)
    held = torch.ones(n, A, nb, dtype=torch.bool)
    run = torch.ones(n, A, nb)
    for _ in range(steps - 1):
        a = ex.select(q, avail, epsilon=1e-12, generator=g)
        held &= (a == first) & (first != 0)
        run += held.float()
    for k in (2, 3, 4, hold_max):
        assert (run >= k).float().mean().item() == pytest.approx(1.0 / k, abs=0.012)
    assert (run > hold_max).sum().item() == 0
    if not per_branch:  # an agent's branches start and end their hold together
        drawn_greedy = (first == 0).any(-1)  # a random bin 0 looks like greedy (p = 1/K): skip
        assert torch.equal(run[..., 0][~drawn_greedy], run[..., 1][~drawn_greedy])
    # greedy evaluation ignores held actions; an unavailable held action is never played
    assert (ex.select(q, avail, epsilon=0.0) == 0).all()
    ex.select(q, avail, epsilon=1.0, generator=g)
    only_zero = torch.zeros_like(avail)
    only_zero[..., 0] = True
    assert (ex.select(q, only_zero, epsilon=1e-12, generator=g) == 0).all()


def test_padding_bins_are_never_chosen_even_if_the_env_offers_them():
    # branches of 3 and 2 bins, padded to 3: an env that marks every bin available (the padded
    # one included) must still never get bin 2 of branch 1, greedy or random
    spec = ActionSpec.factored_bins((3, 2))
    env_avail = torch.ones(4096, 2, 2, 3, dtype=torch.bool)
    avail = spec.avail_from_env(env_avail)
    assert avail[..., 1, 2].sum() == 0 and avail[..., 0, 2].all() and env_avail.all()
    q = torch.zeros(env_avail.shape)
    q[..., 1, 2] = 1.0                              # the padding bin looks best
    g = torch.Generator().manual_seed(0)
    for eps in (0.0, 1.0):
        a = EpsilonGreedy().select(q, avail, epsilon=eps, generator=g)
        assert (a[..., 1] <= 1).all() and (a[..., 0] == 2).any() == (eps == 1.0)


def test_random_available_actions_single_choice():
    avail = torch.zeros(100, 2, 7, dtype=torch.bool)
    avail[..., 5] = True
    assert (random_available_actions(avail) == 5).all()


def test_epsilon_schedule_is_linear_in_env_steps():
    ex = EpsilonGreedy(eps_start=1.0, eps_finish=0.1, eps_anneal_steps=1000)
    assert ex.epsilon(0) == 1.0
    assert ex.epsilon(500) == pytest.approx(0.55)
    assert ex.epsilon(1000) == pytest.approx(0.1)
    assert ex.epsilon(10**9) == pytest.approx(0.1)
