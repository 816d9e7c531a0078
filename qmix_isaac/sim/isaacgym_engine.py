"""Isaac Gym engine: PhysX (``physics_engine=physx``) or FleX (``flex``) through Isaac Gym Preview 4.

Isaac Gym is not on PyPI and runs on Python 3.8 only; it must be imported before torch (``import
isaacgym`` first: ``train.py`` does it when the command line asks for physx/flex). This module is
kept Python 3.8-compatible and imports without Isaac Gym: its pure helpers (asset text, index maps,
sim parameters) are tested on any machine, and :func:`isaacgym_import_problem` says in one line why
the engine cannot start. ``make test`` type-checks this file against the PyPI ``isaacgym-stubs``.

How the worlds are built (same MJCF as the MuJoCo-family engines, ``assets/mjcf``):

- one sim (``gym.create_sim``) with ``dt = scene.timestep``, the task config's ``sim`` block
  (``substeps``, ``physx`` / ``flex`` solver settings, ``gravity``), z up, and the GPU pipeline when
  the sim device is CUDA (then every tensor below lives on that GPU);
- a ground plane with the scene's floor friction;
- each robot template loaded once with ``gym.load_asset`` from an Isaac Gym-ready copy of its MJCF
  (:func:`robot_asset_mjcf`: the robot body and its motors without the template's floor; the root
  body's placement becomes the actor pose; a robot without a free joint, e.g. the ball on two
  slides, hangs from a fixed base link); joints get the MJCF's armature and stiffness, drive mode
  ``DOF_MODE_EFFORT`` and the motors' torque limit; the MJCF's viscous joint damping is applied by
  this engine as a torque ``-damping * dof velocity`` before every ``gym.simulate`` (the effort
  drive has no gains: a damping property there would be ignored, or applied twice); shape friction
  is the MJCF geoms' sliding friction;
- each box prop made with ``gym.create_box`` (full extents = 2 x half sizes, density = mass / volume);
- ``num_envs`` envs in a grid, each holding one actor per scene actor (``Scene.actors`` order: the
  free bodies first, so that the root states of env ``e``, actor ``a`` sit at global actor index
  ``e * actors_per_env + a``) and then the fixed-base robots. Actors of one env share its collision
  group; each robot gets its own filter bit, so it does not collide with itself (as IsaacGymEnvs'
  Ant) but does with its teammates and the props.

What tasks see (the engine contract: qmix_isaac/sim/base.py): ``root_states`` ``[E, n_actors, 13]`` is a view of Isaac Gym's
actor root state tensor (``acquire_actor_root_state_tensor`` + ``gymtorch.wrap_tensor``): env frame,
linear velocity of the body origin. (Isaac Gym gives positions in the env frame and PhysX the
velocity of the centre of mass, which is the origin for the root links here; where either is not
so, checked at start-up, the view becomes a copy converted at each refresh.) ``dof_pos`` /
``dof_vel`` are views of the DOF state tensor when Isaac Gym orders and orients the DOFs as
``Scene.dofs`` does (the usual case), gathered through :func:`dof_permutation` and
:func:`dof_signs` otherwise.
``refresh()`` calls ``refresh_actor_root_state_tensor`` / ``refresh_dof_state_tensor``;
``set_dof_torques`` clamps to the motors' range and calls ``set_dof_actuation_force_tensor``;
``simulate(n)`` calls ``gym.simulate`` n times (plus ``fetch_results`` on the CPU pipeline, as
IsaacGymEnvs does: on the GPU pipeline it would wait for the GPU).

Resets without a host sync: Isaac Gym's indexed setters take an int32 index tensor *and its length
on the host*; selecting the masked worlds' indices (``nonzero``) would make the GPU report the count.
Instead ``set_state`` passes the fixed list of every world's actors and writes the unmasked worlds'
current state back unchanged (``torch.where`` on freshly refreshed tensors), so the reset worlds get
their new state and the others get back exactly what they had, with no sync. (That PhysX then
steps them exactly as if nothing had been written, contact caches included, is what
tests/test_isaacgym.py checks where Isaac Gym is installed.) ``sync_free_resets=False`` selects the
masked worlds' indices instead (one host sync per reset, the IsaacGymEnvs way).

Differences to MuJoCo worth knowing: PhysX combines two shapes' friction by their average (MuJoCo:
the larger), PhysX solves contacts with its own solver and contact offsets, and FleX does not run on
the CPU. ``model_mismatches()`` lists where the loaded asset differs from the MJCF.
"""
from __future__ import annotations

import copy
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

from .base import Engine
from .rotations import quat_rotate
from .scene import ASSET_DIR, RobotPlacement, Scene

try:  # Isaac Gym Preview 4; type-checked against the PyPI isaacgym-stubs (make test)
    from isaacgym import gymapi
except Exception as _exc:  # not installed, or torch was imported first  # noqa: BLE001
    gymapi = None  # type: ignore[assignment]
    _IMPORT_ERROR = str(_exc).strip().splitlines()[0] if str(_exc).strip() else type(_exc).__name__
else:
    _IMPORT_ERROR = ""

__all__ = ["IsaacGymEngine", "isaacgym_import_problem", "RobotAsset", "robot_asset_mjcf",
           "DofTable", "mjcf_dof_table", "ActorLayout", "actor_layout", "dof_permutation",
           "dof_signs", "global_actor_indices", "root_frame_is_global", "isaacgym_sim_params",
           "PHYSX_DEFAULTS", "FLEX_DEFAULTS"]

NOT_INSTALLED = ("physics_engine=%s needs Isaac Gym (isaacgym), which is not installed (it is not on "
                 "PyPI and needs Python 3.8: Isaac Gym Preview 4 from NVIDIA); use "
                 "physics_engine=mujoco or newton")

# PhysX / FleX settings used where the task config's sim.physx / sim.flex leave them out
# (IsaacGymEnvs' usual values). Keys are gymapi.PhysXParams / FlexParams attribute names.
PHYSX_DEFAULTS: Dict[str, Any] = {
    "num_threads": 4,                 # CPU worker threads (CPU pipeline)
    "solver_type": 1,                 # 0 PGS, 1 TGS
    "num_position_iterations": 4,
    "num_velocity_iterations": 1,
    "contact_offset": 0.02,
    "rest_offset": 0.0,
    "bounce_threshold_velocity": 0.2,
    "max_depenetration_velocity": 10.0,
    "default_buffer_size_multiplier": 5.0,
    "max_gpu_contact_pairs": 8 * 1024 * 1024,
    "num_subscenes": 4,
    "contact_collection": 0,          # CC_NEVER: the tasks read no contacts
}
PHYSX_KEYS = frozenset(PHYSX_DEFAULTS) | {"always_use_articulations", "friction_correlation_distance",
                                          "friction_offset_threshold", "use_gpu"}
