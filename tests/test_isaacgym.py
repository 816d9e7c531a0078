"""The Isaac Gym engine (physics_engine=physx / flex) and IsaacGymEnvs compatibility (issue 5).

Everywhere: the engine's pure parts (Isaac Gym-ready MJCF, joint/motor tables read the same as
MuJoCo's, actor layout, DOF permutation and signs, global indices, env-frame detection, sim
parameters); the whole engine and both tasks on a fake Isaac Gym (tests/fake_isaacgym.py: Isaac
Gym's tensor/index/property contract without physics, also in its inconvenient variants: DOFs
reordered or mirrored, sim-frame positions, COM velocities, writes landing at the next step), which
checks views, masked resets, torque routing and the viewer keys; the one-line errors when Isaac Gym
is missing (``qmix_isaac.make`` and ``train.py``); ``qmix_isaac.make`` taking
``isaacgymenvs.make``'s arguments; and the type check of the engine against the PyPI
``isaacgym-stubs`` (mypy, Python 3.8 target; vermin for 3.8 syntax).

Where Isaac Gym is installed (Python 3.8, NVIDIA's Preview 4): both tasks build and step on
physx, with the documented shapes and devices; a masked reset leaves the other worlds bit-identical;
ants stand; a ball pushed by its motor speeds up as its joint damping allows; the simulated masses
are the MJCF's. Isaac Gym must be imported before torch, and pytest's process has torch already
(conftest.py), so each of those checks runs this file as a script in a fresh process:
``python tests/test_isaacgym.py <check> [args]`` (CUDA when present, else the CPU pipeline).
"""
if __name__ == "__main__":  # a check in a fresh process: Isaac Gym first, then torch
    from isaacgym import gymapi  # noqa: F401

import importlib.util
import inspect
import math
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import qmix_isaac  # noqa: E402
import qmix_isaac.config  # noqa: E402,F401
from qmix_isaac.sim import isaacgym_engine as ige  # noqa: E402
from qmix_isaac.sim.scene import Prop, RobotPlacement, compose_scene  # noqa: E402

HAVE_ISAACGYM = "isaacgym" in sys.modules or importlib.util.find_spec("isaacgym") is not None


def _have_stubs():
    from importlib import metadata
    try:
        metadata.distribution("isaacgym-stubs")
        return True
    except metadata.PackageNotFoundError:
        return False


HAVE_STUBS = _have_stubs()
NO_ISAACGYM = "Isaac Gym (isaacgym) is not installed: it is not on PyPI and needs Python 3.8"
needs_isaacgym = pytest.mark.skipif(not HAVE_ISAACGYM, reason=NO_ISAACGYM)
without_isaacgym = pytest.mark.skipif(HAVE_ISAACGYM, reason="checks the message shown without Isaac Gym")
DT = 0.01


def ant_scene(n=2):
    return compose_scene([RobotPlacement("ant.xml", "torso", "ant%d_" % i, (i * 1.5 - 0.75, 0, 0)) for i in range(n)],
                         [Prop("box", (0.3, 0.3, 0.2), 2.0, 0.5, (0, 2, 0.2))], timestep=DT)


def ball_scene(n=2):
    return compose_scene([RobotPlacement("ball_robot.xml", "ball", "ball%d_" % i, (i * 1.0 - 0.5, 0, 0))
                          for i in range(n)],
                         [Prop("box", (0.3, 0.3, 0.2), 1.0, 0.5, (0, 1, 0.2))], timestep=DT)


SCENES = {"ants": ant_scene, "balls": ball_scene}


# =================================================================================================
# 1. pure parts, on any machine
# =================================================================================================
def test_ant_asset_is_the_template_robot_alone():
    import xml.etree.ElementTree as ET
    spec = ige.robot_asset_mjcf(RobotPlacement("ant.xml", "torso", "ant1_", (0.75, -3.0, 0.0)))
    root = ET.fromstring(spec.xml)
    assert not spec.fixed_base
    assert spec.pos == pytest.approx((0.75, -3.0, 0.75))          # template z 0.75 + placement
    assert spec.quat == (0.0, 0.0, 0.0, 1.0)
    assert root.find("./worldbody/geom") is None                  # no floor: the engine adds a plane
    torso = root.find("./worldbody/body")
    assert torso.get("name") == "torso" and torso.get("pos") == "0 0 0"
    assert torso.find("freejoint") is not None
    assert root.find("compiler").get("angle") == "degree"
    assert spec.dof_names == ("hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4")
    assert [m.get("joint") for m in root.find("actuator")] == list(spec.dof_names)
    assert spec.geom_friction["torso"] == [1.5] and spec.geom_friction["fl_shin"] == [1.5]


def test_ball_asset_hangs_from_a_fixed_base():
    import xml.etree.ElementTree as ET
    spec = ige.robot_asset_mjcf(RobotPlacement("ball_robot.xml", "ball", "ball0_", (-0.5, 0.0, 0.0)))
    root = ET.fromstring(spec.xml)
    assert spec.fixed_base and spec.pos == (-0.5, 0.0, 0.0)
    base = root.find("./worldbody/body")
    assert base.get("name") == "ball_base" and base.find("inertial") is not None
    ball = base.find("body")
    assert ball.get("name") == "ball" and ball.get("pos") == "0 0 0.151"   # its own offset stays
    assert spec.dof_names == ("slide_x", "slide_y")


