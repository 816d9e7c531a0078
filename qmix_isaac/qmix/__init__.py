"""QMIX on the device: agent networks, mixers, sequence replay, TD targets, learner, exploration.

The learner consumes any vectorised env meeting the task contract (tasks/base/vec_task.py); it never imports a task or an
engine. ``qmix_isaac.runner`` puts these parts together (``build_runner``).
"""
from .agent import AgentGRUCell, AgentLinear, RNNAgent
from .exploration import EpsilonGreedy, random_available_actions
from .learner import QLearner
from .mixer import NoMixer, QMixer, VDNMixer, build_mixer, mixer_map
from .replay import SequenceBatch, SequenceReplay, SequenceWriter, episode_starts, loss_mask
from .spaces import ActionSpec, one_hot
from .targets import chosen_utility, greedy_actions, lambda_returns, masked_mse, next_utility

__all__ = [
    "ActionSpec",
    "AgentGRUCell",
    "AgentLinear",
    "EpsilonGreedy",
    "NoMixer",
    "QLearner",
    "QMixer",
    "RNNAgent",
    "SequenceBatch",
    "SequenceReplay",
    "SequenceWriter",
    "VDNMixer",
    "build_mixer",
    "chosen_utility",
    "episode_starts",
    "greedy_actions",
    "lambda_returns",
    "loss_mask",
    "masked_mse",
    "mixer_map",
    "next_utility",
    "one_hot",
    "random_available_actions",
]