FLEX_DEFAULTS: Dict[str, Any] = {
    "solver_type": 5,                 # Newton PCR (GPU)
    "num_outer_iterations": 4,
    "num_inner_iterations": 15,
    "relaxation": 0.75,
    "warm_start": 0.8,
    "shape_collision_margin": 0.01,
}
FLEX_KEYS = frozenset(FLEX_DEFAULTS) | {
    "contact_regularization", "deterministic_mode", "dynamic_friction", "friction_mode",
    "geometric_stiffness", "max_rigid_contacts", "max_soft_contacts", "particle_friction",
    "return_contacts", "shape_collision_distance", "static_friction"}
DEFAULT_ENV_SPACING = 5.0  # half the side of an env's cell [m]; worlds never collide anyway


def _installed() -> bool:
    try:
        return "isaacgym" in sys.modules or importlib.util.find_spec("isaacgym") is not None
    except (ImportError, ValueError):
        return False


def isaacgym_import_problem(name: str = "physx") -> Optional[str]:
    """None when Isaac Gym is importable here, else the one-line reason it is not."""
    if gymapi is not None:
        return None
    if not _installed():
        return NOT_INSTALLED % name
    if "torch" in _IMPORT_ERROR.lower():
        return ("physics_engine=%s: Isaac Gym must be imported before torch: start the script with "
                "`from isaacgym import gymapi` (train.py does this itself)" % name)
    return "physics_engine=%s: Isaac Gym (isaacgym) failed to import: %s" % (name, _IMPORT_ERROR)


# ------------------------------------------------------------------------------------------------
# pure helpers: MJCF text, tables and index maps (no Isaac Gym needed)
# ------------------------------------------------------------------------------------------------
def _floats(text: Optional[str], default: Sequence[float]) -> List[float]:
    return [float(v) for v in text.split()] if text is not None and text.strip() else list(default)


def _fmt(values: Sequence[float]) -> str:
    return " ".join("%.9g" % v for v in values)


def _is_floating(body: ET.Element) -> bool:
    return body.find("freejoint") is not None or any(
        j.get("type") == "free" for j in body.findall("joint"))


def _dof_joints(elem: ET.Element) -> List[ET.Element]:
    return [j for j in elem.iter("joint") if j.get("type", "hinge") in ("hinge", "slide")]


class RobotAsset(NamedTuple):
    """What :func:`robot_asset_mjcf` gives ``gym.load_asset`` and ``gym.create_actor``."""

    xml: str                                   # MJCF of the robot alone
    fixed_base: bool                           # no free joint: hangs from a fixed base link
    pos: Tuple[float, float, float]            # actor pose in the env frame
    quat: Tuple[float, float, float, float]    # xyzw
    dof_names: Tuple[str, ...]                 # 1-dof joints, template names, document order
    geom_friction: Dict[str, List[float]]      # body -> sliding friction of its geoms, in order


def robot_asset_mjcf(robot: RobotPlacement) -> RobotAsset:
    """An Isaac Gym-ready MJCF of one robot template (``assets/mjcf/<robot.asset>``).

    The template's robot body and motors are kept as written; what is left out or moved: the
    template's floor and lights (the engine adds one ground plane), and the root body's position
    and orientation, which become the actor pose (template position + ``robot.pos``, as
    :func:`~qmix_isaac.sim.scene.compose_scene` places it). A root body without a free joint (its
    joints attach it to the world) is wrapped in a fixed ``<root>_base`` body, loaded with
    ``fix_base_link``; its own position stays in the MJCF and the actor pose is ``robot.pos``.
    """
    path = os.path.join(ASSET_DIR, robot.asset)
    if not os.path.isfile(path):
        raise FileNotFoundError("robot asset not found: %s" % path)
    template = ET.parse(path).getroot()
    if template.find("default") is not None:
        raise ValueError("%s: MJCF <default> classes are not supported by the Isaac Gym engine's "
                         "asset reader; write the attributes on the elements" % robot.asset)
    found = template.find("./worldbody/body[@name='%s']" % robot.root_body)
    if found is None:
        raise ValueError("asset %s has no top-level body %r" % (robot.asset, robot.root_body))
    body = copy.deepcopy(found)
    for key in ("euler", "axisangle", "xyaxes", "zaxis"):
        if key in body.attrib:
            raise ValueError("%s: root body %r sets %s; give its orientation as quat"
                             % (robot.asset, robot.root_body, key))
    base = _floats(body.get("pos"), (0.0, 0.0, 0.0))
    w, x, y, z = _floats(body.get("quat"), (1.0, 0.0, 0.0, 0.0))
    root = ET.Element("mujoco", model=os.path.splitext(robot.asset)[0])
    compiler = template.find("compiler")
    if compiler is not None:
        root.append(copy.deepcopy(compiler))
    world = ET.SubElement(root, "worldbody")
    fixed = not _is_floating(body)
    if fixed:
        holder = ET.SubElement(world, "body", name=robot.root_body + "_base", pos="0 0 0")
        ET.SubElement(holder, "inertial", pos="0 0 0", mass="1", diaginertia="0.01 0.01 0.01")
        holder.append(body)
        pos = tuple(float(p) for p in robot.pos)
        quat = (0.0, 0.0, 0.0, 1.0)
    else:
        body.set("pos", "0 0 0")
        body.attrib.pop("quat", None)
        world.append(body)
        pos = tuple(b + float(p) for b, p in zip(base, robot.pos))
        quat = (x, y, z, w)
    actuators = template.find("actuator")
    if actuators is not None:
        root.append(copy.deepcopy(actuators))
    friction: Dict[str, List[float]] = {}
    for b in body.iter("body"):
        friction[b.get("name", "")] = [_floats(g.get("friction"), (1.0,))[0] for g in b.findall("geom")]
    return RobotAsset(xml=ET.tostring(root, encoding="unicode"), fixed_base=fixed,
                      pos=(pos[0], pos[1], pos[2]), quat=quat,
                      dof_names=tuple(j.get("name", "") for j in _dof_joints(body)),
                      geom_friction=friction)


