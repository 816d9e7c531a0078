"""Batched epsilon-greedy action selection over all envs x agents, honouring avail_actions.

A random action is drawn uniformly among the available bins of each branch as the argmax of
(1 + u) * avail with u ~ U[0, 1): available bins score in [1, 2), unavailable ones 0, so an
unavailable bin is never drawn while any is available, and the argmax of i.i.d. uniforms is a
uniform choice. No ``torch.multinomial`` (which validates its input on the host), no syncs.
Each agent explores with probability epsilon, all of its branches at once (pymarl's rule); with
``per_branch=True`` each branch (joint) of each agent does so on its own, as DecQN-style factored
agents may prefer: a few joints off the greedy gait at a time instead of the whole body at once.
With ``hold_max > 1`` exploration is temporally extended (epsilon-z-greedy, Dabney, Ostrovski
and Barreto, "Temporally-Extended epsilon-Greedy Exploration", ICLR 2021): an agent (or branch)
that starts exploring keeps its random action for d steps, P(d >= k) = 1/k up to ``hold_max``
(their zeta law with mu = 2, capped), before it draws again. The held actions are the only state.
On MultiAntPush (QMIX, CPU, 2M env steps) neither option beat the default; a slower policy rate
did (BENCHMARKS.md, session 5).
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

    Env steps count every env: one ``env.step`` of E envs is E env steps. ``per_branch``: each
    action branch explores on its own draw (else an agent's branches explore together).
    ``hold_max``: longest hold of a random action (1: plain epsilon-greedy; see the module text).
    """

    def __init__(self, *, eps_start: float = 1.0, eps_finish: float = 0.05, eps_anneal_steps: int = 50_000,
                 per_branch: bool = False, hold_max: int = 1) -> None:
        if int(hold_max) < 1:
            raise ValueError(f"exploration.hold_max must be >= 1, got {hold_max}")
        self.eps_start = float(eps_start)
        self.eps_finish = float(eps_finish)
        self.eps_anneal_steps = int(eps_anneal_steps)
        self.per_branch = bool(per_branch)
        self.hold_max = int(hold_max)
        self._held: Optional[torch.Tensor] = None  # random actions being held [N, A, nb]
        self._left: Optional[torch.Tensor] = None  # steps each still holds [N, A, nb or 1]

    def epsilon(self, env_steps: int) -> float:
        """A host float from a host int: no tensor involved."""
        frac = min(1.0, env_steps / self.eps_anneal_steps) if self.eps_anneal_steps > 0 else 1.0
        return self.eps_start + frac * (self.eps_finish - self.eps_start)

    def select(
        self, q: torch.Tensor, avail: torch.Tensor, epsilon: float, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """q float[N, A, nb, K], avail bool[N, A, nb, K] -> actions long[N, A, nb]."""
        greedy = greedy_actions(q, avail)
        if epsilon <= 0.0:  # host float: no sync
            return greedy
        rand = random_available_actions(avail, generator)
        lead = q.shape[:-1] if self.per_branch else q.shape[:-2] + (1,)  # [N, A, nb] or [N, A, 1]
        explore = torch.rand(lead, device=q.device, generator=generator) < epsilon
        if self.hold_max > 1:
            rand, explore = self._hold(rand, explore, avail, generator)
        return torch.where(explore, rand, greedy)

    def _hold(self, rand: torch.Tensor, explore: torch.Tensor, avail: torch.Tensor,
              generator: Optional[torch.Generator]):
        """Held random actions and where they apply: an explorer not already holding starts a
        hold of d steps (this one included); holders play their held action while it is available."""
        if self._left is None or self._left.shape != explore.shape or self._held.shape != rand.shape:
            self._left = torch.zeros(explore.shape, dtype=torch.long, device=rand.device)
            self._held = rand.clone()
        holding = self._left > 0
        start = explore & ~holding
        u = torch.rand(explore.shape, device=rand.device, generator=generator)
        # P(d >= k) = P(u <= 1/k) = 1/k for k <= hold_max (clamped after the floor: clamping u to
        # 1/hold_max first rounds to hold_max - 1 where float32's 1/hold_max is above the real one)
        duration = u.reciprocal().floor().clamp_max(self.hold_max).long()
        self._held = torch.where(start, rand, self._held)
        self._left = torch.where(start, duration - 1, (self._left - 1).clamp_min(0))
        still_available = avail.gather(-1, self._held.unsqueeze(-1)).squeeze(-1)  # [N, A, nb]
        return self._held, (start | holding) & still_available