def test_asset_errors_are_one_line():
    with pytest.raises(ValueError, match="no top-level body") as info:
        ige.robot_asset_mjcf(RobotPlacement("ant.xml", "nope", "a_"))
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        ige.robot_asset_mjcf(RobotPlacement("missing.xml", "torso", "a_"))


@pytest.mark.parametrize("scene", ["ants", "balls"])
def test_dof_table_reads_what_mujoco_compiles(scene):
    """Limits (radians), motor ranges: the numbers the MuJoCo engine reads from its compile."""
    from qmix_isaac.sim.mujoco_engine import MujocoEngine
    sc = SCENES[scene]()
    ref = MujocoEngine(sc, 1, torch_threads=None)
    t = ige.mjcf_dof_table(sc.xml, sc.dofs)
    f64 = torch.float64
    assert torch.allclose(torch.tensor(t.lower, dtype=f64), ref.dof_lower.double(), atol=1e-6)
    assert torch.allclose(torch.tensor(t.upper, dtype=f64), ref.dof_upper.double(), atol=1e-6)
    limit = torch.maximum(torch.tensor(t.effort_lo, dtype=f64).abs(), torch.tensor(t.effort_hi, dtype=f64).abs())
    assert torch.allclose(limit, ref.dof_effort_limit.double(), atol=1e-6)
    m = ref.model
    jid = [ref._mj.mj_name2id(m, ref._mj.mjtObj.mjOBJ_JOINT, n) for n in sc.dofs]
    assert t.damping == pytest.approx([float(m.dof_damping[m.jnt_dofadr[j]]) for j in jid])
    assert t.armature == pytest.approx([float(m.dof_armature[m.jnt_dofadr[j]]) for j in jid])
    assert t.limited == [bool(m.jnt_limited[j]) for j in jid]
    ref.close()


def test_dof_table_rejects_what_it_cannot_read():
    sc = ball_scene(1)
    with pytest.raises(ValueError, match="not a hinge/slide"):
        ige.mjcf_dof_table(sc.xml, ("ball0_nope",))
    xml = sc.xml.replace("<motor ", "<position ")
    with pytest.raises(ValueError, match="motor"):
        ige.mjcf_dof_table(xml, sc.dofs)


def test_actor_layout_free_actors_first():
    ants = ige.actor_layout(ant_scene())
    assert ants.actors == [("robot", 0, "ant0_torso"), ("robot", 1, "ant1_torso"), ("prop", 0, "box")]
    assert ants.num_free == 3
    balls = ige.actor_layout(ball_scene())    # the balls have no free joint: after the box
    assert balls.actors == [("prop", 0, "box"), ("robot", 0, "ball0_ball"), ("robot", 1, "ball1_ball")]
    assert balls.num_free == 1
    sc = ball_scene()
    bare = type(sc)(xml=sc.xml, actors=sc.actors, dofs=sc.dofs, timestep=sc.timestep,
                    integrator=sc.integrator, floor_friction=sc.floor_friction)
    with pytest.raises(ValueError, match="compose_scene"):
        ige.actor_layout(bare)


def test_dof_permutation():
    scene_dofs = ["a_x", "a_y", "b_x", "b_y"]
    assert ige.dof_permutation(scene_dofs, [("", []), ("a_", ["x", "y"]), ("b_", ["x", "y"])]) == [0, 1, 2, 3]
    # Isaac Gym listing an actor's dofs in another order, and the actors in another order
    assert ige.dof_permutation(scene_dofs, [("b_", ["y", "x"]), ("a_", ["x", "y"])]) == [2, 3, 1, 0]
    with pytest.raises(ValueError, match="not a dof"):
        ige.dof_permutation(scene_dofs, [("a_", ["x", "y"]), ("b_", ["x", "z"])])
    with pytest.raises(ValueError, match="loaded 3 dofs"):
        ige.dof_permutation(scene_dofs, [("a_", ["x", "y"]), ("b_", ["x"])])
    with pytest.raises(ValueError, match="twice"):
        ige.dof_permutation(scene_dofs, [("a_", ["x", "x"]), ("b_", ["x", "y"])])


def test_dof_permutation_of_the_task_scenes_is_identity_when_isaac_gym_keeps_mjcf_order():
    for sc in (ant_scene(), ball_scene()):
        lay = ige.actor_layout(sc)
        actors = []
        for kind, i, _ in lay.actors:
            if kind == "robot":
                r = sc.robots[i]
                actors.append((r.prefix, list(ige.robot_asset_mjcf(r).dof_names)))
            else:
                actors.append(("", []))
        assert ige.dof_permutation(sc.dofs, actors) == list(range(len(sc.dofs)))


