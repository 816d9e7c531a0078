"""Batched epsilon-greedy action selection over all envs x agents, honouring avail_actions.

A random action is drawn uniformly among the available bins of each branch as the argmax of
(1 + u) * avail with u ~ U[0, 1): available bins score in [1, 2), unavailable ones 0, so an
unavailable bin is never drawn while any is available, and the argmax of i.i.d. uniforms is a
uniform choice. No ``torch.multinomial`` (which validates its input on the host), no syncs.
Each agent explores with probability epsilon (all of its branches at once).
"""
from __future__ import annotations

from typing import Optional

import torch

from .targets import greedy_actions

__all__ = ["EpsilonGreedy", "random_available_actions"]


def random_available_actions(avail: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform over available bins per branch. avail bool[..., nb, K] -> long[..., nb]."""
    u = torch.rand(avail.shape, device=avail.device, generator=generator)
    return ((1.0 + u) * avail).argmax(dim=-1)


class EpsilonGreedy:
    """epsilon decays linearly from ``eps_start`` to ``eps_finish`` over ``eps_anneal_steps`` env steps.

    Env steps count every env: one ``env.step`` of E envs is E env steps.
    """

    def __init__(self, *, eps_start: float = 1.0, eps_finish: float = 0.05, eps_anneal_steps: int = 50_000) -> None:
        self.eps_start = float(eps_start)
        self.eps_finish = float(eps_finish)
        self.eps_anneal_steps = int(eps_anneal_steps)

    def epsilon(self, env_steps: int) -> float:
        """A host float from a host int: no tensor involved."""
        frac = min(1.0, env_steps / self.eps_anneal_steps) if self.eps_anneal_steps > 0 else 1.0
        return self.eps_start + frac * (self.eps_finish - self.eps_start)

    @staticmethod
    def select(
        q: torch.Tensor, avail: torch.Tensor, epsilon: float, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """q float[N, A, nb, K], avail bool[N, A, nb, K] -> actions long[N, A, nb]."""
        greedy = greedy_actions(q, avail)
        if epsilon <= 0.0:  # host float: no sync
            return greedy
        rand = random_available_actions(avail, generator)
        explore = torch.rand(q.shape[:-2], device=q.device, generator=generator) < epsilon  # [N, A]
        return torch.where(explore.unsqueeze(-1), rand, greedy)
