"""Index tables read off a compiled ``mujoco.MjModel``, shared by the MuJoCo-family engines.

Both engines compile the scene's MJCF with the MuJoCo C library (Newton to check and align its
own import), so the actuator-to-dof map, gears and control ranges come from one function.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence

__all__ = ["ActuatorTable", "actuator_table"]


class ActuatorTable(NamedTuple):
    dof: List[int]        # index in scene.dofs of the joint each actuator drives
    gear: List[float]
    ctrl_lo: List[float]  # -inf / +inf where the control is not limited
    ctrl_hi: List[float]


def actuator_table(mujoco, m, dof_joint_ids: Sequence[int]) -> ActuatorTable:
    """Every actuator of ``m`` must drive one of ``dof_joint_ids`` through a joint transmission."""
    dof_j = [int(j) for j in dof_joint_ids]
    out = ActuatorTable([], [], [], [])
    for a in range(m.nu):
        if int(m.actuator_trntype[a]) != int(mujoco.mjtTrn.mjTRN_JOINT):
            raise ValueError("actuator %d is not a joint actuator" % a)
        j = int(m.actuator_trnid[a, 0])
        if j not in dof_j:
            raise ValueError("actuator %d drives a joint outside scene.dofs" % a)
        limited = bool(m.actuator_ctrllimited[a])
        out.dof.append(dof_j.index(j))
        out.gear.append(float(m.actuator_gear[a, 0]))
        out.ctrl_lo.append(float(m.actuator_ctrlrange[a, 0]) if limited else -float("inf"))
        out.ctrl_hi.append(float(m.actuator_ctrlrange[a, 1]) if limited else float("inf"))
    return out