class DofTable(NamedTuple):
    """Per ``Scene.dofs`` entry, read from the scene's MJCF (radians for hinges, metres for slides)."""

    lower: List[float]        # -inf where unlimited
    upper: List[float]        # +inf where unlimited
    limited: List[bool]
    damping: List[float]
    armature: List[float]
    stiffness: List[float]
    effort_lo: List[float]    # the motors' torque range: gear x ctrlrange; 0 where unactuated
    effort_hi: List[float]


def mjcf_dof_table(xml: str, dofs: Sequence[str]) -> DofTable:
    """Joint and motor numbers of ``dofs`` in the MJCF text ``xml`` (a composed scene), the same
    numbers the MuJoCo engines read from their compiled model."""
    root = ET.fromstring(xml)
    if root.find("default") is not None:
        raise ValueError("MJCF <default> classes are not supported by the Isaac Gym engine")
    compiler = root.find("compiler")
    degrees = (compiler.get("angle", "degree") if compiler is not None else "degree") == "degree"
    joints = {j.get("name"): j for j in root.iter("joint")}
    t = DofTable([], [], [], [], [], [], [], [])
    index = {}
    for k, name in enumerate(dofs):
        j = joints.get(name)
        if j is None or j.get("type", "hinge") not in ("hinge", "slide"):
            raise ValueError("dof %r is not a hinge/slide joint of the scene" % name)
        index[name] = k
        rng = j.get("range")
        lim = j.get("limited", "auto")
        limited = lim == "true" or (lim == "auto" and rng is not None)
        scale = math.pi / 180.0 if degrees and j.get("type", "hinge") == "hinge" else 1.0
        lo, hi = _floats(rng, (0.0, 0.0))
        t.lower.append(lo * scale if limited else -math.inf)
        t.upper.append(hi * scale if limited else math.inf)
        t.limited.append(limited)
        t.damping.append(_floats(j.get("damping"), (0.0,))[0])
        t.armature.append(_floats(j.get("armature"), (0.0,))[0])
        t.stiffness.append(_floats(j.get("stiffness"), (0.0,))[0])
        t.effort_lo.append(0.0)
        t.effort_hi.append(0.0)
    actuators = root.find("actuator")
    for motor in (list(actuators) if actuators is not None else []):
        if motor.tag != "motor" or motor.get("joint") is None:
            raise ValueError("actuator <%s name=%r>: the Isaac Gym engine drives joints through "
                             "<motor joint=...> only" % (motor.tag, motor.get("name")))
        driven = index.get(motor.get("joint", ""))
        if driven is None:
            raise ValueError("motor %r drives a joint outside scene.dofs" % motor.get("name"))
        gear = _floats(motor.get("gear"), (1.0,))[0]
        crange = motor.get("ctrlrange")
        lim = motor.get("ctrllimited", "auto")
        if lim == "true" or (lim == "auto" and crange is not None):
            a, b = (gear * c for c in _floats(crange, (0.0, 0.0)))
            t.effort_lo[driven], t.effort_hi[driven] = min(a, b), max(a, b)
        else:
            t.effort_lo[driven], t.effort_hi[driven] = -math.inf, math.inf
    return t


class ActorLayout(NamedTuple):
    """Isaac Gym actors of one env, in creation order: ``(kind, index, name)`` with kind
    ``"robot"`` (index into ``scene.robots``) or ``"prop"`` (into ``scene.props``). The first
    ``num_free`` are ``Scene.actors`` in its order; fixed-base robots follow."""

    actors: List[Tuple[str, int, str]]
    num_free: int


def actor_layout(scene: Scene) -> ActorLayout:
    if not scene.robots and not scene.props and scene.actors:
        raise ValueError("the Isaac Gym engine builds worlds from scene.robots / scene.props: "
                         "compose the scene with qmix_isaac.sim.scene.compose_scene")
    by_name: Dict[str, Tuple[str, int]] = {}
    for i, r in enumerate(scene.robots):
        by_name[r.prefix + r.root_body] = ("robot", i)
    for j, p in enumerate(scene.props):
        if p.name in by_name:
            raise ValueError("two scene actors are named %r" % p.name)
        by_name[p.name] = ("prop", j)
    out: List[Tuple[str, int, str]] = []
    placed = set()
    for name in scene.actors:
        if name not in by_name:
            raise ValueError("scene actor %r is neither a robot root nor a prop" % name)
        kind, i = by_name[name]
        out.append((kind, i, name))
        placed.add((kind, i))
    num_free = len(out)
    for i, r in enumerate(scene.robots):
        if ("robot", i) not in placed:
            out.append(("robot", i, r.prefix + r.root_body))
    for j, p in enumerate(scene.props):
        if ("prop", j) not in placed:
            raise ValueError("prop %r is not among scene.actors" % p.name)
    return ActorLayout(out, num_free)


def dof_permutation(scene_dofs: Sequence[str], actors: Sequence[Tuple[str, Sequence[str]]]) -> List[int]:
    """Env-local Isaac Gym DOF index of every scene dof.

    ``actors``: per Isaac Gym actor in creation order, ``(prefix, its DOF names in Isaac Gym's
    order)``; an env's DOFs are the actors' DOFs one after the other. Scene dof ``k`` named
    ``prefix + name`` is then found at the returned ``perm[k]``.
    """
    where: Dict[str, int] = {}
    offset = 0
    for prefix, names in actors:
        for i, n in enumerate(names):
            key = prefix + n
            if key in where:
                raise ValueError("dof %r appears twice among the Isaac Gym actors" % key)
            where[key] = offset + i
        offset += len(names)
    if len(scene_dofs) != offset:
        raise ValueError("Isaac Gym loaded %d dofs per env, the scene has %d" % (offset, len(scene_dofs)))
    perm = []
    for name in scene_dofs:
        if name not in where:
            raise ValueError("scene dof %r is not a dof of the Isaac Gym actors (%s)"
                             % (name, ", ".join(sorted(where))))
        perm.append(where[name])
    if len(set(perm)) != len(perm):
        raise ValueError("two scene dofs map to one Isaac Gym dof")
    return perm