def test_dof_signs():
    lo, hi = [-0.5, 0.5, -math.inf], [0.5, 1.2, math.inf]
    lim = [True, True, False]
    assert ige.dof_signs(lo, hi, lim, [-0.5, 0.5, -1e30], [0.5, 1.2, 1e30]) == [1.0, 1.0, 1.0]
    assert ige.dof_signs(lo, hi, lim, [-0.5, -1.2, 0.0], [0.5, -0.5, 0.0]) == [1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match="not the MJCF"):
        ige.dof_signs(lo, hi, lim, [-0.5, 0.0], [0.5, 1.0])


def test_global_actor_indices():
    assert ige.global_actor_indices(3, 3, [0]) == [0, 3, 6]
    assert ige.global_actor_indices(2, 3, [1, 2]) == [1, 2, 4, 5]
    assert ige.global_actor_indices(2, 3, []) == []


def test_root_frame_detection():
    origins = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    placed = (0.5, -1.0, 0.2)
    local = torch.tensor(placed).repeat(3, 1)
    assert ige.root_frame_is_global(local, placed, origins) is False
    assert ige.root_frame_is_global(local + origins, placed, origins) is True
    assert ige.root_frame_is_global(local, placed, torch.zeros(3, 3)) is False
    with pytest.raises(RuntimeError, match="neither"):
        ige.root_frame_is_global(local + 3.0, placed, origins)


def test_sim_params_from_the_task_config():
    from qmix_isaac.config import load_task_config
    cfg = load_task_config("MultiAntPush")["sim"]
    p = ige.isaacgym_sim_params(cfg, "physx", "cpu", 0.01)
    assert p["dt"] == 0.01 and p["substeps"] == cfg["substeps"] and p["up_axis"] == "z"
    assert p["gravity"] == [0.0, 0.0, -9.81]
    assert p["use_gpu_pipeline"] is False and p["physx"]["use_gpu"] is False
    assert p["physx"]["num_position_iterations"] == cfg["physx"]["num_position_iterations"]
    assert p["physx"]["solver_type"] == ige.PHYSX_DEFAULTS["solver_type"]   # default where unset
    gpu = ige.isaacgym_sim_params(dict(cfg, substeps=4, gravity=[0, 0, -3.7]), "flex", "cuda:0", 0.005)
    assert gpu["use_gpu_pipeline"] is True and gpu["physx"]["use_gpu"] is True
    assert gpu["substeps"] == 4 and gpu["gravity"] == [0.0, 0.0, -3.7] and gpu["dt"] == 0.005
    assert gpu["flex"]["num_inner_iterations"] == cfg["flex"]["num_inner_iterations"]
    assert ige.isaacgym_sim_params(None, "physx", "cpu", 0.01)["physx"] == dict(ige.PHYSX_DEFAULTS, use_gpu=False)
    for bad, words in ((dict(cfg, physx={"num_pos_iterations": 4}), "num_pos_iterations"),
                       (dict(cfg, flex={"num_outer_iters": 2}), "num_outer_iters"),
                       (dict(cfg, up_axis="y"), "up_axis"),
                       (dict(cfg, substeps=0), "substeps")):
        with pytest.raises(ValueError, match=words) as info:
            ige.isaacgym_sim_params(bad, "physx", "cpu", 0.01)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="GPU only"):
        ige.isaacgym_sim_params(cfg, "flex", "cpu", 0.01)


def test_top_level_physx_keys_reach_the_sim_params():
    """IsaacGymEnvs' top-level num_threads / solver_type / num_subscenes reach sim.physx (the task
    configs read them), with train.py's command line as with load_task_config's defaults."""
    import train
    from qmix_isaac.config import load_task_config
    for task in ("MultiAntPush", "MultiBallPush"):
        physx = load_task_config(task)["sim"]["physx"]
        assert (physx["num_threads"], physx["solver_type"], physx["num_subscenes"]) == (4, 1, 4)
    cfg = train.compose_config(["task=MultiBallPush", "physics_engine=physx", "num_threads=8",
                                "solver_type=0", "num_subscenes=2"])
    from omegaconf import OmegaConf
    sim = OmegaConf.to_container(cfg.task.sim, resolve=True)
    p = ige.isaacgym_sim_params(sim, "physx", "cpu", 0.01)["physx"]
    assert (p["num_threads"], p["solver_type"], p["num_subscenes"]) == (8, 0, 2)


def test_physx_keys_are_gymapi_names():
    """Every settable key is an attribute of gymapi.PhysXParams / FlexParams in the PyPI stubs."""
    if not HAVE_STUBS:
        pytest.skip("needs the dev extra (isaacgym-stubs)")
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import isaacgym_stubs
    finally:
        sys.path.pop(0)
    text = open(isaacgym_stubs.installed_gymapi_stub()).read()

    def attrs(cls):  # "    name: type  # property ..." lines of the class
        body = text.split("class %s:" % cls, 1)[1].split("\nclass ", 1)[0]
        return set(re.findall(r"^    (\w+): ", body, flags=re.M))
    assert ige.PHYSX_KEYS <= attrs("PhysXParams")
    assert ige.FLEX_KEYS <= attrs("FlexParams")


