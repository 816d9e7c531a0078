"""MultiAntPush: Ant quadrupeds push a box too heavy for one of them to a goal on the ground.

``numAnts`` Ants (8 actuated hinges each, the classic geometry in ``assets/mjcf/ant.xml``) and a
box; the goal lies ``goalDistance`` metres from the box in a random direction. Agents are the
ants (``agentMode: ant``; 8 factored action branches of ``actionBins`` torque levels each) or
their legs (``agentMode: leg``, MA-MuJoCo style; 2 joints per agent, flat ``actionBins**2``
actions).

    python train.py task=MultiAntPush

Observations are egocentric: each agent sees its ant's body in the ant's own frame and the box,
the goal and its teammates in the ant's heading frame. The mixer gets a global state. Reward:
named, weighted terms (``task.rewards``) — box progress toward the goal, success bonus,
approach (ants closing on the box), upright, action cost, fall penalty — each term's episode sum
reported. Episodes end on success, on an ant falling over, on the box leaving the arena, or at
the time limit (``time_outs``).
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Tuple

import torch

from qmix_isaac.sim.rotations import quat_rotate_inverse, rotate_z_cs, yaw_from_quat
from qmix_isaac.sim.scene import Prop, RobotPlacement, compose_scene

from .base import MultiAgentVecTask, TaskConfigError, teammate_index
from .base.layout import push_goal, sample_push_layout, yaw_quat

__all__ = ["MultiAntPush", "compute_ant_push_observations", "compute_ant_push_reward",
           "ANT_DOFS", "ANT_OBS"]

ANT_DOFS = 8
ANT_OBS = 39  # per ant, before teammates: see compute_ant_push_observations
LEG_JOINTS = 2
MAX_FLAT_ACTIONS = 64
# Horizontal reach of an ant at its start pose (ankles at their 30-degree limit, +-0.1 rad noise):
# torso centre to the far side of a foot capsule, measured on assets/mjcf/ant.xml with mj_forward.
# Two ants' centres start at least twice this apart (tests/test_tasks.py checks for contacts).
ANT_REACH = 1.14


class MultiAntPush(MultiAgentVecTask):
    reward_terms = ("box_progress", "success", "approach", "upright", "action_cost", "fall")
    metric_names = ("final_box_dist", "start_box_dist")

    def __init__(self, cfg, rl_device="cpu", sim_device="cpu", graphics_device_id=0,
                 headless=True, virtual_screen_capture=False, force_render=False):
        env, task = cfg["env"], cfg["task"]
        self.num_ants = int(env["numAnts"])
        if self.num_ants < 1:
            raise TaskConfigError("numAnts must be >= 1 (got %d)" % self.num_ants)
        self.agent_mode = str(env.get("agentMode", "ant"))
        if self.agent_mode not in ("ant", "leg"):
            raise TaskConfigError("agentMode must be 'ant' or 'leg' (got %r)" % self.agent_mode)
        self.bins = int(env["actionBins"])
        if self.bins < 2:
            raise TaskConfigError("actionBins must be >= 2 (got %d)" % self.bins)
        joints = ANT_DOFS if self.agent_mode == "ant" else LEG_JOINTS
        self.agents_per_ant = 1 if self.agent_mode == "ant" else ANT_DOFS // LEG_JOINTS
        self.num_agents = self.num_ants * self.agents_per_ant
        space = str(env.get("actionSpace", "auto"))
        if space not in ("auto", "flat", "factored"):
            raise TaskConfigError("actionSpace must be auto, flat or factored (got %r)" % space)
        flat = space == "flat" or (space == "auto" and self.bins ** joints <= MAX_FLAT_ACTIONS)
        if flat:
            self.num_actions = self.bins ** joints
        else:
            self.action_branches = (self.bins,) * joints
        self.joints_per_agent = joints
        self.num_obs = ANT_OBS + 4 * (self.num_ants - 1) + (4 if self.agent_mode == "leg" else 0)
        self.num_states = self.num_ants * 29 + 8
        self.box_half = tuple(float(v) for v in task["boxHalfSize"])
        self.goal_range = tuple(float(v) for v in task["goalDistance"])
        self.spawn_range = tuple(float(v) for v in task["spawnDistance"])
        self.success_radius = float(task["successRadius"])
        self.arena_radius = float(task["arenaRadius"])
        self.power_scale = float(task["powerScale"])
        self.fall_up_z = float(task["fallUpZ"])
        self.approach_standoff = float(task.get("approachStandoff", 0.0))
        cur = task.get("curriculum") or {}
        self.curriculum_levels = int(cur.get("levels", 0))
        if self.curriculum_levels < 0:
            raise TaskConfigError("curriculum.levels must be >= 0 (got %d)" % self.curriculum_levels)
        self.curriculum_start = tuple(float(v) for v in cur.get("startGoalDistance", self.goal_range))
        super().__init__(cfg, rl_device, sim_device, graphics_device_id, headless,
                         virtual_screen_capture, force_render)
        E, dev = self.num_envs, self.sim_device
        e = self.engine
        first = e.index_of_actor("ant0_torso")
        if [e.index_of_actor("ant%d_torso" % i) for i in range(self.num_ants)] != list(
                range(first, first + self.num_ants)):
            raise RuntimeError("the ants' root states must be consecutive actors")
        # a slice, not an index tensor: writing through a tensor index syncs with the host on CUDA
        self.ant_index = slice(first, first + self.num_ants)
        self.box_index = e.index_of_actor("box")
        self.levels = torch.linspace(-1.0, 1.0, self.bins, device=dev)
        self.torque_scale = e.dof_effort_limit * self.power_scale
        self.start_dof_pos = torch.clamp(torch.zeros_like(e.dof_lower), e.dof_lower, e.dof_upper)
        self.goal_pos = torch.zeros(E, 2, device=dev)
        self.prev_box_dist = torch.zeros(E, device=dev)
        self.prev_ant_dist = torch.zeros(E, device=dev)
        self.joint_levels = torch.zeros(E, self.num_ants * ANT_DOFS, device=dev)
        # goal-distance curriculum: each world's level
        self.goal_level = torch.zeros(E, dtype=torch.long, device=dev)
        # flat action k -> per-joint bin indices (little-endian in joints)
        self.flat_to_bins = torch.stack(
            [(torch.arange(self.bins ** joints, device=dev) // self.bins ** j) % self.bins
             for j in range(joints)], -1)

    # ---- scene ----------------------------------------------------------------------------------
    def build_scene(self):
        task = self.cfg["task"]
        robots = [RobotPlacement("ant.xml", "torso", "ant%d_" % i, (1.5 * i, -3.0, 0.0))
                  for i in range(self.num_ants)]
        box = Prop("box", self.box_half, float(task["boxMass"]), float(task["boxFriction"]),
                   (0.0, 0.0, self.box_half[2]))
        return compose_scene(robots, [box], **self.scene_options(floor_friction=0.5))

    # ---- actions --------------------------------------------------------------------------------
    def pre_physics_step(self, actions: torch.Tensor) -> None:
        E = self.num_envs
        if self.action_branches is None:
            bins = self.flat_to_bins[actions.view(E, self.num_agents)]      # [E, A, joints]
        else:
            bins = actions.view(E, self.num_agents, self.joints_per_agent)
        self.joint_levels.copy_(self.levels[bins].reshape(E, -1))
        self.engine.set_dof_torques(self.joint_levels * self.torque_scale)

    # ---- resets ---------------------------------------------------------------------------------
    def sample_start_states(self, n: int) -> Dict[str, torch.Tensor]:
        N, nd = self.num_ants, self.engine.num_dof
        lay = sample_push_layout(self.rng, n, N, device=self.sim_device, box_spread=0.5,
                                 box_yaw_range=math.pi / 2, goal_range=self.goal_range,
                                 spawn_range=self.spawn_range, min_separation=2 * ANT_REACH,
                                 n_extra=nd)
        root = self.engine.initial_root_states.unsqueeze(0).repeat(n, 1, 1)
        root[..., 7:13] = 0.0
        root[:, self.box_index, 0:2] = lay.box_xy
        root[:, self.box_index, 2] = self.box_half[2]
        root[:, self.ant_index, 0:2] = lay.robot_xy
        root[:, self.ant_index, 2] = float(self.cfg["task"]["startHeight"])
        # the box's and the ants' yaw quaternions in one go: [n, 1 + N, 4]
        quats = yaw_quat(torch.cat([lay.box_yaw.unsqueeze(-1), lay.robot_yaw], -1))
        root[:, self.box_index, 3:7] = quats[:, 0]
        root[:, self.ant_index, 3:7] = quats[:, 1:]
        noise = float(self.cfg["task"]["dofNoise"])
        dof_pos = self.start_dof_pos + noise * (lay.extra - 0.5)
        dof_pos = torch.max(torch.min(dof_pos, self.engine.dof_upper), self.engine.dof_lower)
        start = {"root_states": root, "dof_pos": dof_pos,
                 "dof_vel": torch.zeros(1, nd, device=self.sim_device).expand(n, nd)}  # no memory
        if self.curriculum_levels:  # the goal's distance depends on the world's level at its reset
            # (goal_u cloned: a view would keep the whole draw alive with the pool)
            start["goal_dir"], start["goal_u"] = lay.goal_dir, lay.goal_u.clone()
        else:  # the goal and what on_reset needs, computed once per pool
            start["goal"] = lay.goal_xy
            start["box_dist"], start["approach_dist"] = self._start_distances(root, lay.goal_xy)
        return start

    def _start_distances(self, root: torch.Tensor, goal: torch.Tensor):
        """Box-goal distance and the ants' approach distance [rows] of start states."""
        box_xy = root[:, self.box_index, 0:2]
        return torch.norm(goal - box_xy, dim=-1), \
            approach_distance(root[:, self.ant_index, 0:2], box_xy, goal, self.approach_standoff)

    def on_reset(self, mask, start):
        m = mask.view(-1, 1)
        if self.curriculum_levels:
            # the level of each world's next episode: up a level on success, down on any other
            # ending; none after a blow-up, nor for an episode that did not end (env.reset() of a
            # running or resumed world). Its goal is drawn from that level's range.
            L = self.curriculum_levels
            ended = self.reset_buf & ~self.blown_buf
            step = torch.where(self.success_buf, 1, -1) * ended.long()
            level = (self.goal_level + step).clamp(0, L - 1)
            goal_range = curriculum_goal_range(level, L, self.curriculum_start, self.goal_range)
            root = start["root_states"]
            goal = push_goal(root[:, self.box_index, 0:2], start["goal_dir"], start["goal_u"],
                             goal_range)
            box_d, ant_d = self._start_distances(root, goal)
            torch.where(mask & ended, level, self.goal_level, out=self.goal_level)
        else:
            goal, box_d, ant_d = start["goal"], start["box_dist"], start["approach_dist"]
        torch.where(m, goal, self.goal_pos, out=self.goal_pos)
        torch.where(mask, box_d, self.prev_box_dist, out=self.prev_box_dist)
        torch.where(mask, ant_d, self.prev_ant_dist, out=self.prev_ant_dist)
        self.joint_levels.masked_fill_(m, 0.0)
        start_d = self.metrics["start_box_dist"]
        torch.where(mask, box_d, start_d, out=start_d)

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        if self.curriculum_levels:
            state["goal_level"] = self.goal_level.clone()
        return state

    def load_state_dict(self, state):
        skipped = super().load_state_dict(state)
        level = state.get("goal_level")
        if level is not None and self.curriculum_levels:
            if tuple(level.shape) == (self.num_envs,):
                self.goal_level.copy_(level.clamp(0, self.curriculum_levels - 1))
            else:  # another world count: every world starts at the lowest level
                skipped.append("goal_level")
        return skipped

    # ---- observations and rewards ---------------------------------------------------------------
    def _views(self):
        e, E = self.engine, self.num_envs
        ants = e.root_states[:, self.ant_index]                        # [E, N, 13]
        box = e.root_states[:, self.box_index]
        return ants, box, e.dof_pos.view(E, self.num_ants, ANT_DOFS), \
            e.dof_vel.view(E, self.num_ants, ANT_DOFS)

    def compute_observations(self) -> None:
        ants, box, dof_pos, dof_vel = self._views()
        obs, states = compute_ant_push_observations(
            torso_pos=ants[..., 0:3], torso_quat=ants[..., 3:7], torso_linvel=ants[..., 7:10],
            torso_angvel=ants[..., 10:13], dof_pos=dof_pos, dof_vel=dof_vel,
            dof_lower=self.engine.dof_lower.view(self.num_ants, ANT_DOFS),
            dof_upper=self.engine.dof_upper.view(self.num_ants, ANT_DOFS),
            box_pos=box[:, 0:3], box_linvel=box[:, 7:10], goal_pos=self.goal_pos,
            time_left=1.0 - self.progress_buf.float() / self.max_episode_length)
        if self.agent_mode == "leg":
            E, N, L = self.num_envs, self.num_ants, self.agents_per_ant
            leg_id = torch.eye(L, device=obs.device).view(1, 1, L, L).expand(E, N, L, L)
            obs = torch.cat([obs.unsqueeze(2).expand(E, N, L, obs.shape[-1]), leg_id], -1)
            obs = obs.reshape(E, N * L, -1)
        self.obs_buf.copy_(obs)
        self.states_buf.copy_(states)

    def compute_reward(self) -> Dict[str, torch.Tensor]:
        ants, box, _, _ = self._views()
        out = compute_ant_push_reward(
            torso_pos=ants[..., 0:3], torso_quat=ants[..., 3:7], box_pos=box[:, 0:3],
            goal_pos=self.goal_pos, prev_box_dist=self.prev_box_dist,
            prev_ant_dist=self.prev_ant_dist, joint_levels=self.joint_levels,
            success_radius=self.success_radius, arena_radius=self.arena_radius,
            fall_up_z=self.fall_up_z, approach_standoff=self.approach_standoff)
        terms, box_dist, ant_dist, success, failure = out
        self.prev_box_dist.copy_(box_dist)
        self.prev_ant_dist.copy_(ant_dist)
        self.success_buf.copy_(success)
        torch.bitwise_or(success, failure, out=self.terminated_buf)
        self.metrics["final_box_dist"].copy_(box_dist)
        return terms


