"""Tiny pure-torch cooperative envs meeting the task contract (the task contract: tasks/base/vec_task.py), for tests and demos.

    MatrixGame       one-step 2-agent matrix game; default payoff is the non-monotonic
                     [[8,-12,-12],[-12,0,0],[-12,0,0]] (QTRAN / Weighted QMIX papers)
    TwoStepGame      the two-step game of the QMIX paper (Rashid et al. 2018, §6.1, Fig. 3):
                     agent 1 picks matrix 2A (all 7) or 2B ([[0,1],[1,8]]); QMIX finds 8, VDN 7
    GridRendezvous   agents on a G x G grid are rewarded only when all stand on the goal cell at
                     once; walls are avail_actions masks; flat (5 moves) or factored (dx, dy bins)
                     actions; time limit with time_outs

Episode protocol (IsaacGymEnvs): the step ending an episode returns its final observation with
reset=True; at the next ``step`` that env restarts: its action is ignored, its reward is 0, and the
observation returned is the new episode's first. ``extras["episode"]`` holds return, length and
success of the episodes ended at this step, valid where ``mask``. Everything is batched over envs
(no Python loops over envs, no host syncs).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

__all__ = ["MatrixGame", "TwoStepGame", "GridRendezvous", "NONMONOTONIC_PAYOFF", "TWO_STEP_PAYOFF_2B"]

NONMONOTONIC_PAYOFF = ((8.0, -12.0, -12.0), (-12.0, 0.0, 0.0), (-12.0, 0.0, 0.0))
TWO_STEP_PAYOFF_2A = ((7.0, 7.0), (7.0, 7.0))
TWO_STEP_PAYOFF_2B = ((0.0, 1.0), (1.0, 8.0))


class _ToyVecEnv:
    """Shared step/reset protocol; subclasses define ``_restart``, ``_advance`` and ``_observe``."""

    num_agents: int
    num_obs: int
    num_states: int
    num_actions: Optional[int] = None
    action_branches: Optional[Tuple[int, ...]] = None
    max_episode_length: int

    def __init__(self, *, num_envs: int, rl_device="cpu", seed: int = 0) -> None:
        self.num_envs = num_envs
        self.rl_device = torch.device(rl_device)
        self.generator = torch.Generator(device=self.rl_device)
        self.generator.manual_seed(seed)
        E = num_envs
        self.reset_buf = torch.zeros(E, dtype=torch.bool, device=self.rl_device)
        self.progress_buf = torch.zeros(E, dtype=torch.long, device=self.rl_device)
        self.return_buf = torch.zeros(E, device=self.rl_device)

    def reset(self) -> Dict[str, torch.Tensor]:
        """Restart every env."""
        everyone = torch.ones(self.num_envs, dtype=torch.bool, device=self.rl_device)
        self._restart(everyone)
        self.reset_buf.zero_()
        self.progress_buf.zero_()
        self.return_buf.zero_()
        return self._observe()

    def step(self, actions: torch.Tensor):
        """actions long[E, A] (flat) or [E, A, n_branches] -> (obs_dict, rew[E], reset[E], extras)."""
        pending = self.reset_buf  # ended last step: restart now, ignore the action
        active = ~pending
        reward, terminated, success = self._advance(actions.long(), active)
        self._restart(pending)
        self.progress_buf = torch.where(pending, 0, self.progress_buf + 1)
        reward = torch.where(active, reward, 0.0)
        terminated = terminated & active
        time_out = active & ~terminated & (self.progress_buf >= self.max_episode_length)
        done = terminated | time_out
        self.return_buf = torch.where(pending, 0.0, self.return_buf) + reward
        extras = {
            "time_outs": time_out,
            "episode": {
                "mask": done,
                "return": self.return_buf.clone(),
                "length": self.progress_buf.to(torch.float32),
                "success": (success & terminated).to(torch.float32),
            },
        }
        self.reset_buf = done
        return self._observe(), reward, done, extras

    # subclass hooks -------------------------------------------------------------------------
    def _restart(self, mask: torch.Tensor) -> None:
        raise NotImplementedError

    def _advance(self, actions: torch.Tensor, active: torch.Tensor):
        """Apply actions where active; return (reward[E], terminated bool[E], success bool[E])."""
        raise NotImplementedError

    def _observe(self) -> Dict[str, torch.Tensor]:
        raise NotImplementedError


class MatrixGame(_ToyVecEnv):
    """One-step cooperative matrix game: 2 agents, K actions each, reward payoff[a1, a2], then the end.

    Agents see a constant observation (there is only one state).
    """

    num_agents = 2
    num_obs = 1
    num_states = 1
    max_episode_length = 1

    def __init__(
        self, *, num_envs: int = 64, payoff: Sequence[Sequence[float]] = NONMONOTONIC_PAYOFF, rl_device="cpu", seed: int = 0
    ) -> None:
        super().__init__(num_envs=num_envs, rl_device=rl_device, seed=seed)
        self.payoff = torch.tensor(payoff, dtype=torch.float32, device=self.rl_device)  # [K, K]
        self.num_actions = self.payoff.shape[0]

    def _restart(self, mask: torch.Tensor) -> None:
        pass

    def _advance(self, actions: torch.Tensor, active: torch.Tensor):
        reward = self.payoff[actions[:, 0], actions[:, 1]]
        terminated = torch.ones_like(active)
        return reward, terminated, reward >= self.payoff.max()

    def _observe(self) -> Dict[str, torch.Tensor]:
        E, A, K = self.num_envs, self.num_agents, self.num_actions
        ones = torch.ones(E, A, 1, device=self.rl_device)
        return {"obs": ones, "states": ones[:, 0], "avail_actions": torch.ones(E, A, K, dtype=torch.bool, device=self.rl_device)}


class TwoStepGame(_ToyVecEnv):
    """QMIX paper's two-step game. State 1: agent 1's action A (0) leads to 2A, B (1) to 2B, no reward.
    State 2A pays 7 whatever the agents do; 2B pays [[0,1],[1,8]][a1, a2]. Then the episode ends.

    Observation and state: one-hot of (1, 2A, 2B).
    """

    num_agents = 2
    num_obs = 3
    num_states = 3
    num_actions = 2
    max_episode_length = 2

    def __init__(self, *, num_envs: int = 64, rl_device="cpu", seed: int = 0) -> None:
        super().__init__(num_envs=num_envs, rl_device=rl_device, seed=seed)
        self.stage = torch.zeros(num_envs, dtype=torch.long, device=self.rl_device)  # 0: state 1, 1: 2A, 2: 2B
        self.payoff = torch.tensor([TWO_STEP_PAYOFF_2A, TWO_STEP_PAYOFF_2B], device=self.rl_device)  # [2, 2, 2]

    def _restart(self, mask: torch.Tensor) -> None:
        self.stage = torch.where(mask, 0, self.stage)

    def _advance(self, actions: torch.Tensor, active: torch.Tensor):
        first = self.stage == 0
        second_game = (self.stage - 1).clamp(min=0)
        reward = torch.where(first, 0.0, self.payoff[second_game, actions[:, 0], actions[:, 1]])
        next_stage = torch.where(first, 1 + actions[:, 0], self.stage)
        self.stage = torch.where(active, next_stage, self.stage)
        return reward, ~first, reward >= 8.0

    def _observe(self) -> Dict[str, torch.Tensor]:
        E, A = self.num_envs, self.num_agents
        onehot = (self.stage.unsqueeze(-1) == torch.arange(3, device=self.rl_device)).to(torch.float32)
        avail = torch.ones(E, A, self.num_actions, dtype=torch.bool, device=self.rl_device)
        return {"obs": onehot.unsqueeze(1).expand(E, A, 3).contiguous(), "states": onehot, "avail_actions": avail}


class GridRendezvous(_ToyVecEnv):
    """Agents on a G x G grid, random starts; reward +1 (and the end) when all stand on the centre
    cell at once; otherwise ``goal_bonus`` per agent on it minus ``step_cost``; time limit
    ``max_episode_length``.

    Flat actions (5): stay, +x, -x, +y, -y. Factored (``factored=True``): two branches (dx, dy) of
    3 bins each (-1, 0, +1), diagonal moves allowed. Moves off the grid are unavailable.
    Observation per agent: own position, then every agent's position, scaled to [0, 1].
    State: every agent's position.
    """

    def __init__(
        self,
        *,
        num_envs: int = 64,
        num_agents: int = 2,
        grid_size: int = 5,
        factored: bool = False,
        max_episode_length: int = 10,
        step_cost: float = 0.02,
        goal_bonus: float = 0.02,
        rl_device="cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(num_envs=num_envs, rl_device=rl_device, seed=seed)
        self.num_agents = num_agents
        self.grid_size = grid_size
        self.max_episode_length = max_episode_length
        self.step_cost = step_cost
        self.goal_bonus = goal_bonus
        self.factored = factored
        if factored:
            self.action_branches = (3, 3)
            moves = torch.tensor([-1, 0, 1])  # bin -> displacement, per axis
        else:
            self.num_actions = 5
            moves = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])  # action -> (dx, dy)
        self.moves = moves.to(self.rl_device)
        self.num_obs = 2 + 2 * num_agents
        self.num_states = 2 * num_agents
        self.goal = grid_size // 2
        self.pos = torch.zeros(num_envs, num_agents, 2, dtype=torch.long, device=self.rl_device)

    def _restart(self, mask: torch.Tensor) -> None:
        fresh = torch.randint(
            0, self.grid_size, self.pos.shape, device=self.rl_device, generator=self.generator
        )  # drawn for all envs, kept where mask: no boolean indexing
        self.pos = torch.where(mask[:, None, None], fresh, self.pos)

    def _advance(self, actions: torch.Tensor, active: torch.Tensor):
        delta = self.moves[actions]  # flat: [E, A, 2]; factored: [E, A, 2] (one bin per axis)
        moved = (self.pos + delta).clamp(0, self.grid_size - 1)
        self.pos = torch.where(active[:, None, None], moved, self.pos)
        on_goal = (self.pos == self.goal).all(dim=-1)  # [E, A]
        together = on_goal.all(dim=-1)
        shaped = self.goal_bonus * on_goal.sum(dim=-1) - self.step_cost
        reward = torch.where(together, 1.0, shaped)
        return reward, together, together

    def _observe(self) -> Dict[str, torch.Tensor]:
        E, A, G = self.num_envs, self.num_agents, self.grid_size
        scaled = self.pos.to(torch.float32) / (G - 1)  # [E, A, 2]
        everyone = scaled.reshape(E, 1, 2 * A).expand(E, A, 2 * A)
        obs = torch.cat([scaled, everyone], dim=-1)
        low = self.pos > 0  # may step -1 on that axis
        high = self.pos < G - 1
        if self.factored:
            yes = torch.ones_like(low)
            avail = torch.stack([low, yes, high], dim=-1)  # [E, A, 2 axes, 3 bins]
        else:
            stay = torch.ones_like(low[..., 0])
            avail = torch.stack([stay, high[..., 0], low[..., 0], high[..., 1], low[..., 1]], dim=-1)
        return {"obs": obs, "states": scaled.reshape(E, 2 * A), "avail_actions": avail}
