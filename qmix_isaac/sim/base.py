"""The engine contract: the interface every task uses.

An engine builds ``num_envs`` identical worlds from one :class:`~qmix_isaac.sim.scene.Scene` and
exposes torch tensors on ``device`` that stay the same objects across steps:

- ``root_states``  float32 [E, n_actors, 13]: pos(3), quat xyzw(4), lin vel(3), ang vel(3), all
  in the world frame (IsaacGymEnvs layout), one row per body with a free joint;
- ``dof_pos`` / ``dof_vel`` float32 [E, n_dof]: the 1-dof joints in ``scene.dofs`` order.

``set_dof_torques`` takes joint torques [E, n_dof] (clamped to each actuator's limit, zero on
unactuated dofs), ``simulate(n)`` advances every world ``n`` physics steps with them, and
``refresh`` updates the views. ``set_state`` overwrites the state of the worlds selected by a
boolean mask and leaves every other world bit-identical; it takes a mask rather than a list of
indices so that resets never need a host sync. ``encode_state`` converts whole states to the
engine's own layout once and ``set_encoded_state`` sets them: what a task does with its pool of
start states, so that the conversion is not paid at every step.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .scene import Scene

__all__ = ["Engine", "resolve_device"]


def resolve_device(name: Any, what: str = "device") -> torch.device:
    """``name`` as a torch device, a CUDA one always indexed ("cuda" -> "cuda:<current>", so that
    two spellings of one GPU compare equal). One-line RuntimeError, naming ``what`` (the config
    key), for a string that is no device or for CUDA asked for where there is none."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise RuntimeError("%s=%s is not a device (cpu, cuda or cuda:N)" % (what, name)) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("%s=%s requested but CUDA is not available (use sim_device=cpu "
                               "rl_device=cpu)" % (what, name))
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class Engine:
    """Base class: holds the common buffers; subclasses move the physics."""

    name = "base"

    def __init__(self, scene: Scene, num_envs: int, device: torch.device) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1, got %d" % num_envs)
        self.scene = scene
        self.num_envs = int(num_envs)
        self.device = resolve_device(device, "sim_device")
        self.num_actors = len(scene.actors)
        self.num_dof = len(scene.dofs)
        self.dt = float(scene.timestep)
        E, device = self.num_envs, self.device
        self.root_states = torch.zeros(E, self.num_actors, 13, device=device)
        self.dof_pos = torch.zeros(E, self.num_dof, device=device)
        self.dof_vel = torch.zeros(E, self.num_dof, device=device)
        # Filled by subclasses from the model: per-dof torque limit (gear * ctrl limit; 0 where
        # unactuated), joint limits, and the model's initial state (as set in the MJCF).
        self.dof_effort_limit = torch.zeros(self.num_dof, device=device)
        self.dof_lower = torch.full((self.num_dof,), -float("inf"), device=device)
        self.dof_upper = torch.full((self.num_dof,), float("inf"), device=device)
        self.initial_root_states = torch.zeros(self.num_actors, 13, device=device)
        self.initial_dof_pos = torch.zeros(self.num_dof, device=device)
        # Worlds the engine itself found unstable during the last simulate() (MuJoCo resets such
        # a world to its model state and warns); tasks treat them like non-finite worlds.
        self.diverged = torch.zeros(E, dtype=torch.bool, device=device)

    # -- to implement -------------------------------------------------------------------------
    def set_dof_torques(self, torques: torch.Tensor) -> None:
        raise NotImplementedError

    def simulate(self, steps: int = 1) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        raise NotImplementedError

    def set_state(
        self,
        mask: torch.Tensor,
        root_states: Optional[torch.Tensor] = None,
        dof_pos: Optional[torch.Tensor] = None,
        dof_vel: Optional[torch.Tensor] = None,
    ) -> None:
        """Overwrite the worlds where ``mask[E]`` is True; full-size [E, ...] inputs."""
        raise NotImplementedError

    def encode_state(self, root_states: torch.Tensor, dof_pos: torch.Tensor,
                     dof_vel: torch.Tensor) -> torch.Tensor:
        """Whole states [n, ...] as rows in this engine's own layout, for
        :meth:`set_encoded_state`: convert start states once (a task's pool of them), set them
        many times without the conversion. Here: the three parts side by side."""
        return torch.cat([root_states.flatten(1), dof_pos, dof_vel], 1).to(torch.float32)

    def set_encoded_state(self, mask: torch.Tensor, encoded: torch.Tensor) -> None:
        """:meth:`set_state` from rows [E, ...] of :meth:`encode_state`."""
        A, D = self.num_actors, self.num_dof
        self.set_state(mask, encoded[:, :13 * A].unflatten(1, (A, 13)),
                       encoded[:, 13 * A:13 * A + D], encoded[:, 13 * A + D:])

    def close(self) -> None:
        pass

    # -- recording the task's side of a step in CUDA graphs (MultiAgentVecTask, ``env.cudaGraph``)
    @property
    def graph_capturable(self) -> bool:
        """True when every call of this engine can be recorded into a caller's CUDA graph
        (inside :meth:`capture_scope`): its work is all device kernels, with no host sync."""
        return False

    def capture_scope(self):
        """Context manager entered inside a caller's ``torch.cuda.graph`` capture: while it is
        open, the engine issues its work on torch's current (capturing) stream, so that the
        caller's graph holds it. The caller captures in torch's ``thread_local`` error mode."""
        raise RuntimeError("the %s engine cannot be recorded in a CUDA graph" % self.name)

    def diagnostics(self) -> Dict[str, torch.Tensor]:
        """0-d tensors on the engine's device, for the logging interval (reading them syncs):
        engines with fixed-size buffers say how many worlds overflowed them since the last
        call. None here."""
        return {}

    def buffer_sizes(self) -> Dict[str, int]:
        """Per-world capacities of the buffers :meth:`diagnostics` reports on. None here."""
        return {}

    # -- shared ---------------------------------------------------------------------------------
    def index_of_actor(self, name: str) -> int:
        return self.scene.actors.index(name)

    def healthy(self) -> torch.Tensor:
        """bool[E]: every root and dof value of the world is finite and the engine did not
        find it unstable in the last step. Engines override this to read their own state, so
        that it is valid right after :meth:`simulate`, before :meth:`refresh`."""
        return torch.isfinite(self.root_states).flatten(1).all(1) & torch.isfinite(
            torch.cat([self.dof_pos, self.dof_vel], 1)).all(1) & ~self.diverged
