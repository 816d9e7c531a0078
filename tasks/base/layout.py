"""Random start layouts shared by the push tasks: a box, a goal, robots on a ring around the box.

One ``torch.rand`` call draws every number a reset needs, for all rows at once (the task base
draws a pool of start states for several steps of every world and keeps, each step, the rows of
the worlds that reset).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

__all__ = ["PushLayout", "push_goal", "sample_push_layout", "yaw_quat"]


class PushLayout(NamedTuple):
    box_xy: torch.Tensor      # [E, 2]
    box_yaw: torch.Tensor     # [E]
    goal_xy: torch.Tensor     # [E, 2]
    goal_dir: torch.Tensor    # [E, 2] unit vector from the box to the goal
    goal_u: torch.Tensor      # [E] uniform in [0, 1): where in goal_range the distance fell
    robot_xy: torch.Tensor    # [E, N, 2]
    robot_yaw: torch.Tensor   # [E, N], uniform in [0, 2 pi)
    extra: torch.Tensor       # [E, n_extra] uniform in [0, 1), for task-specific draws


def yaw_quat(yaw: torch.Tensor) -> torch.Tensor:
    """Quaternions (xyzw) of rotations by ``yaw`` about world z."""
    z = torch.zeros_like(yaw)
    return torch.stack([z, z, torch.sin(yaw / 2), torch.cos(yaw / 2)], -1)


def sample_push_layout(rng: torch.Generator, num_envs: int, num_robots: int, *, device,
                       box_spread: float, box_yaw_range: float, goal_range: Sequence,
                       spawn_range: Sequence[float], min_separation: float = 0.0,
                       n_extra: int = 0) -> PushLayout:
    """Box uniform in a ``box_spread`` square around the origin with yaw uniform in
    [-box_yaw_range/2, box_yaw_range/2]; goal at a distance uniform in ``goal_range`` (two
    floats, or two [E] tensors: a range per world) in a uniform direction; robots at distances
    uniform in ``spawn_range`` from the box, spread evenly in angle (random phase, jitter of half
    a sector). Neighbours are at least half a sector apart in angle; where that chord at the ring's
    inner radius is shorter than ``min_separation`` (robot centres, metres: twice a robot's reach)
    the whole range moves out until it is not, so robots never start inside each other."""
    E, N = num_envs, num_robots
    u = torch.rand(E, 6 + 3 * N + n_extra, device=device, generator=rng)
    box_xy = (u[:, 0:2] - 0.5) * box_spread
    box_yaw = (u[:, 2] - 0.5) * box_yaw_range
    gdir = u[:, 3] * 2 * math.pi
    gdir = torch.stack([gdir.cos(), gdir.sin()], -1)
    goal = push_goal(box_xy, gdir, u[:, 4], goal_range)
    sector = 2 * math.pi / N
    ang = u[:, 5:6] * 2 * math.pi + sector * torch.arange(N, device=device).view(1, N) \
        + (u[:, 6:6 + N] - 0.5) * (sector / 2)
    lo, hi = spawn_range[0], spawn_range[1]
    if N > 1:  # chord of half a sector at radius r: 2 r sin(sector / 4)
        shift = max(0.0, min_separation / (2 * math.sin(sector / 4)) - lo)
        lo, hi = lo + shift, hi + shift
    radius = lo + (hi - lo) * u[:, 6 + N:6 + 2 * N]
    robot_xy = box_xy.unsqueeze(1) + radius.unsqueeze(-1) * torch.stack([ang.cos(), ang.sin()], -1)
    robot_yaw = u[:, 6 + 2 * N:6 + 3 * N] * 2 * math.pi
    return PushLayout(box_xy, box_yaw, goal, gdir, u[:, 4], robot_xy, robot_yaw, u[:, 6 + 3 * N:])


def push_goal(box_xy: torch.Tensor, goal_dir: torch.Tensor, goal_u: torch.Tensor,
              goal_range: Sequence) -> torch.Tensor:
    """The goal [E, 2]: ``goal_dir`` from the box, at the fraction ``goal_u`` of ``goal_range``
    (two floats, or two [E] tensors)."""
    dist = goal_range[0] + (goal_range[1] - goal_range[0]) * goal_u
    return box_xy + dist.unsqueeze(-1) * goal_dir
