"""A stand-in for Isaac Gym's ``gymapi`` / ``gymtorch``, to run the Isaac Gym engine's bookkeeping
on any machine (tests/test_isaacgym.py).

It is no physics engine: bodies drift with their velocity and joints accelerate with the applied
effort (unit inertia), nothing collides. What it reproduces is the part of Isaac Gym's contract the
engine relies on and that the type check cannot see: the per-sim actor and DOF order (env-major,
then actor creation order, then the asset's DOF order), state tensors that are filled only by
``refresh_*`` calls, indexed setters that take an int32 index tensor and its length, ``unwrap_tensor``
refusing non-contiguous tensors, DOF properties as a numpy structured array, and MJCF assets read
from the file at ``load_asset``. Options make it less convenient, as Isaac Gym may be: DOFs listed
in reverse order per asset, some joints measured about the opposite axis (mirrored limits), root
positions in the sim frame (env origin added), and state writes that only land at the next
``simulate`` (so a refresh in between reads the old state).
"""
from __future__ import annotations

import math
import os
import types
import xml.etree.ElementTree as ET
from typing import Any, Dict, List

import numpy as np
import torch

DOF_DTYPE = np.dtype([("hasLimits", "?"), ("lower", "<f4"), ("upper", "<f4"), ("driveMode", "<i4"),
                      ("velocity", "<f4"), ("effort", "<f4"), ("stiffness", "<f4"), ("damping", "<f4"),
                      ("friction", "<f4"), ("armature", "<f4")])
PHYSX = {"always_use_articulations", "bounce_threshold_velocity", "contact_collection", "contact_offset",
         "default_buffer_size_multiplier", "friction_correlation_distance", "friction_offset_threshold",
         "max_depenetration_velocity", "max_gpu_contact_pairs", "num_position_iterations", "num_subscenes",
         "num_threads", "num_velocity_iterations", "rest_offset", "solver_type", "use_gpu"}
FLEX = {"contact_regularization", "deterministic_mode", "dynamic_friction", "friction_mode",
        "geometric_stiffness", "max_rigid_contacts", "max_soft_contacts", "num_inner_iterations",
        "num_outer_iterations", "particle_friction", "relaxation", "return_contacts",
        "shape_collision_distance", "shape_collision_margin", "solver_type", "static_friction", "warm_start"}


class _Strict:
    """Attributes limited to a known set, as on Isaac Gym's pybind11 classes."""

    _allowed: frozenset = frozenset()

    def __setattr__(self, key, value):
        if key not in self._allowed:
            raise AttributeError("%s has no attribute %r" % (type(self).__name__, key))
        object.__setattr__(self, key, value)


class PhysXParams(_Strict):
    _allowed = frozenset(PHYSX)


class FlexParams(_Strict):
    _allowed = frozenset(FLEX)


class SimParams(_Strict):
    _allowed = frozenset({"dt", "substeps", "up_axis", "gravity", "use_gpu_pipeline", "num_client_threads",
                          "physx", "flex"})

    def __init__(self):
        self.physx, self.flex = PhysXParams(), FlexParams()


class AssetOptions(_Strict):
    _allowed = frozenset({"fix_base_link", "default_dof_drive_mode", "collapse_fixed_joints", "angular_damping",
                          "linear_damping", "max_angular_velocity", "max_linear_velocity", "armature",
                          "use_physx_armature", "density"})

    def __init__(self):
        self.fix_base_link, self.density = False, 1000.0


class Vec3:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = float(x), float(y), float(z)


class Quat:
    def __init__(self, x=0.0, y=0.0, z=0.0, w=1.0):
        self.x, self.y, self.z, self.w = float(x), float(y), float(z), float(w)


class Transform:
    def __init__(self, p=None, r=None):
        self.p, self.r = p or Vec3(), r or Quat()


class PlaneParams:
    def __init__(self):
        self.normal, self.static_friction, self.dynamic_friction, self.restitution = Vec3(0, 0, 1), 1.0, 1.0, 0.0