# =================================================================================================
# 1b. the engine's bookkeeping on a fake Isaac Gym (tests/fake_isaacgym.py): no physics, the
#     contract of Isaac Gym's tensors, indices and properties, including its inconvenient variants
# =================================================================================================
ODD = dict(reverse_dofs=True, flip=("ankle_1", "hip_3", "slide_y"), global_frame=True, writes_at_simulate=True,
           com=(0.02, -0.01, 0.03))


@pytest.fixture
def fake_isaacgym(monkeypatch):
    """Install a fake ``isaacgym`` and import the engine module against it; returns a function
    ``install(**options) -> engine module``. Everything is restored after the test."""
    import qmix_isaac.sim as sim_pkg
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import fake_isaacgym
    finally:
        sys.path.pop(0)

    def install(**options):
        pkg, gymapi, gymtorch = fake_isaacgym.modules(**options)
        for name, mod in (("isaacgym", pkg), ("isaacgym.gymapi", gymapi), ("isaacgym.gymtorch", gymtorch)):
            monkeypatch.setitem(sys.modules, name, mod)
        monkeypatch.setattr(sim_pkg, "isaacgym_engine", ige)
        monkeypatch.delitem(sys.modules, "qmix_isaac.sim.isaacgym_engine")
        import importlib
        return importlib.import_module("qmix_isaac.sim.isaacgym_engine")
    return install


@pytest.mark.parametrize("options", [{}, ODD], ids=["plain", "odd"])
@pytest.mark.parametrize("scene", ["ants", "balls"])
def test_engine_bookkeeping_on_fake_isaacgym(fake_isaacgym, scene, options):
    from qmix_isaac.sim.mujoco_engine import MujocoEngine
    mod = fake_isaacgym(**options)
    assert mod.isaacgym_import_problem() is None
    E = 3
    sc = SCENES[scene]()
    eng = mod.IsaacGymEngine(sc, E, "cpu", sim_cfg=qmix_isaac.config.load_task_config("MultiBallPush")["sim"])
    ref = MujocoEngine(sc, 1, torch_threads=None)
    A, D = len(sc.actors), len(sc.dofs)
    for name, shape in {"root_states": (E, A, 13), "dof_pos": (E, D), "dof_vel": (E, D),
                        "dof_effort_limit": (D,), "dof_lower": (D,), "dof_upper": (D,),
                        "initial_root_states": (A, 13), "initial_dof_pos": (D,)}.items():
        t = getattr(eng, name)
        assert tuple(t.shape) == shape and t.dtype == torch.float32, name
    # the same model numbers and start state as MuJoCo's
    for name in ("dof_lower", "dof_upper", "dof_effort_limit", "initial_dof_pos"):
        assert torch.allclose(getattr(eng, name), getattr(ref, name), atol=1e-5), name
    assert torch.allclose(eng.initial_root_states, ref.initial_root_states, atol=1e-5)
    ref.close()
    plain = not options
    assert eng._direct_dofs == plain and (eng._origin is None) == plain
    assert eng._com_at_origin == (plain or scene == "balls")  # the balls are no free robots
    if plain:  # zero-copy views of Isaac Gym's tensors
        base = eng._root_tensor.data_ptr()
        assert base <= eng.root_states.data_ptr() < base + eng._root_tensor.numel() * 4
        assert eng.dof_pos.data_ptr() == eng._dof_tensor.data_ptr()
    views = [eng.root_states.data_ptr(), eng.dof_pos.data_ptr(), eng.dof_vel.data_ptr()]
    # a masked reset: the new state where asked, the others bit-identical
    eng.set_dof_torques(torch.ones(E, D) * eng.dof_effort_limit)
    eng.simulate(2)
    eng.refresh()
    before = [eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone()]
    mask = torch.tensor([True, False, True])
    new_rs = eng.initial_root_states.repeat(E, 1, 1)
    box = eng.index_of_actor("box")
    new_rs[:, box, 0:2] = torch.tensor([1.25, -0.5])
    moving = new_rs.clone()
    moving[..., 7:10] = torch.tensor([0.1, 0.2, 0.0])
    moving[..., 10:13] = torch.tensor([0.3, -0.2, 0.5])
    new_dp = torch.linspace(-0.3, 0.3, D).repeat(E, 1).clamp(eng.dof_lower, eng.dof_upper)
    new_dv = torch.linspace(0.1, 0.9, D).repeat(E, 1)
    eng.set_state(mask, moving, new_dp, new_dv)
    eng.refresh()
    after = [eng.root_states, eng.dof_pos, eng.dof_vel]
    for b, a, n in zip(before, after, (moving, new_dp, new_dv)):
        assert torch.equal(a[~mask], b[~mask])
        assert torch.allclose(a[mask], n[mask], atol=1e-6)
    # torques reach the dofs they are meant for, with their sign (the fake: unit inertia)
    eng.set_state(torch.ones(E, dtype=torch.bool), new_rs, torch.zeros(E, D).clamp(eng.dof_lower, eng.dof_upper),
                  torch.zeros(E, D))
    tq = torch.zeros(E, D)
    tq[:, 1] = 1.0
    tq[:, D - 1] = -0.5
    tq[0, 0] = 1e9  # clamped to the motor's limit
    eng.set_dof_torques(tq)
    eng.simulate(1)
    eng.refresh()
    expect = torch.minimum(tq, eng.dof_effort_limit) * eng.dt
    assert torch.allclose(eng.dof_vel, expect, atol=1e-6), (eng.dof_vel, expect)
    assert torch.allclose(eng.root_states[:, box, 0:2], new_rs[:, box, 0:2], atol=1e-6)  # env frame
    assert eng.healthy().all()
    assert [eng.root_states.data_ptr(), eng.dof_pos.data_ptr(), eng.dof_vel.data_ptr()] == views
    # the one-sync variant writes only the masked worlds
    eng.sync_free_resets = False
    eng.set_state(torch.tensor([False, True, False]), new_rs, new_dp, new_dv)
    eng.refresh()
    assert torch.allclose(eng.dof_pos[1], new_dp[1], atol=1e-6) and torch.allclose(eng.dof_vel[0], expect[0])
    # the MJCF's joint damping acts as -damping * velocity before every physics step (the effort
    # drive has no gains; the fake applies forces only): two explicit steps from new_dv, no torque
    kd = torch.tensor(eng.table.damping)
    assert (kd > 0).all() and mod.IsaacGymEngine.model_mismatches(eng) == []
    eng.set_state(torch.ones(E, dtype=torch.bool), new_rs, torch.zeros(E, D).clamp(eng.dof_lower, eng.dof_upper),
                  new_dv)
    eng.set_dof_torques(torch.zeros(E, D))
    eng.simulate(2)
    eng.refresh()
    assert torch.allclose(eng.dof_vel, new_dv * (1.0 - kd * eng.dt) ** 2, atol=1e-6)
    eng.close()