@functools.lru_cache(maxsize=None)
def _world_down(device) -> torch.Tensor:
    """(0, 0, -1), made once per device (kernels only: no host copy, so also under a graph
    capture). Read it, do not write it."""
    down = torch.zeros(3, device=device)
    down[2] = -1.0
    return down


def compute_ant_push_observations(*, torso_pos, torso_quat, torso_linvel, torso_angvel, dof_pos,
                                  dof_vel, dof_lower, dof_upper, box_pos, box_linvel, goal_pos,
                                  time_left) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-ant observations [E, N, 39 + 4(N-1)] and the global state [E, 29N + 8].

    Ant i sees (body frame = torso frame, heading frame = torso yaw about world z):
    torso height (1), gravity direction in the body frame (3), linear (3) and angular (3)
    velocity in the body frame, joint positions scaled to [-1, 1] (8), joint velocities x0.1 (8),
    box - torso (2) and box velocity (2), goal - torso (2) and goal - box (2) in the heading frame,
    heading (cos, sin) (2), time left (1), box height (1), box speed (1);
    then per teammate (index order): teammate - torso in the heading frame (2), its relative
    heading (cos, sin) (2).
    """
    E, N, _ = torso_pos.shape
    # gravity, linear and angular velocity into the body frame in one rotation
    gravity = _world_down(torso_pos.device).expand_as(torso_pos)
    g_body, v_body, w_body = quat_rotate_inverse(
        torso_quat.unsqueeze(-2), torch.stack([gravity, torso_linvel, torso_angvel], -2)).unbind(-2)
    yaw = yaw_from_quat(torso_quat)                                   # [E, N]
    cos_yaw, sin_yaw = yaw.cos(), yaw.sin()
    q_scaled = (2.0 * dof_pos - (dof_upper + dof_lower)) / (dof_upper - dof_lower)

    # every planar vector an ant sees, into its heading frame in one rotation by -yaw:
    # box - torso, box velocity, goal - torso, goal - box, then each teammate - torso
    planar = [box_pos[:, None, 0:2] - torso_pos[..., 0:2], box_linvel[:, None, 0:2].expand(E, N, 2),
              goal_pos[:, None, :] - torso_pos[..., 0:2],
              (goal_pos - box_pos[:, 0:2])[:, None, :].expand(E, N, 2)]
    vec = torch.stack(planar, -2)                                         # [E, N, 4, 2]
    if N > 1:
        others = teammate_index(N, torso_pos.device)
        mate = torso_pos[:, others, 0:2] - torso_pos[:, :, None, 0:2]     # [E, N, N-1, 2]
        vec = torch.cat([vec, mate], -2)
    vec = rotate_z_cs(vec, cos_yaw.unsqueeze(-1), -sin_yaw.unsqueeze(-1))  # by -yaw
    parts = [torso_pos[..., 2:3], g_body, v_body, w_body, q_scaled, 0.1 * dof_vel,
             vec[..., 0:4, :].reshape(E, N, 8), torch.stack([cos_yaw, sin_yaw], -1),
             time_left.view(E, 1, 1).expand(E, N, 1), box_pos[:, None, 2:3].expand(E, N, 1),
             box_linvel[:, None, 0:2].norm(dim=-1, keepdim=True).expand(E, N, 1)]
    if N > 1:
        dyaw = yaw[:, others] - yaw.unsqueeze(-1)
        parts.append(torch.cat([vec[..., 4:, :], dyaw.cos().unsqueeze(-1), dyaw.sin().unsqueeze(-1)],
                               -1).reshape(E, N, 4 * (N - 1)))
    obs = torch.cat(parts, -1)
    # global state: per ant world pos (3), quat (4), lin vel (3), ang vel (3), joints (16);
    # box pos relative to goal (3), box velocity (3), goal relative to the arena origin (2)
    states = torch.cat([torso_pos.reshape(E, -1), torso_quat.reshape(E, -1),
                        torso_linvel.reshape(E, -1), torso_angvel.reshape(E, -1),
                        q_scaled.reshape(E, -1), 0.1 * dof_vel.reshape(E, -1),
                        box_pos - torch.cat([goal_pos, torch.zeros_like(goal_pos[:, :1])], -1),
                        box_linvel, goal_pos], -1)
    return obs, states


def curriculum_goal_range(level: torch.Tensor, levels: int, start: Tuple[float, float],
                          final: Tuple[float, float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-world goal-distance range (lo [E], hi [E]) at curriculum ``level`` [E] of ``levels``:
    ``start`` at level 0, ``final`` at the top level, linear in between."""
    f = level.float() / (levels - 1) if levels > 1 else torch.ones_like(level, dtype=torch.float)
    return (start[0] + (final[0] - start[0]) * f, start[1] + (final[1] - start[1]) * f)


