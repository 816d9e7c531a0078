"""Quaternion helpers on torch tensors, xyzw order (IsaacGymEnvs / Newton convention)."""
from __future__ import annotations

import torch

__all__ = ["quat_rotate", "quat_rotate_inverse", "wxyz_to_xyzw", "xyzw_to_wxyz", "yaw_from_quat",
           "rotate_z", "rotate_z_cs"]


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``v[..., 3]`` by unit quaternions ``q[..., 4]`` (xyzw)."""
    w = q[..., 3:4]
    u = q[..., 0:3]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors by the inverse of unit quaternions (xyzw): world -> body frame."""
    w = q[..., 3:4]
    u = -q[..., 0:3]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def wxyz_to_xyzw(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., 1:4], q[..., 0:1]], dim=-1)


def xyzw_to_wxyz(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., 3:4], q[..., 0:3]], dim=-1)


def yaw_from_quat(q: torch.Tensor) -> torch.Tensor:
    """Heading angle about world z of unit quaternions (xyzw)."""
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def rotate_z(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate planar vectors ``v[..., 2]`` by ``angle[...]`` about z."""
    return rotate_z_cs(v, torch.cos(angle), torch.sin(angle))


def rotate_z_cs(v: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``rotate_z`` given the angle's cosine ``c`` and sine ``s`` (when they are at hand)."""
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], dim=-1)
