"""MultiBallPush: holonomic ball robots push a box to a goal on the ground.

Each agent is a ball robot (sphere on two world-aligned slide joints) with 5 discrete actions:
stay, +x, -x, +y, -y, i.e. a planar force of ``forceScale`` times its actuator limit. The box
(a free body) starts near the origin; the goal lies ``goalDistance`` away in a random direction.
Light enough to learn on a 2-core CPU in minutes: it is the task on which the learner's tests
and CPU benchmarks show learning.

    python train.py task=MultiBallPush

Observations are egocentric (positions relative to the robot, world-aligned axes, since the
actions are world-aligned forces); the global state gathers everything for the mixer. Reward:
named, weighted terms (cfg ``task.rewards``), each term's episode sum reported.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch

from qmix_isaac.sim.scene import Prop, RobotPlacement, compose_scene

from .base import MultiAgentVecTask, TaskConfigError, teammate_index
from .base.layout import sample_push_layout, yaw_quat

__all__ = ["MultiBallPush", "scripted_ball_push_actions", "compute_ball_push_observations", "compute_ball_push_reward",
           "BALL_ACTION_DIRECTIONS"]

# action k -> unit force direction (x, y)
BALL_ACTION_DIRECTIONS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


class MultiBallPush(MultiAgentVecTask):
    reward_terms = ("box_progress", "approach", "success", "failure", "action_cost")
    metric_names = ("final_box_dist",)

    def __init__(self, cfg, rl_device="cpu", sim_device="cpu", graphics_device_id=0,
                 headless=True, virtual_screen_capture=False, force_render=False):
        env, task = cfg["env"], cfg["task"]
        self.num_balls = int(env["numBalls"])
        if self.num_balls < 1:
            raise TaskConfigError("numBalls must be >= 1 (got %d)" % self.num_balls)
        self.num_agents = self.num_balls
        self.num_actions = len(BALL_ACTION_DIRECTIONS)
        n_mates = self.num_balls - 1
        self.num_obs = 10 + 4 * n_mates
        self.num_states = 4 * self.num_balls + 7
        self.box_half = tuple(float(v) for v in task["boxHalfSize"])
        self.ball_radius = 0.15
        self.goal_range = tuple(float(v) for v in task["goalDistance"])
        self.spawn_range = tuple(float(v) for v in task["spawnDistance"])
        self.success_radius = float(task["successRadius"])
        self.arena_radius = float(task["arenaRadius"])
        self.force_scale = float(task["forceScale"])
        super().__init__(cfg, rl_device, sim_device, graphics_device_id, headless,
                         virtual_screen_capture, force_render)
        E, dev = self.num_envs, self.sim_device
        self.box_index = self.engine.index_of_actor("box")
        self.goal_pos = torch.zeros(E, 2, device=dev)
        self.prev_box_dist = torch.zeros(E, device=dev)
        self.prev_ball_dist = torch.zeros(E, device=dev)
        self.directions = BALL_ACTION_DIRECTIONS.to(dev)
        self.max_force = self.engine.dof_effort_limit.view(self.num_balls, 2)[:, 0] * self.force_scale
        self.last_actions = torch.zeros(E, self.num_balls, dtype=torch.long, device=dev)

    # ---- scene ----------------------------------------------------------------------------------
    def build_scene(self):
        # every ball's template origin is the world origin, so its dofs are its world (x, y)
        robots = [RobotPlacement("ball_robot.xml", "ball", "ball%d_" % i) for i in range(self.num_balls)]
        box = Prop("box", self.box_half, float(self.cfg["task"]["boxMass"]),
                   float(self.cfg["task"]["boxFriction"]), (0.0, 0.0, self.box_half[2]))
        return compose_scene(robots, [box], **self.scene_options())

    # ---- state views ----------------------------------------------------------------------------
    def _views(self):
        e = self.engine
        ball_pos = e.dof_pos.view(self.num_envs, self.num_balls, 2)
        ball_vel = e.dof_vel.view(self.num_envs, self.num_balls, 2)
        box = e.root_states[:, self.box_index]
        return ball_pos, ball_vel, box

    # ---- actions --------------------------------------------------------------------------------
    def pre_physics_step(self, actions: torch.Tensor) -> None:
        self.last_actions.copy_(actions.view(self.num_envs, self.num_balls))
        force = self.directions[self.last_actions] * self.max_force.view(1, -1, 1)  # [E, N, 2]
        self.engine.set_dof_torques(force.reshape(self.num_envs, -1))

    # ---- resets ---------------------------------------------------------------------------------
    def sample_start_states(self, n: int) -> Dict[str, torch.Tensor]:
        N = self.num_balls
        lay = sample_push_layout(self.rng, n, N, device=self.sim_device, box_spread=0.4,
                                 box_yaw_range=math.pi / 2, goal_range=self.goal_range,
                                 spawn_range=self.spawn_range,
                                 min_separation=2 * self.ball_radius + 0.05)
        root = self.engine.initial_root_states.unsqueeze(0).repeat(n, 1, 1)
        root[:, self.box_index, 0:2] = lay.box_xy
        root[:, self.box_index, 2] = self.box_half[2]
        root[:, self.box_index, 3:7] = yaw_quat(lay.box_yaw)
        root[:, self.box_index, 7:13] = 0.0
        # what on_reset needs, computed once per pool: box-goal and mean ball-box distances
        box_d = torch.norm(lay.goal_xy - lay.box_xy, dim=-1)
        ball_d = torch.norm(lay.robot_xy - lay.box_xy.unsqueeze(1), dim=-1).mean(-1)
        return {"root_states": root, "dof_pos": lay.robot_xy.reshape(n, 2 * N),
                "dof_vel": torch.zeros(1, 2 * N, device=self.sim_device).expand(n, 2 * N),
                "goal": lay.goal_xy,
                "box_dist": box_d, "ball_dist": ball_d}

    def on_reset(self, mask, start):
        m = mask.view(-1, 1)
        torch.where(m, start["goal"], self.goal_pos, out=self.goal_pos)
        torch.where(mask, start["box_dist"], self.prev_box_dist, out=self.prev_box_dist)
        torch.where(mask, start["ball_dist"], self.prev_ball_dist, out=self.prev_ball_dist)
        self.last_actions.masked_fill_(m, 0)

    # ---- observations and rewards ---------------------------------------------------------------
    def compute_observations(self) -> None:
        ball_pos, ball_vel, box = self._views()
        obs, states = compute_ball_push_observations(
            ball_pos=ball_pos, ball_vel=ball_vel, box_pos=box[:, 0:2], box_vel=box[:, 7:9],
            box_quat=box[:, 3:7], goal_pos=self.goal_pos,
            time_left=1.0 - self.progress_buf.float() / self.max_episode_length)
        self.obs_buf.copy_(obs)
        self.states_buf.copy_(states)

    def compute_reward(self) -> Dict[str, torch.Tensor]:
        ball_pos, _, box = self._views()
        terms, box_dist, ball_dist, success, failure = compute_ball_push_reward(
            ball_pos=ball_pos, box_pos=box[:, 0:2], goal_pos=self.goal_pos,
            prev_box_dist=self.prev_box_dist, prev_ball_dist=self.prev_ball_dist,
            moving=(self.last_actions != 0), success_radius=self.success_radius,
            arena_radius=self.arena_radius)
        self.prev_box_dist.copy_(box_dist)
        self.prev_ball_dist.copy_(ball_dist)
        self.success_buf.copy_(success)
        torch.bitwise_or(success, failure, out=self.terminated_buf)
        self.metrics["final_box_dist"].copy_(box_dist)
        return terms


def compute_ball_push_observations(*, ball_pos, ball_vel, box_pos, box_vel, box_quat, goal_pos,
                                   time_left) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-agent observations [E, N, 10 + 4(N-1)] and global state [E, 4N + 7].

    Agent i sees: box - self (2), own velocity (2), box velocity (2), goal - box (2),
    goal - self (2), then for each teammate j != i (in index order): j - self (2), j's velocity (2).
    """
    E, N, _ = ball_pos.shape
    rel_box = box_pos.unsqueeze(1) - ball_pos
    goal_box = (goal_pos - box_pos).unsqueeze(1).expand(E, N, 2)
    rel_goal = goal_pos.unsqueeze(1) - ball_pos
    parts = [rel_box, ball_vel, box_vel.unsqueeze(1).expand(E, N, 2), goal_box, rel_goal]
    if N > 1:
        others = teammate_index(N, ball_pos.device)
        mate_pos = ball_pos[:, others] - ball_pos.unsqueeze(2)          # [E, N, N-1, 2]
        mate_vel = ball_vel[:, others]
        parts.append(torch.cat([mate_pos, mate_vel], -1).reshape(E, N, 4 * (N - 1)))
    obs = torch.cat(parts, -1)
    # a square box looks the same every 90 degrees: encode its yaw as (cos 4y, sin 4y)
    yaw = 2.0 * torch.atan2(box_quat[:, 2], box_quat[:, 3])
    states = torch.cat([(ball_pos - box_pos.unsqueeze(1)).reshape(E, -1), ball_vel.reshape(E, -1),
                        box_pos - goal_pos, box_vel,
                        torch.stack([torch.cos(4.0 * yaw), torch.sin(4.0 * yaw)], -1),
                        time_left.unsqueeze(-1)], -1)
    return obs, states