def test_viewer_keys_on_fake_isaacgym(fake_isaacgym):
    mod = fake_isaacgym()
    eng = mod.IsaacGymEngine(ball_scene(), 2, "cpu", headless=False)
    viewer = eng.viewer
    assert set(viewer.keys.values()) == {"QUIT", "toggle_viewer_sync"}
    eng.simulate(2)                       # one frame per simulate() call
    assert viewer.frames == 1 and eng.viewer_sync
    eng.gym.events = [("toggle_viewer_sync", 1.0)]
    eng.simulate(1)                       # V: no drawing, events still polled
    assert not eng.viewer_sync and viewer.frames == 1 and viewer.polls == 1
    eng.gym.events = [("QUIT", 1.0)]      # ESC: the window closes, the sim goes on
    eng.simulate(1)
    assert eng.viewer is None and eng.quit_requested and viewer.closed
    eng.simulate(1)
    assert eng.render() is False
    eng.close()


@pytest.mark.parametrize("task", ["MultiBallPush", "MultiAntPush"])
def test_tasks_run_on_fake_isaacgym(fake_isaacgym, task):
    fake_isaacgym(**ODD)
    env = qmix_isaac.make(task, num_envs=3, seed=0, physics_engine="physx", episodeLength=4)
    assert env.engine.name == "physx"
    obs = env.reset()
    for _ in range(6):
        actions = torch.zeros((3, env.num_agents) + ((len(env.action_branches),) if env.action_branches else ()),
                              dtype=torch.long)
        obs, rew, reset, extras = env.step(actions)
        assert obs["obs"].shape == (3, env.num_agents, env.num_obs) and torch.isfinite(obs["obs"]).all()
        assert rew.shape == (3,) and reset.dtype == torch.bool
    env.close()
    with pytest.raises(ValueError, match="unknown sim.physx key") as info:
        qmix_isaac.make(task, num_envs=1, physics_engine="physx",
                        cfg=dict(qmix_isaac.config.load_task_config(task), sim=dict(
                            qmix_isaac.config.load_task_config(task)["sim"], physx={"num_iters": 3})))
    assert "\n" not in str(info.value)


# =================================================================================================
# 2. without Isaac Gym: one clear line
# =================================================================================================
@without_isaacgym
@pytest.mark.parametrize("engine", ["physx", "flex"])
def test_make_without_isaacgym_is_one_line(engine):
    with pytest.raises(RuntimeError) as info:
        qmix_isaac.make("MultiBallPush", num_envs=2, physics_engine=engine)
    msg = str(info.value)
    assert msg.startswith("physics_engine=%s needs Isaac Gym (isaacgym), which is not installed" % engine)
    assert "Python 3.8" in msg and "\n" not in msg
    assert ige.isaacgym_import_problem(engine) == msg


