"""TD targets of QMIX as pure tensor functions: greedy / double-Q next values, TD(lambda), masked loss.

Shapes: B sequences, T transitions, A agents, nb action branches, K bins, M mixer outputs
(1 for qmix / vdn, A for IQL). Every function is branch-free on tensor values (no host syncs).
"""
from __future__ import annotations

import torch

__all__ = [
    "mask_unavailable",
    "greedy_actions",
    "chosen_utility",
    "next_utility",
    "lambda_returns",
    "masked_mse",
]


def mask_unavailable(q: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """q with unavailable bins set to the lowest finite value (not -inf: no NaN in 0 * q)."""
    return q.masked_fill(~avail, torch.finfo(q.dtype).min)


def greedy_actions(q: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Per-branch argmax over available bins. q float[..., nb, K], avail bool[..., nb, K] -> long[..., nb]."""
    return mask_unavailable(q, avail).argmax(dim=-1)


def chosen_utility(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Utility of chosen actions: mean over branches of the chosen bins' values (DecQN).

    q float[..., nb, K], actions long[..., nb] -> float[...]. A flat space has nb = 1.
    """
    return q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1).mean(-1)


def next_utility(q_online: torch.Tensor, q_target: torch.Tensor, avail: torch.Tensor, *, double_q: bool) -> torch.Tensor:
    """Per-agent value of the greedy action at the next step, seen by the target network.

    double_q: the action is the online network's argmax, evaluated by the target network
    (van Hasselt 2016); otherwise the target network's own max. Only available bins count.
    q_online, q_target float[..., nb, K], avail bool[..., nb, K] -> float[...].
    """
    chooser = q_online.detach() if double_q else q_target
    return chosen_utility(q_target, greedy_actions(chooser, avail))


def lambda_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    *,
    gamma: float,
    td_lambda: float,
) -> torch.Tensor:
    """TD(lambda) targets, computed backwards over one sequence.

    Args:
        rewards: float[B, T] reward of transition t.
        next_values: float[B, T, M] target value of the state after transition t, i.e. V(s_{t+1}).
        terminated: bool[B, T] the episode ended at t by termination: no bootstrap (value 0 after it).
        done: bool[B, T] the episode ended at t (termination or time-out): the lambda-return does
            not continue past t. At a time-out ``next_values[t]`` (the final observation's value)
            is bootstrapped fully.

    G_t = r_t + gamma * (1 - term_t) * [ V_{t+1} + lambda * cont_t * (G_{t+1} - V_{t+1}) ]
    with cont_t = not done_t and t < T - 1 (the last transition bootstraps fully). td_lambda = 0
    gives 1-step targets. Returns float[B, T, M].
    """
    r = rewards.unsqueeze(-1).to(next_values.dtype)
    not_term = (~terminated).unsqueeze(-1).to(next_values.dtype)
    cont = (~done).unsqueeze(-1).to(next_values.dtype)
    T = rewards.shape[1]
    out = torch.empty_like(next_values)
    g = next_values[:, T - 1]  # the continuation of the last transition is V itself
    for t in range(T - 1, -1, -1):
        v = next_values[:, t]
        g = r[:, t] + gamma * not_term[:, t] * (v + td_lambda * cont[:, t] * (g - v))
        out[:, t] = g
        # G_t is the continuation of step t-1 (used only if t-1 did not end its episode)
    return out


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (pred - target)^2 over positions where mask is True.

    pred, target float[B, T, M], mask bool[B, T]. Masked positions give exactly zero gradient
    (multiplication by the mask, and torch.where against NaN in unused slots).
    """
    m = mask.unsqueeze(-1).expand_as(pred)
    err = torch.where(m, pred - target, torch.zeros_like(pred))
    return (err * err).sum() / m.sum().clamp(min=1)
