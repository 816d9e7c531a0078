"""Recurrent agent network of QMIX: one GRU policy for all agents, or one per agent.

Per agent and step, the input is the observation, optionally a one-hot agent id and the one-hot
of the agent's previous action (zero at the first step of an episode), as in Rashid et al. 2018:

    x = [obs (O) | agent id (A) | last action (nb * max_bins)]
    h = GRU(relu(W1 x), h)
    Q = W2 h  -> float[..., A, n_branches, max_bins]

Flat action spaces have one branch; factored ones (``action_branches``) get one utility head per
branch, and the agent's utility of a joint per-agent action is the *mean* of its branches'
utilities (DecQN, Seyde et al. 2023), so the greedy action is the per-branch argmax.

``shared=True`` (the QMIX default) shares every weight between agents (the agent id tells them
apart); ``shared=False`` gives each agent its own weights, stored as batched tensors [A, ...] so
all agents still run in one kernel per layer.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spaces import ActionSpec

__all__ = ["AgentLinear", "AgentGRUCell", "RNNAgent"]


class AgentLinear(nn.Module):
    """Linear layer over [..., A, in] -> [..., A, out]; one weight for all agents or one per agent."""

    def __init__(self, in_features: int, out_features: int, *, n_agents: int, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        lead = () if shared else (n_agents,)
        self.weight = nn.Parameter(torch.empty(*lead, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(*lead, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation, per agent
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return F.linear(x, self.weight, self.bias)
        return torch.einsum("...ai,aoi->...ao", x, self.weight) + self.bias


class AgentGRUCell(nn.Module):
    """GRU cell over [N, A, in] with hidden [N, A, H]; shared (cuDNN GRUCell) or per-agent weights."""

    def __init__(self, input_size: int, hidden_size: int, *, n_agents: int, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        self.hidden_size = hidden_size
        if shared:
            self.cell = nn.GRUCell(input_size, hidden_size)
        else:
            self.x2h = AgentLinear(input_size, 3 * hidden_size, n_agents=n_agents, shared=False)
            self.h2h = AgentLinear(hidden_size, 3 * hidden_size, n_agents=n_agents, shared=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return self.cell(x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1])).view_as(h)
        xr, xz, xn = self.x2h(x).chunk(3, dim=-1)
        hr, hz, hn = self.h2h(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h


class RNNAgent(nn.Module):
    """Agent utilities Q_a(tau_a, .) for all agents at once.

    Args:
        n_agents: A.
        obs_dim: O, per-agent observation width.
        action_spec: the per-agent action layout (flat or factored).
        hidden_dim: width of the first layer and of the GRU state.
        obs_agent_id: append the one-hot agent id to the input.
        obs_last_action: append the one-hot previous action to the input.
        shared: one set of weights for all agents (True) or one per agent.
    """

    def __init__(
        self,
        *,
        n_agents: int,
        obs_dim: int,
        action_spec: ActionSpec,
        hidden_dim: int = 64,
        obs_agent_id: bool = True,
        obs_last_action: bool = True,
        shared: bool = True,
    ) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.obs_dim = obs_dim
        self.action_spec = action_spec
        self.hidden_dim = hidden_dim
        self.obs_agent_id = obs_agent_id
        self.obs_last_action = obs_last_action
        input_dim = obs_dim + (n_agents if obs_agent_id else 0)
        input_dim += action_spec.one_hot_dim if obs_last_action else 0
        self.input_dim = input_dim
        self.fc1 = AgentLinear(input_dim, hidden_dim, n_agents=n_agents, shared=shared)
        self.rnn = AgentGRUCell(hidden_dim, hidden_dim, n_agents=n_agents, shared=shared)
        self.fc2 = AgentLinear(hidden_dim, action_spec.one_hot_dim, n_agents=n_agents, shared=shared)
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)  # [A, A]

    def init_hidden(self, *batch_shape: int) -> torch.Tensor:
        """Zero GRU state float[*batch_shape, A, H]."""
        return self.agent_ids.new_zeros(*batch_shape, self.n_agents, self.hidden_dim)

    def build_inputs(self, obs: torch.Tensor, prev_action: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """obs float[..., A, O], prev_action long[..., A, nb], start bool[...] -> float[..., A, D].

        Where ``start`` is True the step is an episode's first, so the last-action input is zero.
        """
        parts = [obs.to(torch.float32)]
        if self.obs_agent_id:
            parts.append(self.agent_ids.expand(*obs.shape[:-2], self.n_agents, self.n_agents))
        if self.obs_last_action:
            last = self.action_spec.one_hot(prev_action)  # [..., A, nb*bins]
            parts.append(last * (~start).to(last.dtype)[..., None, None])
        return torch.cat(parts, dim=-1)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        q = self.fc2(h)
        return q.view(*q.shape[:-1], self.action_spec.n_branches, self.action_spec.max_bins)

    def forward(
        self, obs: torch.Tensor, prev_action: torch.Tensor, start: torch.Tensor, hidden: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One step for acting. obs [N, A, O], prev_action long[N, A, nb], start bool[N], hidden [N, A, H]
        -> (q float[N, A, nb, bins], new hidden [N, A, H]). The GRU state restarts at zero where start."""
        x = F.relu(self.fc1(self.build_inputs(obs, prev_action, start)))
        h = torch.where(start[:, None, None], torch.zeros_like(hidden), hidden)
        h = self.rnn(x, h)
        return self._head(h), h

    def unroll(
        self, obs: torch.Tensor, prev_action: torch.Tensor, start: torch.Tensor, *, burn_in: int = 0
    ) -> torch.Tensor:
        """Whole sequences. obs [B, L, A, O], prev_action long[B, L, A, nb], start bool[B, L]
        -> q float[B, L, A, nb, bins]. The GRU state is zero at t=0 and wherever ``start`` is True.

        The first ``burn_in`` steps only warm the GRU state: they run without gradient.
        """
        B, L = start.shape
        x = F.relu(self.fc1(self.build_inputs(obs, prev_action, start)))  # [B, L, A, H]
        h = self.init_hidden(B)
        zeros = torch.zeros_like(h)
        # unbind, not x[:, t]: indexing's backward writes each step's gradient into a zero tensor
        # of x's full size and adds them up (2 L full-size fills and adds per backward)
        xs, starts = x.unbind(1), start[:, :, None, None].unbind(1)
        hs = []
        for t in range(L):  # Python loop over time steps (a config constant), never over envs
            with torch.set_grad_enabled(torch.is_grad_enabled() and t >= burn_in):
                h = self.rnn(xs[t], torch.where(starts[t], zeros, h))
            hs.append(h)
        return self._head(torch.stack(hs, dim=1))