def dof_signs(lower: Sequence[float], upper: Sequence[float], limited: Sequence[bool],
              asset_lower: Sequence[float], asset_upper: Sequence[float], atol: float = 1e-4) -> List[float]:
    """+1 where Isaac Gym measures a dof as the MJCF does, -1 where it measures it about the
    opposite axis (its limits are the MJCF's mirrored: ``[-upper, -lower]``); +1 where unlimited."""
    out = []
    for k, lim in enumerate(limited):
        if not lim:
            out.append(1.0)
            continue
        lo, hi, alo, ahi = lower[k], upper[k], asset_lower[k], asset_upper[k]
        if abs(alo - lo) <= atol and abs(ahi - hi) <= atol:
            out.append(1.0)
        elif abs(alo + hi) <= atol and abs(ahi + lo) <= atol:
            out.append(-1.0)
        else:
            raise ValueError("dof %d: Isaac Gym's limits [%g, %g] are not the MJCF's [%g, %g]"
                             % (k, alo, ahi, lo, hi))
    return out


def global_actor_indices(num_envs: int, actors_per_env: int, local: Sequence[int]) -> List[int]:
    """Isaac Gym's sim-wide actor indices of actors ``local`` (per-env creation indices) in every
    env, env-major: ``env * actors_per_env + local``."""
    return [e * actors_per_env + a for e in range(num_envs) for a in local]


def root_frame_is_global(observed: torch.Tensor, placed: Sequence[float], origins: torch.Tensor,
                         atol: float = 1e-3) -> bool:
    """Whether root positions read back (``observed`` [E, 3], one actor in every env, placed at
    ``placed`` in its env) are in the sim frame (env origin added, ``origins`` [E, 3]) or in the
    env frame. With all origins at zero the two coincide: env frame."""
    p = torch.tensor([float(v) for v in placed], dtype=observed.dtype, device=observed.device)
    local = bool(((observed - p).abs() <= atol).all())
    if local:
        return False
    if bool(((observed - p - origins.to(observed)).abs() <= atol).all()):
        return True
    raise RuntimeError("Isaac Gym reports root positions neither in the env frame nor in the sim "
                       "frame (first env: %s, placed at %s)" % (observed[0].tolist(), list(placed)))


def isaacgym_sim_params(sim_cfg: Optional[Mapping[str, Any]], physics_engine: str, device: Any,
                        dt: float) -> Dict[str, Any]:
    """The sim parameters as plain values: the task config's ``sim`` block over the defaults.

    ``dt`` is the scene's timestep; ``use_gpu_pipeline`` and ``physx.use_gpu`` follow the device
    (CUDA: physics and tensors on the GPU; CPU: PhysX on CPU threads, CPU tensors). Other keys
    of the ``sim`` block belong to other engines (``integrator``: MuJoCo's); an unknown key in the
    ``physx`` / ``flex`` blocks is an error (one line) rather than a silently ignored setting.
    """
    cfg = dict(sim_cfg or {})
    if physics_engine not in ("physx", "flex"):
        raise ValueError("physics_engine must be physx or flex for Isaac Gym (got %r)" % physics_engine)
    cuda = torch.device(device).type == "cuda"
    if physics_engine == "flex" and not cuda:
        raise ValueError("physics_engine=flex runs on the GPU only; use sim_device=cuda:N "
                         "(or physics_engine=physx on the CPU)")
    up = str(cfg.get("up_axis", "z")).lower()
    if up != "z":
        raise ValueError("sim.up_axis must be z (the MJCF assets are z-up), got %r" % up)
    gravity = [float(g) for g in cfg.get("gravity", (0.0, 0.0, -9.81))]
    if len(gravity) != 3:
        raise ValueError("sim.gravity needs 3 numbers, got %s" % (gravity,))
    substeps = int(cfg.get("substeps", 2))
    if substeps < 1:
        raise ValueError("sim.substeps must be >= 1 (got %d)" % substeps)
    out: Dict[str, Any] = {"dt": float(dt), "substeps": substeps, "up_axis": "z", "gravity": gravity,
                           "use_gpu_pipeline": cuda,
                           "num_client_threads": int(cfg.get("num_client_threads", 0))}
    for key, defaults, allowed in (("physx", PHYSX_DEFAULTS, PHYSX_KEYS), ("flex", FLEX_DEFAULTS, FLEX_KEYS)):
        block = dict(cfg.get(key) or {})
        bad = sorted(set(block) - allowed)
        if bad:
            raise ValueError("unknown sim.%s key(s): %s" % (key, ", ".join(bad)))
        merged = dict(defaults)
        merged.update(block)
        out[key] = merged
    out["physx"]["use_gpu"] = cuda
    return out


