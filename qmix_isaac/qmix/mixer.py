"""Mixers: how the agents' chosen utilities Q_a combine into the value that the TD loss fits.

One interface for all three, so QMIX, VDN and IQL share the learner's code path:

    mixer(agent_qs float[B, T, A], states float[B, T, S]) -> float[B, T, M]

    qmix  QMixer       M = 1   Q_tot = monotonic mix of Q_a, weights from hypernetworks of s
    vdn   VDNMixer     M = 1   Q_tot = sum_a Q_a
    none  NoMixer      M = A   IQL: every agent fits the team reward on its own (per-agent TD)

QMixer (Rashid et al. 2018, eq. in §4.3):

    hidden = elu(Q_a . |W1(s)| + b1(s))          W1: [A, embed]
    Q_tot  = hidden . |W2(s)| + V(s)             W2: [embed, 1], V: 2-layer MLP

The absolute value makes every weight non-negative, hence dQ_tot/dQ_a >= 0 (monotonicity); the
hypernetworks W1, W2 have 1 layer or 2 (with ``hypernet_embed`` hidden units); b1 is one layer.
"""
from __future__ import annotations

from typing import Dict, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["QMixer", "VDNMixer", "NoMixer", "mixer_map", "build_mixer"]


def _hypernet(state_dim: int, out_dim: int, layers: int, hidden: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(state_dim, out_dim)
    if layers == 2:
        return nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
    raise ValueError(f"hypernet_layers must be 1 or 2, got {layers}")


class QMixer(nn.Module):
    """Monotonic mixing network with state-conditioned, non-negative weights.

    Args:
        n_agents: A.
        state_dim: S, width of the global state.
        embed_dim: width of the mixing layer.
        hypernet_layers: 1 or 2 layers in the hypernetworks producing the weights.
        hypernet_embed: hidden width of 2-layer hypernetworks.
    """

    out_dim = 1

    def __init__(
        self, *, n_agents: int, state_dim: int, embed_dim: int = 32, hypernet_layers: int = 2, hypernet_embed: int = 64
    ) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.embed_dim = embed_dim
        self.hyper_w1 = _hypernet(state_dim, n_agents * embed_dim, hypernet_layers, hypernet_embed)
        self.hyper_w2 = _hypernet(state_dim, embed_dim, hypernet_layers, hypernet_embed)
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.hyper_v = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))

    def _weights(self, states: torch.Tensor):
        states = states.to(torch.float32)
        w1 = self.hyper_w1(states).abs().view(*states.shape[:-1], self.n_agents, self.embed_dim)  # [B, T, A, E]
        return states, w1, self.hyper_b1(states), self.hyper_w2(states).abs()  # b1, w2: [B, T, E]

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        states, w1, b1, w2 = self._weights(states)
        hidden = F.elu(torch.einsum("...a,...ae->...e", agent_qs, w1) + b1)  # [B, T, E]
        return (hidden * w2).sum(-1, keepdim=True) + self.hyper_v(states)  # [B, T, 1]

    @torch.no_grad()
    def slopes(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """dQ_tot/dQ_a >= 0, float[B, T, A]: how much of each agent's TD error reaches it.

        sum_e |W1|_ae * elu'(pre_e) * |W2|_e; elu'(x) = exp(x) for x < 0, so mixing units driven
        negative pass almost no gradient to the agents (a diagnostic; VDN's slopes are all 1).
        """
        _, w1, b1, w2 = self._weights(states)
        pre = torch.einsum("...a,...ae->...e", agent_qs, w1) + b1
        d_elu = torch.where(pre > 0, torch.ones_like(pre), torch.exp(pre.clamp(max=0.0)))
        return torch.einsum("...ae,...e->...a", w1, d_elu * w2)


class VDNMixer(nn.Module):
    """Q_tot = sum of the agents' utilities (Sunehag et al. 2018). No parameters."""

    out_dim = 1

    def __init__(self, *, n_agents: int, state_dim: int) -> None:
        super().__init__()

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(-1, keepdim=True)


class NoMixer(nn.Module):
    """IQL: no mixing; each agent's utility is its own TD target's prediction ([B, T, A])."""

    def __init__(self, *, n_agents: int, state_dim: int) -> None:
        super().__init__()
        self.out_dim = n_agents

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs


mixer_map: Dict[str, Type[nn.Module]] = {"qmix": QMixer, "vdn": VDNMixer, "none": NoMixer}


def build_mixer(name: str, *, n_agents: int, state_dim: int, **options) -> nn.Module:
    """``mixer_map[name](n_agents=..., state_dim=..., **options)``; unknown names or options are errors."""
    if name not in mixer_map:
        raise KeyError(f"unknown mixer {name!r}; choose one of {sorted(mixer_map)}")
    return mixer_map[name](n_agents=n_agents, state_dim=state_dim, **options)
