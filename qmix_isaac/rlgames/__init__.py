"""rl-games PPO and MAPPO on the same tasks, as a peer to QMIX.

    python train.py task=MultiBallPush train=MultiBallPushPPO     # independent PPO, one shared policy
    python train.py task=MultiBallPush train=MultiBallPushMAPPO   # + a central value on the global state
    python train.py test=True checkpoint=runs/<run>/nn/best.pth   # the same evaluation as QMIX

``train.py`` hands a run to this package when its train config names an rl-games algorithm
(``params.algo.name: a2c_discrete``); the run folder, checkpoints, logger, curves and evaluation
are the QMIX ones. Pieces:

- :mod:`.vecenv`: the vec-env adapter rl-games trains on (agents flattened env-major, global
  state for the central value, action masks, team reward and dones per agent, ``time_outs``).
- :mod:`.observer`: an rl-games ``AlgoObserver`` that sums the task's ``extras["episode"]`` on the
  device and sends it, with rl-games' own losses, to our :class:`~qmix_isaac.record.logger.RunLogger`.
- :mod:`.runner`: builds the policy from a train config, runs ``rl_games.torch_runner.Runner``,
  writes our checkpoints, and plays the policy for evaluation, videos and the viewer: its most
  likely actions, or samples from it where the train config's ``player.deterministic`` is False
  (MultiAntPush: the ants' learned gait needs the sampling noise).

This module itself imports nothing from rl-games, so the QMIX path runs without it installed.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = ["RLGAMES_ALGOS", "RLGamesConfigError", "learner_of", "checkpoint_learner",
           "describe_learner", "check_checkpoint_learner", "rlgames_runner"]

RLGAMES_ALGOS = ("a2c_discrete",)  # rl-games algorithms this package wires up (discrete actions)


class RLGamesConfigError(ValueError):
    """An rl-games train config that cannot run here, or rl-games missing (one line)."""


def _params(train_cfg: Any) -> Mapping[str, Any]:
    if train_cfg is None:
        return {}
    params = train_cfg.get("params", train_cfg) if hasattr(train_cfg, "get") else {}
    return params if params is not None and hasattr(params, "get") else {}


def _algo_name(train_cfg: Any) -> str:
    algo = _params(train_cfg).get("algo")
    name = algo.get("name") if algo is not None and hasattr(algo, "get") else None
    return str(name) if name is not None else "qmix"


def learner_of(train_cfg: Any) -> str:
    """``"rl_games"`` when the train config names an rl-games algorithm, else ``"qmix"``."""
    return "rl_games" if _algo_name(train_cfg) in RLGAMES_ALGOS else "qmix"


def describe_learner(train_cfg: Any) -> str:
    """Human name of a train config's learner: QMIX / VDN / IQL, or rl-games PPO / MAPPO."""
    params = _params(train_cfg)
    if learner_of(train_cfg) == "rl_games":
        config = params.get("config") or {}
        return "rl-games MAPPO" if config.get("central_value_config") else "rl-games PPO"
    mixer = (params.get("mixer") or {}).get("name", "qmix")
    return {"qmix": "QMIX", "vdn": "VDN", "none": "IQL"}.get(str(mixer), str(mixer))


def checkpoint_learner(ckpt: Mapping[str, Any]) -> str:
    """The learner a checkpoint was written by: its ``learner`` entry (rl-games checkpoints carry
    one), else what its train config names (QMIX checkpoints)."""
    return str(ckpt.get("learner") or learner_of(ckpt.get("train_cfg")))


def check_checkpoint_learner(ckpt: Optional[Mapping[str, Any]], path: str, train_cfg: Any,
                             train_name: Optional[str]) -> None:
    """Refuse a checkpoint whose learner differs from an explicitly requested train config
    (``train=...`` on the command line); without one the checkpoint's own config is used."""
    from qmix_isaac.record.checkpoint import CheckpointError

    if ckpt is None or not train_name:
        return
    have, want = checkpoint_learner(ckpt), learner_of(train_cfg)
    if have != want:
        raise CheckpointError(
            "checkpoint %s was written by %s, but train=%s is %s (leave out train= to use the "
            "checkpoint's own train config)" % (path, describe_learner(ckpt.get("train_cfg")),
                                                train_name, describe_learner(train_cfg)))


def rlgames_runner(train_cfg: Any, env, *, distributed: bool = False):
    """The :class:`~qmix_isaac.rlgames.runner.RLGamesRunner` train.py holds for an rl-games
    train config; any problem is one :class:`RLGamesConfigError` line."""
    if distributed:
        raise RLGamesConfigError("rl-games runs are single-process here: torchrun / multi-GPU "
                                 "training is QMIX-only for now")
    try:
        from .runner import RLGamesRunner, TrainConfigError
    except ImportError as exc:
        raise RLGamesConfigError("%s needs rl-games: pip install -e '.[rlgames]' (%s)"
                                 % (describe_learner(train_cfg), str(exc).splitlines()[0]))
    try:
        return RLGamesRunner(train_cfg, env)
    except TrainConfigError as exc:
        raise RLGamesConfigError(str(exc).splitlines()[0])