def compute_ball_push_reward(*, ball_pos, box_pos, goal_pos, prev_box_dist, prev_ball_dist,
                             moving, success_radius: float, arena_radius: float):
    """Unweighted reward terms [E] and the new distances, success and failure flags.

    box_progress: metres the box moved toward the goal this step; approach: metres the balls'
    mean distance to the box shrank; success: 1 when the box is within ``success_radius`` of the
    goal; failure: 1 when the box or a ball leaves the arena; action_cost: fraction of balls
    pushing (a force is applied).
    """
    box_dist = torch.norm(goal_pos - box_pos, dim=-1)
    ball_dist = torch.norm(ball_pos - box_pos.unsqueeze(1), dim=-1).mean(-1)
    success = box_dist < success_radius
    # the box or a ball outside the arena: the largest distance from the origin
    out = torch.cat([box_pos.unsqueeze(1), ball_pos], 1).norm(dim=-1).amax(-1) > arena_radius
    failure = out & ~success
    terms = {
        "box_progress": prev_box_dist - box_dist,
        "approach": prev_ball_dist - ball_dist,
        "success": success.float(),
        "failure": failure.float(),
        "action_cost": moving.float().mean(-1),
    }
    return terms, box_dist, ball_dist, success, failure


def scripted_ball_push_actions(obs: torch.Tensor, *, standoff: float = 0.5) -> torch.Tensor:
    """A hand-written team policy from observations alone: LongTensor [E, N].

    Each ball goes round the box to the point ``standoff`` metres behind it (opposite the goal),
    then pushes toward the goal. It shows the task is solvable and that its reward points the
    right way; the learner should match or beat it.
    """
    rel_box, goal_box = obs[..., 0:2], obs[..., 6:8]
    u = goal_box / goal_box.norm(dim=-1, keepdim=True).clamp_min(1e-6)   # push direction
    d = -rel_box                                                           # self - box
    along = (d * u).sum(-1, keepdim=True)
    perp = d - along * u
    perp_n = perp.norm(dim=-1, keepdim=True)
    side = torch.where(perp_n > 1e-3, perp / perp_n.clamp_min(1e-6),
                       torch.stack([-u[..., 1], u[..., 0]], -1))
    behind = -u * standoff                                                 # relative to box
    around = side * (standoff + 0.25) - u * 0.2
    aligned = (along < -0.25) & (perp_n < 0.2)
    in_front = along > -0.3
    target = torch.where(in_front, around, behind)
    desired = torch.where(aligned, u, target - d)
    scores = desired @ BALL_ACTION_DIRECTIONS.to(obs.device).t()          # [E, N, 5]
    return scores.argmax(-1)
