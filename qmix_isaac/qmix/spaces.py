"""Per-agent discrete action layouts, flat or factored, as the learner sees them.

A task offers each agent either a flat set of ``num_actions`` K choices, or a factored one,
``action_branches`` = (bins_0, bins_1, ...), e.g. one branch per joint with 3 torque bins each.
Inside the learner both are one layout, so one code path serves them:

    flat K           -> one branch of K bins
    factored (b...)  -> len(b) branches, padded to max(b) bins (padded bins are never available)

    Q-values   float[..., A, n_branches, max_bins]
    actions    long [..., A, n_branches]
    avail      bool [..., A, n_branches, max_bins]

``ActionSpec`` converts to and from what the env takes and gives (the task contract, tasks/base/vec_task.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

__all__ = ["ActionSpec", "one_hot"]


def one_hot(index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float one-hot of ``index`` (any shape) -> [..., num_classes].

    Written as a comparison with ``arange`` rather than ``F.one_hot`` so that it never validates
    the indices on the host (a device sync on some backends).
    """
    classes = torch.arange(num_classes, device=index.device)
    return (index.unsqueeze(-1) == classes).to(torch.float32)


@functools.lru_cache(maxsize=None)
def _bin_mask(branches: Tuple[int, ...], device: torch.device) -> torch.Tensor:
    """bool[len(branches), max(branches)], made once per layout and device (no host copy per step)."""
    sizes = torch.tensor(branches, device=device)
    return torch.arange(max(branches), device=device) < sizes.unsqueeze(-1)


@dataclass(frozen=True)
class ActionSpec:
    """Per-agent action layout: ``branches`` bins per branch; ``factored`` False for a flat space."""

    branches: Tuple[int, ...]
    factored: bool

    def __post_init__(self) -> None:
        if len(self.branches) == 0 or min(self.branches) < 1:
            raise ValueError(f"every action branch needs at least one bin, got {self.branches}")
        if not self.factored and len(self.branches) != 1:
            raise ValueError("a flat action space has exactly one branch")

    @classmethod
    def flat(cls, num_actions: int) -> "ActionSpec":
        return cls(branches=(int(num_actions),), factored=False)

    @classmethod
    def factored_bins(cls, branches: Sequence[int]) -> "ActionSpec":
        return cls(branches=tuple(int(b) for b in branches), factored=True)

    @classmethod
    def from_env(cls, env) -> "ActionSpec":
        """Reads ``env.action_branches`` (factored) if set, else ``env.num_actions`` (flat)."""
        branches = getattr(env, "action_branches", None)
        if branches:
            return cls.factored_bins(branches)
        return cls.flat(env.num_actions)

    @property
    def n_branches(self) -> int:
        return len(self.branches)

    @property
    def max_bins(self) -> int:
        return max(self.branches)

    @property
    def one_hot_dim(self) -> int:
        """Width of the concatenated per-branch one-hot of one agent's action."""
        return self.n_branches * self.max_bins

    def bin_mask(self, device=None) -> torch.Tensor:
        """bool[n_branches, max_bins]: True where a bin exists (False on padding)."""
        return _bin_mask(self.branches, torch.device(device or "cpu")).clone()

    def avail_from_env(self, avail: torch.Tensor) -> torch.Tensor:
        """Env avail (flat bool[..., A, K] or factored bool[..., A, nb, max_bins]) -> [..., A, nb, max_bins].
        Padding bins (branches of unequal sizes) are unavailable whatever the env says."""
        avail = avail.to(torch.bool)
        if not self.factored:
            return avail.unsqueeze(-2)
        if len(set(self.branches)) > 1:
            avail = avail & _bin_mask(self.branches, avail.device)
        return avail

    def to_env(self, actions: torch.Tensor) -> torch.Tensor:
        """Learner actions long[..., A, nb] -> what env.step takes: long[..., A] (flat) or [..., A, nb]."""
        return actions if self.factored else actions[..., 0]

    def from_env_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_env``."""
        return actions.long() if self.factored else actions.long().unsqueeze(-1)

    def one_hot(self, actions: torch.Tensor) -> torch.Tensor:
        """long[..., nb] -> float[..., nb * max_bins] (per-branch one-hots, concatenated)."""
        return one_hot(actions.long(), self.max_bins).flatten(-2)