class RigidShapeProperties:
    def __init__(self):
        self.friction, self.rolling_friction, self.torsion_friction, self.restitution = 1.0, 0.0, 0.0, 0.0


class RigidBodyProperties:
    def __init__(self, mass=1.0, com=None):
        self.mass, self.com = mass, com or Vec3()


class IndexRange:
    def __init__(self, start, count):
        self.start, self.count = start, count


class Tensor:
    """gymapi.Tensor: here it just carries the torch tensor."""

    def __init__(self, t):
        self.t = t


class _Asset:
    def __init__(self, dof_names, lower, upper, limited, bodies, fixed, density=1000.0):
        self.dof_names, self.lower, self.upper, self.limited = dof_names, lower, upper, limited
        self.bodies = bodies                    # [(name, n_shapes)]
        self.fixed, self.density = fixed, density
        self.shapes = [RigidShapeProperties() for _ in range(sum(n for _, n in bodies))]


class Gym:
    def __init__(self, opts):
        self.o = opts
        self.sims = []

    # -- sim, assets -----------------------------------------------------------------------------
    def create_sim(self, compute, graphics, kind, params):
        assert isinstance(params, SimParams) and params.dt > 0
        sim = types.SimpleNamespace(params=params, envs=[], ground=None, prepared=False, pending=[],
                                    device=torch.device("cuda", compute) if params.use_gpu_pipeline else torch.device("cpu"))
        self.sims.append(sim)
        return sim

    def add_ground(self, sim, plane):
        sim.ground = plane

    def load_asset(self, sim, root, filename, options):
        xml = ET.parse(os.path.join(root, filename)).getroot()   # read now: the engine deletes the file
        compiler = xml.find("compiler")
        degrees = compiler is None or compiler.get("angle", "degree") == "degree"
        names, lower, upper, limited, bodies = [], [], [], [], []
        for b in xml.find("worldbody").iter("body"):
            bodies.append((b.get("name"), len(b.findall("geom"))))
            for j in b.findall("joint"):
                kind = j.get("type", "hinge")
                if kind not in ("hinge", "slide"):
                    continue
                lo, hi = (float(v) for v in j.get("range", "0 0").split())
                scale = math.pi / 180 if degrees and kind == "hinge" else 1.0
                lim = j.get("limited") == "true"
                if j.get("name") in self.o["flip"]:   # measured about -axis: mirrored limits
                    lo, hi = -hi, -lo
                names.append(j.get("name"))
                lower.append(lo * scale if lim else 0.0)
                upper.append(hi * scale if lim else 0.0)
                limited.append(lim)
        if self.o["reverse_dofs"]:
            names, lower, upper, limited = names[::-1], lower[::-1], upper[::-1], limited[::-1]
        return _Asset(names, lower, upper, limited, bodies, bool(options.fix_base_link))

    def create_box(self, sim, width, height, depth, options):
        return _Asset([], [], [], [], [("box", 1)], False, options.density * width * height * depth)

    def get_asset_rigid_shape_properties(self, asset):
        return list(asset.shapes)

    def set_asset_rigid_shape_properties(self, asset, props):
        asset.shapes = list(props)
        return True

    def get_asset_rigid_body_names(self, asset):
        return [n for n, _ in asset.bodies]

    def get_asset_rigid_body_shape_indices(self, asset):
        out, start = [], 0
        for _, n in asset.bodies:
            out.append(IndexRange(start, n))
            start += n
        return out

    # -- envs, actors ------------------------------------------------------------------------------
    def create_env(self, sim, lower, upper, per_row):
        assert not sim.prepared
        e = len(sim.envs)
        side = upper.x - lower.x
        origin = Vec3((e % per_row) * side, (e // per_row) * side, 0.0) if self.o["global_frame"] else Vec3()
        env = types.SimpleNamespace(sim=sim, index=e, origin=origin, actors=[])
        sim.envs.append(env)
        return env

    def create_actor(self, env, asset, pose, name, group, filter, segmentation):
        assert group == env.index and isinstance(filter, int)
        props = np.zeros(len(asset.dof_names), DOF_DTYPE)
        props["hasLimits"], props["lower"], props["upper"] = asset.limited, asset.lower, asset.upper
        env.actors.append(types.SimpleNamespace(asset=asset, name=name, pose=pose, props=props))
        return len(env.actors) - 1

    def get_actor_dof_names(self, env, actor):
        return list(env.actors[actor].asset.dof_names)

    def get_actor_dof_properties(self, env, actor):
        return env.actors[actor].props.copy()

    def set_actor_dof_properties(self, env, actor, props):
        assert props.dtype == DOF_DTYPE and len(props) == len(env.actors[actor].asset.dof_names)
        env.actors[actor].props = props.copy()
        return True

    def get_actor_index(self, env, actor, domain):
        return env.index * len(env.actors) + actor

    def get_actor_rigid_body_properties(self, env, actor):
        asset = env.actors[actor].asset
        out = [RigidBodyProperties(1.0) for _ in asset.bodies]
        if asset.dof_names and not asset.fixed:  # a free robot's root link: COM off its origin
            out[0].com = Vec3(*self.o["com"])
        return out

    def get_env_origin(self, env):
        return env.origin

    def prepare_sim(self, sim):
        G = len(sim.envs[0].actors)
        assert all(len(e.actors) == G for e in sim.envs), "every env must hold the same actors"
        D = sum(len(a.asset.dof_names) for a in sim.envs[0].actors)
        E, dev = len(sim.envs), sim.device
        sim.G, sim.D, sim.E = G, D, E
        sim.root = torch.zeros(E * G, 13, device=dev)
        sim.dof = torch.zeros(E * D, 2, device=dev)
        sim.force = torch.zeros(E * D, device=dev)
        sim.root_view = torch.full((E * G, 13), float("nan"), device=dev)   # until the first refresh
        sim.dof_view = torch.full((E * D, 2), float("nan"), device=dev)
        sim.free = torch.zeros(E * G, dtype=torch.bool, device=dev)
        for env in sim.envs:
            for a, actor in enumerate(env.actors):
                i = env.index * G + a
                p, r = actor.pose.p, actor.pose.r
                sim.root[i, 0:7] = torch.tensor([p.x + env.origin.x, p.y + env.origin.y, p.z + env.origin.z,
                                                 r.x, r.y, r.z, r.w])
                sim.free[i] = not actor.asset.fixed
        sim.prepared = True
        return True

    # -- tensors -----------------------------------------------------------------------------------
    def acquire_actor_root_state_tensor(self, sim):
        return Tensor(sim.root_view)

    def acquire_dof_state_tensor(self, sim):
        return Tensor(sim.dof_view)

    def refresh_actor_root_state_tensor(self, sim):
        sim.root_view.copy_(sim.root)
        return True

    def refresh_dof_state_tensor(self, sim):
        sim.dof_view.copy_(sim.dof)
        return True

    def _indices(self, sim, idx, n):
        t = idx.t
        assert t.dtype == torch.int32 and t.device == sim.device and t.dim() == 1 and n == t.numel(), \
            "indexed setters take an int32 index tensor on the sim device and its length"
        return t.long()

    def set_actor_root_state_tensor_indexed(self, sim, state, idx, n):
        assert state.t.shape == sim.root.shape
        i = self._indices(sim, idx, n)
        rows = state.t[i].clone()
        sim.pending.append(lambda: sim.root.index_copy_(0, i, rows))
        if not self.o["writes_at_simulate"]:
            sim.pending.pop()()
        return True

    def set_dof_state_tensor_indexed(self, sim, state, idx, n):
        assert state.t.shape == sim.dof.shape
        actors = self._indices(sim, idx, n)
        rows = []
        offsets = []
        for a in actors.tolist():      # actor index -> its dof rows
            e, k = divmod(a, sim.G)
            start = e * sim.D + sum(len(x.asset.dof_names) for x in sim.envs[e].actors[:k])
            count = len(sim.envs[e].actors[k].asset.dof_names)
            offsets += list(range(start, start + count))
        rows_i = torch.tensor(offsets, dtype=torch.long, device=sim.device)
        rows = state.t[rows_i].clone()
        sim.pending.append(lambda: sim.dof.index_copy_(0, rows_i, rows))
        if not self.o["writes_at_simulate"]:
            sim.pending.pop()()
        return True

    def set_dof_actuation_force_tensor(self, sim, force):
        assert force.t.numel() == sim.force.numel() and force.t.dtype == torch.float32
        sim.force.copy_(force.t.reshape(-1))
        return True

    def simulate(self, sim):
        for write in sim.pending:
            write()
        sim.pending.clear()
        dt = sim.params.dt
        free = sim.free.unsqueeze(-1)
        sim.root[:, 0:3] += torch.where(free, sim.root[:, 7:10] * dt, torch.zeros_like(sim.root[:, 0:3]))
        sim.dof[:, 1] += sim.force * dt
        sim.dof[:, 0] += sim.dof[:, 1] * dt

    def fetch_results(self, sim, wait):
        pass

    def destroy_sim(self, sim):
        self.sims.remove(sim)

    # -- viewer: key presses are queued by the test in ``events`` as (action, value) ---------------
    def create_viewer(self, sim, camera):
        self.viewer = types.SimpleNamespace(keys={}, closed=False, frames=0, polls=0)
        self.events: List[Any] = []
        return self.viewer

    def subscribe_viewer_keyboard_event(self, viewer, key, action):
        viewer.keys[key] = action

    def viewer_camera_look_at(self, viewer, env, pos, target):
        assert env is not None and isinstance(pos, Vec3) and isinstance(target, Vec3)

    def query_viewer_has_closed(self, viewer):
        return viewer.closed

    def query_viewer_action_events(self, viewer):
        out = [types.SimpleNamespace(action=a, value=v) for a, v in self.events]
        self.events = []
        return out

    def step_graphics(self, sim):
        pass

    def draw_viewer(self, viewer, sim, render_collision):
        viewer.frames += 1

    def sync_frame_time(self, sim):
        pass

    def poll_viewer_events(self, viewer):
        viewer.polls += 1

    def destroy_viewer(self, viewer):
        viewer.closed = True


def modules(reverse_dofs=False, flip=(), global_frame=False, writes_at_simulate=False, com=(0.0, 0.0, 0.0)):
    """``(isaacgym, gymapi, gymtorch)`` fake modules with these behaviours (``com``: where the
    free robots' root links have their centre of mass, in the link frame)."""
    opts: Dict[str, Any] = dict(reverse_dofs=reverse_dofs, flip=set(flip), global_frame=global_frame,
                                writes_at_simulate=writes_at_simulate, com=tuple(com))
    gym = Gym(opts)
    gymapi = types.ModuleType("isaacgym.gymapi")
    for name, value in dict(SimParams=SimParams, AssetOptions=AssetOptions, Vec3=Vec3, Quat=Quat,
                            Transform=Transform, PlaneParams=PlaneParams, Tensor=Tensor,
                            ContactCollection=int, CameraProperties=object, UP_AXIS_Z=2, SIM_PHYSX=0,
                            SIM_FLEX=1, DOF_MODE_EFFORT=3, DOF_MODE_NONE=0, DOMAIN_SIM=2, KEY_ESCAPE=256,
                            KEY_V=86, acquire_gym=lambda: gym).items():
        setattr(gymapi, name, value)
    gymtorch = types.ModuleType("isaacgym.gymtorch")

    def unwrap_tensor(t):
        if not t.is_contiguous():
            raise Exception("Input tensor must be contiguous")
        return Tensor(t)
    gymtorch.wrap_tensor = lambda gt: gt.t
    gymtorch.unwrap_tensor = unwrap_tensor
    pkg = types.ModuleType("isaacgym")
    pkg.__path__ = []  # a package
    pkg.gymapi, pkg.gymtorch = gymapi, gymtorch
    return pkg, gymapi, gymtorch


__all__: List[str] = ["modules", "Gym"]