def test_isaacgym_imported_after_torch_is_one_line(monkeypatch):
    monkeypatch.setattr(ige, "gymapi", None)
    monkeypatch.setattr(ige, "_installed", lambda: True)
    monkeypatch.setattr(ige, "_IMPORT_ERROR", "PyTorch was imported before isaacgym modules.  Please import "
                                              "torch after isaacgym modules.")
    msg = ige.isaacgym_import_problem("physx")
    assert "imported before torch" in msg and "from isaacgym import gymapi" in msg and "\n" not in msg
    monkeypatch.setattr(ige, "_IMPORT_ERROR", "libpython3.8.so.1.0: cannot open shared object file")
    assert ige.isaacgym_import_problem("flex") == ("physics_engine=flex: Isaac Gym (isaacgym) failed to import: "
                                                   "libpython3.8.so.1.0: cannot open shared object file")


@without_isaacgym
def test_train_py_without_isaacgym_exits_2_with_one_line(tmp_path):
    train_dir = os.path.join(str(tmp_path), "runs")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY",)}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "task=MultiBallPush",
                           "physics_engine=physx", "num_envs=2", "train_dir=" + train_dir],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("train.py: error: physics_engine=physx needs Isaac Gym"), lines[0]
    assert not os.path.isdir(train_dir) or os.listdir(train_dir) == []


# =================================================================================================
# 3. IsaacGymEnvs compatibility
# =================================================================================================
# isaacgymenvs.make (IsaacGymEnvs 1.5.1, isaacgymenvs/__init__.py)
ISAACGYMENVS_MAKE = ["seed", "task", "num_envs", "sim_device", "rl_device", "graphics_device_id",
                     "headless", "multi_gpu", "virtual_screen_capture", "force_render", "cfg"]


def test_make_takes_isaacgymenvs_arguments():
    params = inspect.signature(qmix_isaac.make).parameters
    assert set(ISAACGYMENVS_MAKE) <= set(params)
    env = qmix_isaac.make(seed=0, task="MultiBallPush", num_envs=2, sim_device="cpu", rl_device="cpu",
                          graphics_device_id=-1, headless=True, multi_gpu=False,
                          virtual_screen_capture=False, force_render=True, cfg=None)
    obs = env.reset()
    assert env.num_envs == 2 and obs["obs"].shape[:2] == (2, env.num_agents)
    assert env.engine.name == "mujoco"
    env.close()


def test_make_takes_a_whole_hydra_config_as_isaacgymenvs_does():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from qmix_isaac.config import CFG_DIR, register_resolvers
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CFG_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=["task=MultiBallPush", "task.env.numBalls=3"])
    env = qmix_isaac.make(seed=1, task="MultiBallPush", num_envs=3, sim_device="cpu", rl_device="cpu", cfg=cfg)
    assert env.num_envs == 3 and env.num_agents == 3 and env.engine.name == "mujoco"
    env.close()
    from qmix_isaac.config import ConfigError
    with pytest.raises(ConfigError, match="not MultiAntPush"):
        qmix_isaac.make(seed=1, task="MultiAntPush", num_envs=3, cfg=cfg)


def test_isaacgym_task_map_builds_tasks_the_isaacgymenvs_way():
    from qmix_isaac.config import load_task_config
    from qmix_isaac.tasks import isaacgym_task_map, task_map
    assert isaacgym_task_map is task_map
    cfg = load_task_config("MultiBallPush", num_envs=2)
    env = isaacgym_task_map["MultiBallPush"](cfg=cfg, rl_device="cpu", sim_device="cpu", graphics_device_id=-1,
                                             headless=True, virtual_screen_capture=False, force_render=False)
    assert env.num_envs == 2
    env.close()


def test_make_multi_gpu_follows_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = qmix_isaac.make("MultiBallPush", num_envs=1, sim_device="cpu", rl_device="cpu", multi_gpu=True)
    assert str(env.sim_device) == "cpu"   # CPU ranks (gloo) stay on the CPU
    env.close()
    if torch.cuda.device_count() >= 2:
        env = qmix_isaac.make("MultiBallPush", num_envs=1, sim_device="cuda:0", rl_device="cuda:0",
                              multi_gpu=True)
        assert str(env.sim_device) == "cuda:1" and str(env.rl_device) == "cuda:1"
        env.close()


