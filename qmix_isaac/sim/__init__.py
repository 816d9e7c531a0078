"""Physics engines behind one interface (the engine contract: qmix_isaac/sim/base.py) and ``make_engine`` to pick one.

``physics_engine``: ``mujoco`` (MuJoCo C library, CPU threads), ``newton`` (Newton with the
MuJoCo-Warp solver; CUDA, or CPU slowly), ``physx`` / ``flex`` (Isaac Gym Preview 4, when installed:
Python 3.8, ``import isaacgym`` before torch), or ``auto``: Newton when the simulation device is
CUDA, MuJoCo otherwise.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch

from .base import Engine, resolve_device
from .scene import Scene

__all__ = ["ENGINES", "Engine", "Scene", "make_engine", "resolve_device", "resolve_engine_name"]

ENGINES = ("auto", "mujoco", "newton", "physx", "flex")


def resolve_engine_name(name: str, device) -> str:
    """The engine ``name`` stands for on ``device`` (resolves ``auto``)."""
    if name not in ENGINES:
        raise ValueError("unknown physics_engine %r; choose one of: %s" % (name, ", ".join(ENGINES)))
    if name == "auto":
        return "newton" if torch.device(device).type == "cuda" else "mujoco"
    return name


def _newton_sizes(sim_cfg: Optional[Mapping[str, Any]]) -> Dict[str, Optional[int]]:
    """``sim.newton``'s per-world buffer sizes (None: from the scene), checked."""
    sizes = dict((sim_cfg or {}).get("newton") or {})
    unknown = sorted(set(sizes) - {"nconmax", "njmax"})
    if unknown:
        raise ValueError("unknown key sim.newton.%s (known: nconmax, njmax)" % unknown[0])
    out: Dict[str, Optional[int]] = {}
    for key in ("nconmax", "njmax"):
        value = sizes.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError("sim.newton.%s must be an integer >= 1 (got %s)" % (key, value))
        out[key] = value
    return out


def make_engine(name: str, scene: Scene, num_envs: int, device, *,
                sim_cfg: Optional[Mapping[str, Any]] = None, headless: bool = True,
                graphics_device_id: int = 0, env_spacing: Optional[float] = None) -> Engine:
    """Build ``num_envs`` worlds of ``scene`` on ``device`` with the engine ``name``.

    ``sim_cfg`` (the task config's ``sim`` block: substeps, physx / flex solver settings),
    ``headless``, ``graphics_device_id`` and ``env_spacing`` are read by Isaac Gym only; the
    MuJoCo-family engines take their physics options from the MJCF and draw no window. Newton
    reads ``sim_cfg["newton"]``: its per-world contact and constraint-row buffer sizes
    (``nconmax``, ``njmax``; None: sized from the scene).
    """
    device = resolve_device(device, "sim_device")
    name = resolve_engine_name(name, device)
    if name == "mujoco":
        from .mujoco_engine import MujocoEngine
        return MujocoEngine(scene, num_envs, device)
    if name == "newton":
        sizes = _newton_sizes(sim_cfg)  # before Warp starts (and says things on stderr)
        try:
            from .newton_engine import NewtonEngine
        except ImportError as exc:
            raise ImportError("physics_engine=newton needs newton: pip install 'newton[sim]' "
                              "(%s)" % exc) from exc
        return NewtonEngine(scene, num_envs, device, **sizes)
    # physx / flex: Isaac Gym (imported by this module if it can be: it must come before torch)
    from .isaacgym_engine import IsaacGymEngine, isaacgym_import_problem
    problem = isaacgym_import_problem(name)
    if problem:
        raise RuntimeError(problem)
    return IsaacGymEngine(scene, num_envs, device, physics_engine=name, sim_cfg=sim_cfg,
                          headless=headless, graphics_device_id=graphics_device_id,
                          env_spacing=env_spacing)
