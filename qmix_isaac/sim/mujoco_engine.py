"""MuJoCo engine: the MuJoCo C library stepping E worlds on CPU threads.

One ``MjModel`` and a persistent :class:`mujoco.rollout.Rollout` thread pool; the state of all
worlds lives in one float64 array ``[E, nstate]`` (``mjSTATE_FULLPHYSICS``) that torch sees
without a copy (``torch.from_numpy``). A call to :meth:`simulate` hands that array and the
control array to ``rollout`` (which releases the GIL and steps the worlds in C++ threads) and
copies the last state back. The IsaacGymEnvs-layout views are gathered from it by
:meth:`refresh`.

MuJoCo's free joints carry angular velocity in the body frame and quaternions as wxyz; this
engine converts both to the world-frame / xyzw convention of the engine contract (qmix_isaac/sim/base.py) at the boundary.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from .base import Engine
from .mj_tables import actuator_table
from .rotations import quat_rotate, quat_rotate_inverse, xyzw_to_wxyz
from .scene import Scene

__all__ = ["MujocoEngine"]


class MujocoEngine(Engine):
    name = "mujoco"

    def __init__(self, scene: Scene, num_envs: int, device="cpu", *, nthread: Optional[int] = None,
                 torch_threads: Optional[int] = 1):
        try:
            import mujoco
            from mujoco import rollout
        except ImportError as exc:  # pragma: no cover - dependency of the package
            raise ImportError("physics_engine=mujoco needs the `mujoco` package: pip install mujoco") from exc
        super().__init__(scene, num_envs, device)
        if self.device.type != "cpu":
            raise ValueError("the mujoco engine simulates on the CPU; use sim_device=cpu "
                             "(or physics_engine=newton for CUDA)")
        self._mj = mujoco
        if torch_threads is not None:
            # The physics thread pool uses every core; torch's intra-op threads on the same cores
            # spin at their barriers and slow both sides down (measured 6x on 2 cores, see
            # BENCHMARKS.md). The task's tensors are small: one torch thread serves them best.
            torch.set_num_threads(int(torch_threads))
        self.model = mujoco.MjModel.from_xml_string(scene.xml)
        m = self.model
        self.nthread = int(nthread or os.cpu_count() or 1)
        self._datas = [mujoco.MjData(m) for _ in range(self.nthread)]
        self._models = [m] * int(num_envs)  # rollout takes one model per world (shared here)
        self._rollout = rollout.Rollout(nthread=self.nthread)
        self._checked = False
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._nstate = mujoco.mj_stateSize(m, spec)
        d0 = self._datas[0]
        mujoco.mj_resetData(m, d0)
        mujoco.mj_forward(m, d0)
        s0 = np.empty(self._nstate)
        mujoco.mj_getState(m, d0, s0, spec)
        E = self.num_envs
        self._state = np.tile(s0, (E, 1))                       # [E, nstate] float64
        self._ctrl = np.zeros((E, 1, m.nu))                     # [E, 1, nu], tiled over nstep
        self._out = {}                                          # nstep -> [E, nstep, nstate]
        self._diverged_np = np.zeros(E, dtype=bool)
        self.diverged = torch.from_numpy(self._diverged_np)
        self.state64 = torch.from_numpy(self._state)            # zero-copy views
        self._ctrl_t = torch.from_numpy(self._ctrl)[:, 0, :]
        self._qv = self.state64[:, 1:1 + m.nq + m.nv]             # qpos | qvel
        self.qpos, self.qvel = self._qv[:, :m.nq], self._qv[:, m.nq:]
        self._qv0 = self._qv[0].clone()

        # index maps from names
        def jid(name):
            i = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            if i < 0:
                raise ValueError("joint %r not in model" % name)
            return i

        free_q, free_v = [], []
        for body in scene.actors:
            b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body)
            j = m.body_jntadr[b]
            if j < 0 or m.jnt_type[j] != mujoco.mjtJoint.mjJNT_FREE:
                raise ValueError("actor %r has no free joint" % body)
            free_q.append(m.jnt_qposadr[j])
            free_v.append(m.jnt_dofadr[j])
        fq = torch.tensor(free_q, dtype=torch.long)
        fv = torch.tensor(free_v, dtype=torch.long)
        self._pos_idx = fq[:, None] + torch.arange(3)           # [n_actors, 3]
        self._quat_idx = fq[:, None] + 3 + torch.arange(4)      # wxyz
        self._lin_idx = fv[:, None] + torch.arange(3)
        self._ang_idx = fv[:, None] + 3 + torch.arange(3)       # body frame in MuJoCo
        dof_j = [jid(n) for n in scene.dofs]
        self._dof_q = torch.tensor([m.jnt_qposadr[j] for j in dof_j], dtype=torch.long)
        self._dof_v = torch.tensor([m.jnt_dofadr[j] for j in dof_j], dtype=torch.long)

        # the columns of qpos | qvel that refresh reads: root_states' layout (wxyz read as xyzw),
        # then dof_pos and dof_vel
        nq = m.nq
        root_cols = torch.cat([self._pos_idx, self._quat_idx[:, [1, 2, 3, 0]], nq + self._lin_idx,
                               nq + self._ang_idx], 1)
        self._refresh_cols = torch.cat([root_cols.flatten(), self._dof_q, nq + self._dof_v])

        act_dof, gear, lo, hi = actuator_table(mujoco, m, dof_j)
        self._act_dof = torch.tensor(act_dof, dtype=torch.long)
        self._gear = torch.tensor(gear, dtype=torch.float64)
        self._ctrl_lo = torch.tensor(lo, dtype=torch.float64)
        self._ctrl_hi = torch.tensor(hi, dtype=torch.float64)
        self.dof_effort_limit[self._act_dof] = (self._gear * torch.maximum(
            self._ctrl_hi.abs(), self._ctrl_lo.abs())).float()
        for k, j in enumerate(dof_j):
            if m.jnt_limited[j]:
                self.dof_lower[k] = float(m.jnt_range[j, 0])
                self.dof_upper[k] = float(m.jnt_range[j, 1])
        self.refresh()
        self.initial_root_states.copy_(self.root_states[0])
        self.initial_dof_pos.copy_(self.dof_pos[0])

    # ------------------------------------------------------------------------------------------
    def set_dof_torques(self, torques: torch.Tensor) -> None:
        torch.clamp(torques.to(torch.float64)[:, self._act_dof] / self._gear, self._ctrl_lo,
                    self._ctrl_hi, out=self._ctrl_t)

    def simulate(self, steps: int = 1) -> None:
        bufs = self._out.get(steps)
        if bufs is None:  # per-substep-count output and control arrays, allocated once
            bufs = self._out[steps] = (np.empty((self.num_envs, steps, self._nstate)),
                                       np.empty((self.num_envs, steps, self.model.nu)))
        out, ctrl = bufs
        ctrl[:] = self._ctrl  # zero-order hold over the substeps
        expected_time = self._state[:, 0] + steps * self.model.opt.timestep
        self._rollout.rollout(self._models, self._datas, self._state, ctrl, nstep=steps,
                              state=out, skip_checks=self._checked)
        self._checked = True
        self._state[:] = out[:, -1]
        # MuJoCo resets a world that went unstable (bad qacc) to its model state, which restarts
        # its clock: a world whose time is not where it should be diverged during this call.
        self._diverged_np[:] = np.abs(self._state[:, 0] - expected_time) > 0.5 * self.model.opt.timestep

    def refresh(self) -> None:
        A, D = self.num_actors, self.num_dof
        g = self._qv[:, self._refresh_cols]       # one gather: [E, 13 A + 2 D] float64
        root = g[:, :13 * A].unflatten(1, (A, 13))  # quaternion xyzw, angular velocity body frame
        self.root_states[..., 0:10].copy_(root[..., 0:10])
        self.root_states[..., 10:13].copy_(quat_rotate(root[..., 3:7], root[..., 10:13]))
        self.dof_pos.copy_(g[:, 13 * A:13 * A + D])
        self.dof_vel.copy_(g[:, 13 * A + D:])

    def healthy(self) -> torch.Tensor:
        # MuJoCo's own bound (mjMAXVAL); NaN fails it too
        return (self._qv.abs().amax(1) < 1e10) & ~self.diverged

    def _rows(self, rows, root_states=None, dof_pos=None, dof_vel=None) -> torch.Tensor:
        """``rows`` [n, nq + nv] (qpos | qvel, float64, owned) with the given parts written in."""
        nq = self.model.nq
        qpos, qvel = rows[:, :nq], rows[:, nq:]
        if root_states is not None:
            rs = root_states.to(torch.float64)
            quat = rs[..., 3:7]
            qpos[:, self._pos_idx] = rs[..., 0:3]
            qpos[:, self._quat_idx] = xyzw_to_wxyz(quat)
            qvel[:, self._lin_idx] = rs[..., 7:10]
            qvel[:, self._ang_idx] = quat_rotate_inverse(quat, rs[..., 10:13])
        if dof_pos is not None:
            qpos[:, self._dof_q] = dof_pos.to(torch.float64)
        if dof_vel is not None:
            qvel[:, self._dof_v] = dof_vel.to(torch.float64)
        return rows

    def encode_state(self, root_states, dof_pos, dof_vel) -> torch.Tensor:
        """Rows of MuJoCo's qpos | qvel [n, nq + nv] float64 (joints the scene does not name keep
        the model's initial values)."""
        return self._rows(self._qv0.repeat(root_states.shape[0], 1), root_states, dof_pos, dof_vel)

    def set_encoded_state(self, mask, encoded) -> None:
        m = mask.to(torch.bool)
        torch.where(m.view(-1, 1), encoded, self._qv, out=self._qv)
        # time restarts in reset worlds; the rest of the state vector is untouched
        self.state64[:, 0].masked_fill_(m, 0.0)

    def set_state(self, mask, root_states=None, dof_pos=None, dof_vel=None) -> None:
        self.set_encoded_state(mask, self._rows(self._qv.clone(), root_states, dof_pos, dof_vel))

    def close(self) -> None:
        if getattr(self, "_rollout", None) is not None:
            self._rollout.close()
            self._rollout = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
