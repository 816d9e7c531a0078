"""Physics engines behind one interface (DESIGN.md §3.2) and ``make_engine`` to pick one.

``physics_engine``: ``mujoco`` (MuJoCo C library, CPU threads), ``newton`` (Newton with the
MuJoCo-Warp solver; CUDA, or CPU slowly), ``physx`` / ``flex`` (Isaac Gym, when installed), or
``auto``: Newton when the simulation device is CUDA, MuJoCo otherwise.
"""
from __future__ import annotations

import torch

from .base import Engine
from .scene import Scene

__all__ = ["ENGINES", "Engine", "Scene", "make_engine", "resolve_engine_name"]

ENGINES = ("auto", "mujoco", "newton", "physx", "flex")


def resolve_engine_name(name: str, device) -> str:
    """The engine ``name`` stands for on ``device`` (resolves ``auto``)."""
    if name not in ENGINES:
        raise ValueError("unknown physics_engine %r; choose one of: %s" % (name, ", ".join(ENGINES)))
    if name == "auto":
        return "newton" if torch.device(device).type == "cuda" else "mujoco"
    return name


def make_engine(name: str, scene: Scene, num_envs: int, device) -> Engine:
    """Build ``num_envs`` worlds of ``scene`` on ``device`` with the engine ``name``."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("sim_device=%s requested but CUDA is not available" % device)
    name = resolve_engine_name(name, device)
    if name == "mujoco":
        from .mujoco_engine import MujocoEngine
        return MujocoEngine(scene, num_envs, device)
    if name == "newton":
        try:
            from .newton_engine import NewtonEngine
        except ImportError as exc:
            raise ImportError("physics_engine=newton needs newton: pip install 'newton[sim]' "
                              "(%s)" % exc) from exc
        return NewtonEngine(scene, num_envs, device)
    raise RuntimeError("physics_engine=%s needs Isaac Gym (isaacgym), which is not installed; "
                       "use physics_engine=mujoco or newton" % name)