def push_point(box_xy: torch.Tensor, goal_xy: torch.Tensor, standoff: float) -> torch.Tensor:
    """Where the ants are drawn to [E, 2]: ``standoff`` metres behind the box centre, on the
    side away from the goal (the box centre itself when ``standoff`` is 0)."""
    if standoff == 0.0:
        return box_xy
    away = box_xy - goal_xy
    return box_xy + standoff * away / away.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def approach_distance(ant_xy: torch.Tensor, box_xy: torch.Tensor, goal_xy: torch.Tensor,
                      standoff: float) -> torch.Tensor:
    """Mean planar distance [E] of the ants [E, N, 2] to the push point: what ``approach`` tracks."""
    return torch.norm(ant_xy - push_point(box_xy, goal_xy, standoff).unsqueeze(1), dim=-1).mean(-1)


def compute_ant_push_reward(*, torso_pos, torso_quat, box_pos, goal_pos, prev_box_dist,
                            prev_ant_dist, joint_levels, success_radius: float,
                            arena_radius: float, fall_up_z: float, approach_standoff: float = 0.0):
    """Unweighted reward terms [E], new distances, success and failure flags.

    box_progress: metres the box moved toward the goal this step; success: 1 when the box is
    within ``success_radius`` of the goal; approach: metres the ants' mean distance to the
    push point (``push_point``: the box, or ``approach_standoff`` metres behind it) shrank;
    upright: mean z of the ants' up axes; action_cost: mean squared torque level; fall: 1 when
    an ant tipped over (up-axis z below ``fall_up_z``), which ends the episode, as does the box
    leaving the arena.
    """
    box_dist = torch.norm(goal_pos - box_pos[:, 0:2], dim=-1)
    ant_dist = approach_distance(torso_pos[..., 0:2], box_pos[:, 0:2], goal_pos, approach_standoff)
    # z of the torso's up axis in the world frame, R[2, 2] = 1 - 2 (x^2 + y^2) of its quaternion
    up_z = 1.0 - 2.0 * torso_quat[..., 0:2].square().sum(-1)          # [E, N]
    fallen = (up_z < fall_up_z).any(-1)
    success = box_dist < success_radius
    out = torch.norm(box_pos[:, 0:2], dim=-1) > arena_radius
    failure = (fallen | out) & ~success
    terms = {
        "box_progress": prev_box_dist - box_dist,
        "success": success.float(),
        "approach": prev_ant_dist - ant_dist,
        "upright": up_z.mean(-1),
        "action_cost": (joint_levels ** 2).mean(-1),
        "fall": fallen.float(),
    }
    return terms, box_dist, ant_dist, success, failure
