"""The vec env rl-games trains on: one of our multi-agent tasks (the task contract: tasks/base/vec_task.py) seen as
``E * A`` actors sharing one policy, the way rl-games runs multi-agent envs (SMAC, IsaacGymEnvs'
multi-agent tasks).

Layout (env-major: row ``e * A + a`` is agent ``a`` of world ``e``, the order rl-games'
central value assumes when it repeats a world's value for its agents):

    obs             float[E*A, O]   (``[E*A, O + A]`` with ``obs_agent_id``: one-hot agent index)
    states          float[E, S]     the global state, for ``central_value_config`` (MAPPO)
    action masks    bool[E*A, K]    flat, or bool[E*A, B * bins] for factored actions
    actions         long[E*A]       flat (``Discrete(K)``), or long[E*A, B] (``Tuple`` of ``Discrete``)
    rewards, dones  [E*A]           the team reward and the world's reset flag, for every agent
    infos           {"time_outs": bool[E*A], "episode": the task's per-world statistics, ...}

rl-games adds ``gamma * V(s) * time_outs`` to the reward (``value_bootstrap``), so episodes cut
by the time limit are bootstrapped rather than treated as terminal.

Episode boundaries are IsaacGymEnvs' (the step that ends an episode returns its final
observation with ``done``; the world restarts at the next step), exactly as IsaacGymEnvs' own
tasks present them to rl-games: the restart step's transition (reward 0, action ignored) enters
the PPO batch as one ordinary transition per episode; its action has no effect, so its policy
gradient is zero in expectation.

Nothing here reads a tensor on the host: ``step`` is reshapes and copies on the env's device.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

# rl-games 1.6.5 picks gym (Python 3.8) or gymnasium (3.9+) in this module; its spaces are the
# ones its buffers and model builder recognise (by class name), so we take them from there too.
from rl_games.common import env_configurations, vecenv
from rl_games.common.gym_compat import spaces
from rl_games.common.ivecenv import IVecEnv

__all__ = ["RLGamesVecEnv", "ENV_NAME", "VECENV_TYPE", "register_env"]

ENV_NAME = "qmix_isaac"          # params.config.env_name of our train configs
VECENV_TYPE = "QMIX_ISAAC"


class RLGamesVecEnv(IVecEnv):
    """``env`` (a task or any object meeting the task contract (tasks/base/vec_task.py)) as an rl-games vec env."""

    def __init__(self, env, *, obs_agent_id: bool = False, **_ignored: Any) -> None:
        # _ignored: rl-games passes params.config.env_config here, with a 'seed' it adds itself
        self.env = env
        E, A = int(env.num_envs), int(env.num_agents)
        self.num_envs, self.num_agents = E, A
        self.obs_agent_id = bool(obs_agent_id)
        branches = getattr(env, "action_branches", None)
        self.branches = tuple(int(b) for b in branches) if branches else None
        device = torch.device(env.rl_device)
        width = int(env.num_obs) + (A if self.obs_agent_id else 0)
        self.observation_space = spaces.Box(-math.inf, math.inf, (width,), dtype=np.float32)
        self.state_space = spaces.Box(-math.inf, math.inf, (int(env.num_states),), dtype=np.float32)
        if self.branches is None:
            self.action_space = spaces.Discrete(int(env.num_actions))
        else:
            self.action_space = spaces.Tuple([spaces.Discrete(b) for b in self.branches])
        # one-hot agent index per row, env-major
        self._agent_ids = torch.eye(A, device=device).repeat(E, 1) if self.obs_agent_id else None
        self._avail: Optional[torch.Tensor] = None

    # ---- what rl-games asks -----------------------------------------------------------------
    def get_number_of_agents(self) -> int:
        return self.num_agents

    def get_env_info(self) -> Dict[str, Any]:
        return {"observation_space": self.observation_space, "state_space": self.state_space,
                "action_space": self.action_space, "agents": self.num_agents, "value_size": 1}

    def has_action_masks(self) -> bool:
        return True

    def get_action_masks(self) -> torch.Tensor:
        """bool[E*A, K] (flat) or bool[E*A, B * bins] (factored: rl-games splits it per branch)."""
        return self._avail.reshape(self.num_envs * self.num_agents, -1)

    def seed(self, seed: int) -> None:
        pass  # the task is seeded when it is built (train.py's seed=)

    def reset(self) -> Dict[str, torch.Tensor]:
        return self._obs(self.env.reset())

    def step(self, actions: torch.Tensor):
        E, A = self.num_envs, self.num_agents
        actions = actions.reshape((E, A) if self.branches is None else (E, A, len(self.branches)))
        obs_dict, rew, reset, extras = self.env.step(actions)
        per_agent = (E, A)
        rewards = rew.unsqueeze(1).expand(per_agent).reshape(E * A)        # copies: fresh tensors
        dones = reset.unsqueeze(1).expand(per_agent).reshape(E * A).to(torch.uint8)
        infos = dict(extras)
        infos["time_outs"] = extras["time_outs"].unsqueeze(1).expand(per_agent).reshape(E * A)
        return self._obs(obs_dict), rewards, dones, infos

    def close(self) -> None:
        pass  # the task belongs to the caller

    # ---- internals ----------------------------------------------------------------------------
    def _obs(self, obs_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # The task returns its own buffers and overwrites them next step: copy (the reshape of a
        # contiguous buffer would be a view) so what rl-games keeps stays what it saw.
        obs = flat_agent_obs(obs_dict["obs"], self._agent_ids)
        self._avail = obs_dict["avail_actions"].to(torch.bool, copy=True)
        return {"obs": obs, "states": obs_dict["states"].clone()}


def flat_agent_obs(obs: torch.Tensor, agent_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float[E, A, O] -> a fresh float[E*A, O] (env-major), with the one-hot ``agent_ids``
    [E*A, A] appended when given."""
    flat = obs.reshape(obs.shape[0] * obs.shape[1], -1)
    return torch.cat([flat, agent_ids], -1) if agent_ids is not None else flat.clone()


_ENVS: Dict[str, Callable[..., Any]] = {}


def register_env(make_env: Callable[..., Any]) -> None:
    """Make ``env_name: qmix_isaac`` create ``RLGamesVecEnv(make_env(), **env_config)`` — the
    registration IsaacGymEnvs does for its ``rlgpu`` envs (``vecenv.register`` for the vec-env
    type, ``env_configurations.register`` for the name). ``make_env`` returns the task already
    built by train.py."""
    _ENVS[ENV_NAME] = make_env
    vecenv.register(VECENV_TYPE, lambda config_name, num_actors, **kwargs:
                    RLGamesVecEnv(_ENVS[config_name](), **kwargs))
    env_configurations.register(ENV_NAME, {"vecenv_type": VECENV_TYPE,
                                           "env_creator": lambda **kwargs: _ENVS[ENV_NAME]()})