# ------------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------------
class IsaacGymEngine(Engine):
    """E worlds of one scene on Isaac Gym (PhysX on CPU or GPU, FleX on GPU)."""

    name = "physx"

    def __init__(self, scene: Scene, num_envs: int, device: Any = "cuda:0", *,
                 physics_engine: str = "physx", sim_cfg: Optional[Mapping[str, Any]] = None,
                 headless: bool = True, graphics_device_id: int = 0,
                 env_spacing: Optional[float] = None, sync_free_resets: bool = True) -> None:
        problem = isaacgym_import_problem(physics_engine)
        if problem:
            raise RuntimeError(problem)
        from isaacgym import gymtorch  # builds its torch extension on first use

        super().__init__(scene, num_envs, device)
        if self.device.type == "cuda":  # indexed by Engine.__init__
            compute_device = int(self.device.index)
        elif self.device.type == "cpu":
            compute_device = 0
        else:
            raise ValueError("the Isaac Gym engine runs on cpu or cuda, not %s" % self.device)
        self.name = physics_engine
        self.params = isaacgym_sim_params(sim_cfg, physics_engine, self.device, self.dt)
        self.gpu_pipeline = bool(self.params["use_gpu_pipeline"])
        self.sync_free_resets = bool(sync_free_resets)
        self._gymtorch = gymtorch
        self.gym = gymapi.acquire_gym()
        self.viewer: Optional[gymapi.Viewer] = None
        self.viewer_sync = True
        self.quit_requested = False
        self._last_frame = 0.0
        self._frame_dt = self.dt
        E = self.num_envs

        # -- sim and ground ----------------------------------------------------------------------
        graphics = -1 if headless else int(graphics_device_id)
        kind = gymapi.SIM_PHYSX if physics_engine == "physx" else gymapi.SIM_FLEX
        sim = self.gym.create_sim(compute_device, graphics, kind, self._sim_params())
        if sim is None:
            raise RuntimeError("Isaac Gym could not create a %s sim on %s" % (physics_engine, self.device))
        self.sim: gymapi.Sim = sim
        plane = gymapi.PlaneParams()
        plane.normal = gymapi.Vec3(0.0, 0.0, 1.0)
        plane.static_friction = float(scene.floor_friction)
        plane.dynamic_friction = float(scene.floor_friction)
        plane.restitution = 0.0
        self.gym.add_ground(self.sim, plane)

        # -- assets --------------------------------------------------------------------------------
        self.layout = layout = actor_layout(scene)
        self.table = table = mjcf_dof_table(scene.xml, scene.dofs)
        if len(scene.robots) > 30:
            raise ValueError("the Isaac Gym engine gives each robot a collision filter bit: at most "
                             "30 robots per world (got %d)" % len(scene.robots))
        robot_specs = [robot_asset_mjcf(r) for r in scene.robots]  # pose per robot
        loaded: Dict[Tuple[str, str], gymapi.Asset] = {}  # one asset per template
        for r, spec in zip(scene.robots, robot_specs):
            if (r.asset, r.root_body) not in loaded:
                loaded[(r.asset, r.root_body)] = self._load_robot(spec)
        prop_assets = [self._make_box(p.half_size, p.mass, p.friction) for p in scene.props]

        # -- envs and actors -----------------------------------------------------------------------
        spacing = float(env_spacing) if env_spacing is not None else DEFAULT_ENV_SPACING
        lower = gymapi.Vec3(-spacing, -spacing, 0.0)
        upper = gymapi.Vec3(spacing, spacing, spacing)
        per_row = max(1, int(math.sqrt(E)))
        self.envs: List[gymapi.Env] = []
        self.actor_handles: List[List[int]] = []
        self.actors_per_env = G = len(layout.actors)
        poses: List[Tuple[float, float, float]] = []
        specs: List[Optional[Tuple[gymapi.Asset, RobotAsset]]] = []
        for kind_name, i, _ in layout.actors:
            if kind_name == "robot":
                r, spec = scene.robots[i], robot_specs[i]
                poses.append(spec.pos)
                specs.append((loaded[(r.asset, r.root_body)], spec))
            else:
                p = scene.props[i]
                poses.append((float(p.pos[0]), float(p.pos[1]), float(p.pos[2])))
                specs.append(None)
        dof_props: Dict[int, Any] = {}  # actor slot -> the DOF property array all envs share
        for e in range(E):
            env = self.gym.create_env(self.sim, lower, upper, per_row)
            handles = []
            for slot, (kind_name, i, name) in enumerate(layout.actors):
                pose = gymapi.Transform()
                pose.p = gymapi.Vec3(*poses[slot])
                got = specs[slot]
                if got is not None:
                    asset, spec = got
                    pose.r = gymapi.Quat(*spec.quat)
                    # own filter bit: no self-collision, contacts with teammates and props
                    h = self.gym.create_actor(env, asset, pose, name, e, 1 << i, 0)
                    if slot not in dof_props:
                        dof_props[slot] = self._dof_properties(env, h, scene.robots[i].prefix, spec)
                    self.gym.set_actor_dof_properties(env, h, dof_props[slot])
                else:
                    h = self.gym.create_actor(env, prop_assets[i], pose, name, e, 0, 0)
                handles.append(h)
            self.envs.append(env)
            self.actor_handles.append(handles)
        for e in (0, E - 1):  # the index arithmetic the tensors are sliced by
            for a in range(G):
                got_index = self.gym.get_actor_index(self.envs[e], self.actor_handles[e][a], gymapi.DOMAIN_SIM)
                if got_index != e * G + a:
                    raise RuntimeError("Isaac Gym put actor %d of env %d at index %d, not %d"
                                       % (a, e, got_index, e * G + a))
        if not self.gym.prepare_sim(self.sim):
            raise RuntimeError("Isaac Gym could not prepare the sim")

        # -- dof order and signs -------------------------------------------------------------------
        env0 = self.envs[0]
        per_actor: List[Tuple[str, List[str]]] = []
        dof_slots: List[int] = []
        for slot, (kind_name, i, _) in enumerate(layout.actors):
            names = list(self.gym.get_actor_dof_names(env0, self.actor_handles[0][slot])) \
                if kind_name == "robot" else []
            if names:
                dof_slots.append(slot)
            per_actor.append((scene.robots[i].prefix if kind_name == "robot" else "", names))
        self.dof_perm = dof_permutation(scene.dofs, per_actor)
        asset_lo, asset_hi = [0.0] * self.num_dof, [0.0] * self.num_dof
        offset = 0
        for slot, (prefix, names) in enumerate(per_actor):
            if names:
                props = self.gym.get_actor_dof_properties(env0, self.actor_handles[0][slot])
                for n in range(len(names)):
                    asset_lo[offset + n] = float(props["lower"][n])
                    asset_hi[offset + n] = float(props["upper"][n])
            offset += len(names)
        self.dof_sign = dof_signs(table.lower, table.upper, table.limited,
                                  [asset_lo[g] for g in self.dof_perm], [asset_hi[g] for g in self.dof_perm])
        dev = self.device
        self._perm = torch.tensor(self.dof_perm, dtype=torch.long, device=dev)
        self._sign = torch.tensor(self.dof_sign, dtype=torch.float32, device=dev)
        self._direct_dofs = self.dof_perm == list(range(self.num_dof)) and all(s > 0 for s in self.dof_sign)

        # -- tensors -------------------------------------------------------------------------------
        self._root_tensor = gymtorch.wrap_tensor(self.gym.acquire_actor_root_state_tensor(self.sim))
        self._dof_tensor = gymtorch.wrap_tensor(self.gym.acquire_dof_state_tensor(self.sim))
        if tuple(self._root_tensor.shape) != (E * G, 13):
            raise RuntimeError("Isaac Gym root state tensor has shape %s, expected (%d, 13)"
                               % (tuple(self._root_tensor.shape), E * G))
        if tuple(self._dof_tensor.shape) != (E * self.num_dof, 2):
            raise RuntimeError("Isaac Gym dof state tensor has shape %s, expected (%d, 2)"
                               % (tuple(self._dof_tensor.shape), E * self.num_dof))
        self._root_all = self._root_tensor.view(E, G, 13)
        self._dof_state = self._dof_tensor.view(E, self.num_dof, 2)
        self._stale = True  # Isaac Gym's tensors lag the simulation until the next refresh
        self._pull()
        origins = torch.tensor([[o.x, o.y, o.z] for o in (self.gym.get_env_origin(env) for env in self.envs)],
                               dtype=torch.float32)
        global_frame = layout.num_free > 0 and root_frame_is_global(
            self._root_all[:, 0, 0:3].detach().cpu(), poses[0], origins)
        self._origin = origins.to(dev).view(E, 1, 3) if global_frame else None
        n_free = layout.num_free
        # PhysX reports a body's linear velocity at its centre of mass; the views give it at the
        # body origin (the engine contract: qmix_isaac/sim/base.py). Root links whose COM is their origin need no conversion.
        com = [self.gym.get_actor_rigid_body_properties(env0, self.actor_handles[0][slot])[0].com
               for slot in range(n_free)]
        self._com = torch.tensor([[c.x, c.y, c.z] for c in com], dtype=torch.float32, device=dev).view(n_free, 3)
        self._com_at_origin = bool((self._com.abs() < 1e-7).all())
        self._direct_roots = self._origin is None and self._com_at_origin
        if self._direct_roots:  # zero-copy views of Isaac Gym's tensors
            self.root_states = self._root_all[:, :n_free]
        else:
            self.root_states = torch.zeros(E, n_free, 13, device=dev)
        if self._direct_dofs:
            self.dof_pos = self._dof_state[..., 0]
            self.dof_vel = self._dof_state[..., 1]
        else:
            self.dof_pos = torch.zeros(E, self.num_dof, device=dev)
            self.dof_vel = torch.zeros(E, self.num_dof, device=dev)
        self.diverged = torch.zeros(E, dtype=torch.bool, device=dev)

        # every world's free actors / dof-carrying actors, for the indexed setters (int32)
        self._root_idx = torch.tensor(global_actor_indices(E, G, range(n_free)), dtype=torch.int32, device=dev)
        self._dof_idx = torch.tensor(global_actor_indices(E, G, dof_slots), dtype=torch.int32, device=dev)
        self._n_free, self._n_dof_actors = n_free, len(dof_slots)

        # -- limits, actuation, initial state ------------------------------------------------------
        self._effort_lo = torch.tensor(table.effort_lo, dtype=torch.float32, device=dev)
        self._effort_hi = torch.tensor(table.effort_hi, dtype=torch.float32, device=dev)
        self.dof_effort_limit = torch.maximum(self._effort_lo.abs(), self._effort_hi.abs())
        self.dof_lower = torch.tensor(table.lower, dtype=torch.float32, device=dev)
        self.dof_upper = torch.tensor(table.upper, dtype=torch.float32, device=dev)
        self._forces = torch.zeros(E, self.num_dof, dtype=torch.float32, device=dev)
        # viscous joint damping, explicit (module docstring), in Isaac Gym's dof order
        kd = [0.0] * self.num_dof
        for k, g in enumerate(self.dof_perm):
            kd[g] = float(table.damping[k])
        self._kd = torch.tensor(kd, dtype=torch.float32, device=dev) if any(kd) else None
        self._command = torch.zeros_like(self._forces) if self._kd is not None else self._forces
        self._publish()
        self.initial_root_states = self.root_states[0].clone()
        self.initial_root_states[:, 7:13] = 0.0
        self.initial_dof_pos = self.dof_pos[0].clone()

        if not headless:
            self._open_viewer()

    # -- construction helpers ---------------------------------------------------------------------
    def _sim_params(self) -> gymapi.SimParams:
        p = self.params
        sp = gymapi.SimParams()
        sp.dt = p["dt"]
        sp.substeps = p["substeps"]
        sp.up_axis = gymapi.UP_AXIS_Z
        sp.gravity = gymapi.Vec3(*p["gravity"])
        sp.use_gpu_pipeline = p["use_gpu_pipeline"]
        sp.num_client_threads = p["num_client_threads"]
        for key, value in p["physx"].items():
            if key == "contact_collection":
                value = gymapi.ContactCollection(int(value))
            setattr(sp.physx, key, value)
        for key, value in p["flex"].items():
            setattr(sp.flex, key, value)
        return sp

    def _load_robot(self, spec: RobotAsset) -> gymapi.Asset:
        opts = gymapi.AssetOptions()
        opts.fix_base_link = spec.fixed_base
        opts.default_dof_drive_mode = int(gymapi.DOF_MODE_EFFORT)
        opts.collapse_fixed_joints = False
        opts.angular_damping = 0.0      # MuJoCo has no body velocity damping
        opts.linear_damping = 0.0
        opts.max_angular_velocity = 1000.0
        opts.max_linear_velocity = 1000.0
        opts.armature = 0.0
        opts.use_physx_armature = True  # MJCF armature is joint-space, as PhysX's
        folder = tempfile.mkdtemp(prefix="qmix_isaac_asset_")
        try:
            name = "robot.xml"
            with open(os.path.join(folder, name), "w") as f:
                f.write(spec.xml)
            asset = self.gym.load_asset(self.sim, folder, name, opts)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if asset is None:
            raise RuntimeError("Isaac Gym could not load the robot asset %s" % spec.dof_names)
        shapes = self.gym.get_asset_rigid_shape_properties(asset)
        ranges = self.gym.get_asset_rigid_body_shape_indices(asset)
        bodies = self.gym.get_asset_rigid_body_names(asset)
        for b, rng in zip(bodies, ranges):
            frictions = spec.geom_friction.get(b)
            if frictions is None or len(frictions) != rng.count:
                continue  # a body Isaac Gym added, or merged geoms: keep the importer's values
            for k in range(rng.count):
                shapes[rng.start + k].friction = frictions[k]
                shapes[rng.start + k].rolling_friction = 0.0
                shapes[rng.start + k].torsion_friction = 0.0
                shapes[rng.start + k].restitution = 0.0
        self.gym.set_asset_rigid_shape_properties(asset, shapes)
        return asset

    def _make_box(self, half: Sequence[float], mass: float, friction: float) -> gymapi.Asset:
        opts = gymapi.AssetOptions()
        opts.density = float(mass) / (8.0 * half[0] * half[1] * half[2])
        opts.angular_damping = 0.0
        opts.linear_damping = 0.0
        opts.max_angular_velocity = 1000.0
        opts.max_linear_velocity = 1000.0
        asset = self.gym.create_box(self.sim, 2.0 * half[0], 2.0 * half[1], 2.0 * half[2], opts)
        shapes = self.gym.get_asset_rigid_shape_properties(asset)
        for s in shapes:
            s.friction = float(friction)
            s.rolling_friction = 0.0
            s.torsion_friction = 0.0
            s.restitution = 0.0
        self.gym.set_asset_rigid_shape_properties(asset, shapes)
        return asset

    def _dof_properties(self, env: gymapi.Env, actor: int, prefix: str, spec: RobotAsset) -> Any:
        """The robot's DOF properties from the MJCF: effort drive, joint stiffness / armature,
        no damping (applied by the engine: module docstring), the motors' torque limit, no joint
        friction or speed limit (Isaac Gym names the
        DOFs as the template does; the scene's names carry the robot's prefix)."""
        props = self.gym.get_actor_dof_properties(env, actor)
        names = self.gym.get_actor_dof_names(env, actor)
        k_of = {n: k for k, n in enumerate(self.scene.dofs)}
        t = self.table
        for d, n in enumerate(names):
            k = k_of.get(prefix + n)
            if k is None:
                raise ValueError("Isaac Gym dof %r of %s is not a scene dof" % (n, prefix))
            props["driveMode"][d] = int(gymapi.DOF_MODE_EFFORT)
            props["stiffness"][d] = t.stiffness[k]
            props["damping"][d] = 0.0              # the engine applies the MJCF's (simulate)
            props["armature"][d] = t.armature[k]
            props["friction"][d] = 0.0
            props["velocity"][d] = 1000.0          # MuJoCo has no joint speed limit
            effort = max(abs(t.effort_lo[k]), abs(t.effort_hi[k]))
            if math.isfinite(effort) and effort > 0:
                props["effort"][d] = effort
        return props

    # -- the engine interface ---------------------------------------------------------------------
    def _pull(self) -> None:
        """Isaac Gym's tensors <- the simulation, once per simulate(). Not after set_state: the
        tensors then hold the state just written, which Isaac Gym may apply only at the next step."""
        if self._stale:
            self.gym.refresh_actor_root_state_tensor(self.sim)
            self.gym.refresh_dof_state_tensor(self.sim)
            self._stale = False

    def _publish(self) -> None:
        """The task-facing views <- Isaac Gym's tensors, where they are not the same memory."""
        if not self._direct_roots:
            self.root_states.copy_(self._to_task_frame(self._root_all[:, :self._n_free]))
        if not self._direct_dofs:
            self.dof_pos.copy_(self._dof_state[..., 0].index_select(1, self._perm) * self._sign)
            self.dof_vel.copy_(self._dof_state[..., 1].index_select(1, self._perm) * self._sign)

    def _com_offset(self, rs: torch.Tensor) -> torch.Tensor:
        """omega x (R com): COM velocity minus body-origin velocity, [E, n_free, 3]."""
        quat = rs[..., 3:7]
        return torch.cross(rs[..., 10:13], quat_rotate(quat, self._com.expand(quat.shape[:-1] + (3,))), dim=-1)

    def _to_task_frame(self, rs: torch.Tensor) -> torch.Tensor:
        """Isaac Gym root states -> the views' (env frame, body-origin velocity)."""
        parts = [rs[..., 0:3] - self._origin if self._origin is not None else rs[..., 0:3], rs[..., 3:7],
                 rs[..., 7:10] - self._com_offset(rs) if not self._com_at_origin else rs[..., 7:10],
                 rs[..., 10:13]]
        return torch.cat(parts, -1)

    def _to_gym_frame(self, rs: torch.Tensor) -> torch.Tensor:
        parts = [rs[..., 0:3] + self._origin if self._origin is not None else rs[..., 0:3], rs[..., 3:7],
                 rs[..., 7:10] + self._com_offset(rs) if not self._com_at_origin else rs[..., 7:10],
                 rs[..., 10:13]]
        return torch.cat(parts, -1)

    def set_dof_torques(self, torques: torch.Tensor) -> None:
        t = torques.to(device=self.device, dtype=torch.float32)
        t = torch.minimum(torch.maximum(t, self._effort_lo), self._effort_hi)
        if self._direct_dofs:
            self._command.copy_(t)
        else:
            self._command.index_copy_(1, self._perm, t * self._sign)
        if self._kd is None:  # else simulate() adds the damping and hands the forces over
            self.gym.set_dof_actuation_force_tensor(self.sim, self._gymtorch.unwrap_tensor(self._forces))

    def simulate(self, steps: int = 1) -> None:
        for _ in range(int(steps)):
            if self._kd is not None:  # the motors' torques plus the joints' viscous damping
                self._pull()
                torch.addcmul(self._command, self._kd, self._dof_state[..., 1], value=-1.0,
                              out=self._forces)
                self.gym.set_dof_actuation_force_tensor(self.sim, self._gymtorch.unwrap_tensor(self._forces))
            self.gym.simulate(self.sim)
            if not self.gpu_pipeline:
                self.gym.fetch_results(self.sim, True)
            self._stale = True
        if self.viewer is not None:
            self._frame_dt = steps * self.dt
            self.render()

    def refresh(self) -> None:
        self._pull()
        self._publish()

    def healthy(self) -> torch.Tensor:
        self._pull()
        return torch.isfinite(self._root_all).flatten(1).all(1) & \
            torch.isfinite(self._dof_state).flatten(1).all(1) & ~self.diverged

    def set_state(self, mask: torch.Tensor, root_states: Optional[torch.Tensor] = None,
                  dof_pos: Optional[torch.Tensor] = None, dof_vel: Optional[torch.Tensor] = None) -> None:
        mask = mask.to(device=self.device, dtype=torch.bool)
        self._pull()  # the current state of every world, written back where mask is False
        E = self.num_envs
        unwrap = self._gymtorch.unwrap_tensor
        if not self.sync_free_resets:  # only the masked worlds' actors: one host sync (count)
            root_idx = self._root_idx.view(E, self._n_free)[mask].flatten()
            dof_idx = self._dof_idx.view(E, self._n_dof_actors)[mask].flatten()
            n_root, n_dof = int(root_idx.numel()), int(dof_idx.numel())
        else:
            root_idx, dof_idx = self._root_idx, self._dof_idx
            n_root, n_dof = E * self._n_free, E * self._n_dof_actors
        if root_states is not None and self._n_free:
            rs = root_states.to(device=self.device, dtype=torch.float32)
            if not self._direct_roots:
                rs = self._to_gym_frame(rs)
            cur = self._root_all[:, :self._n_free]
            cur.copy_(torch.where(mask.view(E, 1, 1), rs, cur))
            if n_root:
                self.gym.set_actor_root_state_tensor_indexed(self.sim, unwrap(self._root_tensor),
                                                             unwrap(root_idx), n_root)
        if (dof_pos is not None or dof_vel is not None) and self.num_dof:
            m = mask.view(E, 1)
            for col, value in ((0, dof_pos), (1, dof_vel)):
                if value is None:
                    continue
                v = value.to(device=self.device, dtype=torch.float32)
                cur = self._dof_state[..., col]
                if self._direct_dofs:
                    new = v
                else:
                    new = cur.clone()
                    new.index_copy_(1, self._perm, v * self._sign)
                cur.copy_(torch.where(m, new, cur))
            if n_dof:
                self.gym.set_dof_state_tensor_indexed(self.sim, unwrap(self._dof_tensor),
                                                      unwrap(dof_idx), n_dof)
        self._publish()

    # -- viewer ----------------------------------------------------------------------------------
    def _open_viewer(self) -> None:
        viewer = self.gym.create_viewer(self.sim, gymapi.CameraProperties())
        if viewer is None:
            raise RuntimeError("Isaac Gym could not open a viewer window (no display?); use headless=True")
        self.viewer = viewer
        self.gym.subscribe_viewer_keyboard_event(viewer, gymapi.KEY_ESCAPE, "QUIT")
        self.gym.subscribe_viewer_keyboard_event(viewer, gymapi.KEY_V, "toggle_viewer_sync")
        self.gym.viewer_camera_look_at(viewer, self.envs[0], gymapi.Vec3(3.5, -5.0, 3.0),
                                       gymapi.Vec3(0.0, 0.0, 0.3))
        print("[qmix-isaac] Isaac Gym viewer: ESC quits, V toggles real-time sync", flush=True)

    def render(self) -> bool:
        """Draw the current frame and handle the keys (ESC quits the viewer, V toggles real-time
        sync). False when there is no viewer (headless, or it was closed / quit)."""
        viewer = self.viewer
        if viewer is None:
            return False
        if self.gym.query_viewer_has_closed(viewer):
            self._close_viewer()
            return False
        for event in self.gym.query_viewer_action_events(viewer):
            if event.action == "QUIT" and event.value > 0:
                self.quit_requested = True
                self._close_viewer()
                return False
            if event.action == "toggle_viewer_sync" and event.value > 0:
                self.viewer_sync = not self.viewer_sync
        if self.gpu_pipeline:
            self.gym.fetch_results(self.sim, True)
        if self.viewer_sync:
            self.gym.step_graphics(self.sim)
            self.gym.draw_viewer(viewer, self.sim, True)
            self.gym.sync_frame_time(self.sim)
            wait = self._frame_dt - (time.perf_counter() - self._last_frame)
            if wait > 0:  # one frame per simulate() call: real time at the policy rate
                time.sleep(wait)
            self._last_frame = time.perf_counter()
        else:
            self.gym.poll_viewer_events(viewer)
        return True

    def _close_viewer(self) -> None:
        if self.viewer is not None:
            self.gym.destroy_viewer(self.viewer)
            self.viewer = None

    def close(self) -> None:
        self._close_viewer()
        sim = getattr(self, "sim", None)
        if sim is not None:
            self.gym.destroy_sim(sim)
            self.sim = None  # type: ignore[assignment]

    # -- checks ------------------------------------------------------------------------------------
    def actor_masses(self) -> Dict[str, float]:
        """Total mass of each actor (env 0) as Isaac Gym simulates it, by scene actor name."""
        out = {}
        for slot, (_, _, name) in enumerate(self.layout.actors):
            bodies = self.gym.get_actor_rigid_body_properties(self.envs[0], self.actor_handles[0][slot])
            out[name] = float(sum(b.mass for b in bodies))
        return out

    def model_mismatches(self, atol: float = 1e-4) -> List[str]:
        """Where the loaded actors differ from the MJCF: DOF limits (up to the axis sign the engine
        accounts for), drive mode, damping (none: the engine applies it), armature and effort
        limits (env 0)."""
        out: List[str] = []
        t = self.table
        k_of = {n: k for k, n in enumerate(self.scene.dofs)}
        for slot, (kind_name, i, name) in enumerate(self.layout.actors):
            if kind_name != "robot":
                continue
            env, h = self.envs[0], self.actor_handles[0][slot]
            props = self.gym.get_actor_dof_properties(env, h)
            for d, n in enumerate(self.gym.get_actor_dof_names(env, h)):
                k = k_of[self.scene.robots[i].prefix + n]
                s = self.dof_sign[k]
                if t.limited[k]:
                    lo, hi = (t.lower[k], t.upper[k]) if s > 0 else (-t.upper[k], -t.lower[k])
                    if abs(float(props["lower"][d]) - lo) > atol or abs(float(props["upper"][d]) - hi) > atol:
                        out.append("%s: limits [%g, %g] vs MJCF [%g, %g]" % (
                            self.scene.dofs[k], props["lower"][d], props["upper"][d], lo, hi))
                if int(props["driveMode"][d]) != int(gymapi.DOF_MODE_EFFORT):
                    out.append("%s: drive mode %s, not effort" % (self.scene.dofs[k], props["driveMode"][d]))
                for field, want in (("damping", 0.0), ("armature", t.armature[k])):
                    if abs(float(props[field][d]) - want) > atol * (1.0 + abs(want)):
                        out.append("%s: %s %g vs MJCF %g" % (self.scene.dofs[k], field, props[field][d], want))
                limit = float(self.dof_effort_limit[k])
                if math.isfinite(limit) and limit > 0 and abs(float(props["effort"][d]) - limit) > atol * limit:
                    out.append("%s: effort %g vs MJCF %g" % (self.scene.dofs[k], props["effort"][d], limit))
        return out