# =================================================================================================
# 4. the type check: the engine uses Isaac Gym's API as its stubs describe it, in Python 3.8
# =================================================================================================
def test_engine_type_checks_against_isaacgym_stubs(tmp_path):
    pytest.importorskip("mypy", reason="needs the dev extra (isaacgym-stubs, mypy)")
    if not HAVE_STUBS:
        pytest.skip("needs the dev extra (isaacgym-stubs)")
    stubs = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "isaacgym_stubs.py"),
                            os.path.join(str(tmp_path), "stubs")], capture_output=True, text=True)
    assert stubs.returncode == 0, stubs.stderr
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "mypy.ini"),
                           "--cache-dir", os.path.join(str(tmp_path), "cache"),
                           "qmix_isaac/sim/isaacgym_engine.py"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, MYPYPATH=os.path.join(str(tmp_path), "stubs")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_engine_is_python38_syntax():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("needs the dev extra (vermin)")
    proc = subprocess.run([vermin, "-q", "-t=3.8-", "--no-tips", "--violations", "--backport", "dataclasses",
                           "qmix_isaac/sim", "tasks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# =================================================================================================
# 5. with Isaac Gym: each check in a fresh process (Isaac Gym before torch)
# =================================================================================================
def isolated(*args, timeout=900):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + [str(a) for a in args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, "check %s failed (exit %d)\n%s\n%s" % (args, proc.returncode,
                                                                        proc.stdout[-4000:], proc.stderr[-4000:])
    return proc.stdout


@needs_isaacgym
@pytest.mark.parametrize("task", ["MultiBallPush", "MultiAntPush"])
def test_tasks_build_and_step_on_physx(task):
    isolated("task", task)


@needs_isaacgym
@pytest.mark.parametrize("scene", ["balls", "ants"])
def test_masked_reset_leaves_other_worlds_bit_identical(scene, tmp_path):
    plain, plain2, reset = (os.path.join(str(tmp_path), n + ".pt") for n in ("plain", "plain2", "reset"))
    isolated("trajectory", scene, "none", plain)
    isolated("trajectory", scene, "none", plain2)
    isolated("trajectory", scene, "1010", reset)   # checks the write-back itself, too
    a, a2, b = torch.load(plain), torch.load(plain2), torch.load(reset)
    if not all(torch.equal(x, y) for x, y in zip(a, a2)):
        pytest.skip("Isaac Gym does not repeat a trajectory bit for bit across processes here: "
                    "the other worlds cannot be compared with a run without the reset")
    keep = torch.tensor([False, True, False, True])
    for x, y in zip(a, b):  # the worlds not reset never notice the reset, bit for bit
        assert torch.equal(x[keep], y[keep])
    assert not torch.equal(a[-3][~keep], b[-3][~keep])


@needs_isaacgym
def test_ants_stand_on_physx():
    isolated("ants_stand")


@needs_isaacgym
def test_ball_motor_and_joint_damping_on_physx():
    isolated("ball_push")


@needs_isaacgym
@pytest.mark.parametrize("scene", ["ants", "balls"])
def test_masses_are_the_mjcf_masses(scene):
    pytest.importorskip("mujoco", reason="compares with MuJoCo's compile of the MJCF")
    isolated("masses", scene)


@needs_isaacgym
def test_flex_builds_and_steps():
    if not torch.cuda.is_available():
        pytest.skip("FleX runs on the GPU only")
    isolated("flex")


# -- the checks (run as: python tests/test_isaacgym.py <check> [args]) ------------------------------
def _device():
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _engine(scene, num_envs, physics_engine="physx"):
    return ige.IsaacGymEngine(SCENES[scene](), num_envs, _device(), physics_engine=physics_engine)


def check_task(task):
    dev = torch.device(_device())
    env = qmix_isaac.make(task, num_envs=4, sim_device=str(dev), rl_device=str(dev), seed=0,
                          physics_engine="physx", episodeLength=20)
    e = env.engine
    assert e.name == "physx" and e.model_mismatches() == [], e.model_mismatches()
    assert e.root_states.shape == (4, len(e.scene.actors), 13) and e.root_states.dtype == torch.float32
    assert e.dof_pos.shape == (4, e.num_dof) and e.dof_vel.shape == (4, e.num_dof)
    views = [e.root_states.data_ptr(), e.dof_pos.data_ptr(), e.dof_vel.data_ptr()]
    obs = env.reset()
    shapes = {"obs": (4, env.num_agents, env.num_obs), "states": (4, env.num_states),
              "avail_actions": (4, env.num_agents) + env.action_shape}
    g = torch.Generator(device="cpu").manual_seed(0)
    for step in range(30):  # crosses an episode end (episodeLength=20)
        for k, shape in shapes.items():
            assert tuple(obs[k].shape) == shape and obs[k].device == dev, (k, obs[k].shape)
        high = env.action_branches[0] if env.action_branches else env.num_actions
        shape = (4, env.num_agents) + ((len(env.action_branches),) if env.action_branches else ())
        actions = torch.randint(0, high, shape, generator=g).to(dev)
        obs, rew, reset, extras = env.step(actions)
        assert rew.shape == (4,) and reset.shape == (4,) and rew.device == dev and reset.dtype == torch.bool
        assert torch.isfinite(obs["obs"]).all() and torch.isfinite(rew).all()
    assert int(extras["blowups"]) == 0
    assert [e.root_states.data_ptr(), e.dof_pos.data_ptr(), e.dof_vel.data_ptr()] == views
    env.close()
    print("ok", task)


def check_trajectory(scene, mask_bits, out):
    """Set a start state in 4 worlds, hold random torques; in the masked run reset the worlds in
    ``mask_bits`` after two holds (and check the write-back leaves the others as they were)."""
    E = 4
    eng = _engine(scene, E)
    dev = eng.device
    g = torch.Generator().manual_seed(0)
    rs = eng.initial_root_states.cpu().repeat(E, 1, 1)
    rs[:, eng.index_of_actor("box"), 2] = 0.2
    dp = torch.zeros(E, eng.num_dof).clamp(eng.dof_lower.cpu(), eng.dof_upper.cpu())
    dv = torch.rand(E, eng.num_dof, generator=g) - 0.5
    eng.set_state(torch.ones(E, dtype=torch.bool, device=dev), rs.to(dev), dp.to(dev), dv.to(dev))
    traj = []
    for i in range(6):
        if i == 2 and mask_bits != "none":
            mask = torch.tensor([c == "1" for c in mask_bits], device=dev)
            eng.refresh()
            before = (eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone())
            new_rs = eng.initial_root_states.repeat(E, 1, 1)
            new_dp = eng.initial_dof_pos.repeat(E, 1).clamp(eng.dof_lower, eng.dof_upper)
            eng.set_state(mask, new_rs, new_dp, torch.zeros(E, eng.num_dof, device=dev))
            eng.refresh()
            keep = ~mask
            assert torch.equal(eng.root_states[keep], before[0][keep])
            assert torch.equal(eng.dof_pos[keep], before[1][keep]) and torch.equal(eng.dof_vel[keep], before[2][keep])
            assert torch.allclose(eng.root_states[mask], new_rs[mask], atol=1e-6)
        tq = (torch.rand(E, eng.num_dof, generator=g) * 2 - 1) * eng.dof_effort_limit.cpu()
        eng.set_dof_torques(tq.to(dev))
        eng.simulate(3)
        eng.refresh()
        traj += [eng.root_states.cpu().clone(), eng.dof_pos.cpu().clone(), eng.dof_vel.cpu().clone()]
    torch.save(traj, out)
    eng.close()
    print("ok trajectory", scene, mask_bits)


def check_ants_stand():
    eng = _engine("ants", 1)
    dev = eng.device
    rs = eng.initial_root_states.clone()[None]
    rs[0, :2, 2] = 0.45
    dp = torch.zeros(1, eng.num_dof, device=dev).clamp(eng.dof_lower, eng.dof_upper)
    eng.set_state(torch.ones(1, dtype=torch.bool, device=dev), rs, dp, torch.zeros(1, eng.num_dof, device=dev))
    eng.set_dof_torques(torch.zeros(1, eng.num_dof, device=dev))
    eng.simulate(100)
    eng.refresh()
    z1 = eng.root_states[0, :2, 2].clone()
    eng.simulate(200)
    eng.refresh()
    z3 = eng.root_states[0, :2, 2]
    print("torso heights after 1 s", z1.tolist(), "after 3 s", z3.tolist())
    assert (z3 - z1).abs().max() < 0.01, "torso height should be steady from t=1 s to 3 s"
    assert ((z3 > 0.25) & (z3 < 0.45)).all(), "ants should stand on their legs (MuJoCo: 0.361 m)"
    up_z = 1 - 2 * (eng.root_states[0, :2, 3] ** 2 + eng.root_states[0, :2, 4] ** 2)
    assert (up_z > 0.95).all(), "ants should stay upright"
    eng.close()
    print("ok ants_stand")


def check_ball_push():
    """Ball 1 pushed along +x by its motor's full 10 N against its joint damping (2 N s/m, 1 kg):
    v(t) = 5 (1 - exp(-2 t)) m/s, 4.32 m/s after 1 s (without the damping: 10 m/s)."""
    eng = _engine("balls", 1)
    dev = eng.device
    eng.set_state(torch.ones(1, dtype=torch.bool, device=dev), eng.initial_root_states[None],
                  eng.initial_dof_pos[None], torch.zeros(1, eng.num_dof, device=dev))
    tq = torch.zeros(1, eng.num_dof, device=dev)
    tq[0, 2] = 2.0 * eng.dof_effort_limit[2]  # clamped to the limit
    eng.set_dof_torques(tq)
    eng.simulate(100)
    eng.refresh()
    v = eng.dof_vel[0].tolist()
    print("ball velocities after 1 s", v)
    assert 3.8 < v[2] < 4.8, "slide_x velocity %.3f: expected 4.32 m/s (motor 10 N, damping 2 N s/m)" % v[2]
    assert abs(v[3]) < 0.05 and abs(v[0]) < 0.05 and abs(v[1]) < 0.05
    eng.close()
    print("ok ball_push")


def check_masses(scene):
    import mujoco
    eng = _engine(scene, 1)  # one sim per process
    m = mujoco.MjModel.from_xml_string(eng.scene.xml)
    got = eng.actor_masses()
    for name in eng.scene.actors:  # free actors: robot subtrees and props
        b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)
        want = float(m.body_subtreemass[b])
        print(scene, name, "isaac gym %.5f kg, mujoco %.5f kg" % (got[name], want))
        assert abs(got[name] - want) < 1e-3 * max(1.0, want), name
    eng.close()
    print("ok masses", scene)


def check_flex():
    eng = _engine("balls", 2, physics_engine="flex")
    eng.set_dof_torques(eng.dof_effort_limit.repeat(2, 1))
    eng.simulate(10)
    eng.refresh()
    assert eng.name == "flex" and eng.healthy().all()
    eng.close()
    print("ok flex")


if __name__ == "__main__":
    globals()["check_" + sys.argv[1]](*sys.argv[2:])
