"""The engine contract (qmix_isaac/sim/base.py) on both MuJoCo-family engines, each the other's oracle.

    pytest -q tests/test_engines.py          # ~2-3 min on 2 CPU cores once .warp_cache is warm

Newton runs here on Warp's single-threaded CPU backend, so worlds are few and horizons short.
Cross-engine tolerances come from measurement (see ``test_cross_engine_*``): Newton's compiled
model equals MuJoCo's, Newton steps exactly like raw MuJoCo Warp on the C-compiled model (to
~1e-5 a step), and MuJoCo Warp (float32) agrees with the MuJoCo C library (float64) to ~1e-5
until contacts of the ants' legs with the floor, whose pyramidal friction rows MuJoCo Warp builds
in another tangent frame (same normal rows, different facets); after the first leg-floor impact
under random torques the two trajectories part within ~10 steps. Ball/box scenes agree to ~1e-4.
"""
from __future__ import annotations

import math

import pytest
import torch

from qmix_isaac.sim import make_engine
from qmix_isaac.sim.base import Engine
from qmix_isaac.sim.mujoco_engine import MujocoEngine
from qmix_isaac.sim.scene import Prop, RobotPlacement, compose_scene

newton = pytest.importorskip("newton", reason="newton[sim] not installed")
from qmix_isaac.sim.newton_engine import NewtonEngine  # noqa: E402

DT = 0.01


def ant_scene():
    return compose_scene([RobotPlacement("ant.xml", "torso", "ant%d_" % i, (i * 1.5 - 0.75, 0, 0)) for i in range(2)],
                         [Prop("box", (0.3, 0.3, 0.2), 2.0, 0.5, (0, 2, 0.2))], timestep=DT)


def ball_scene():
    return compose_scene([RobotPlacement("ball_robot.xml", "ball", "ball%d_" % i, (i * 1.0 - 0.5, 0, 0))
                          for i in range(2)],
                         [Prop("box", (0.3, 0.3, 0.2), 1.0, 0.5, (0, 1, 0.2))], timestep=DT)


SCENES = {"ants": ant_scene, "balls": ball_scene}
ENGINES = {"mujoco": MujocoEngine, "newton": NewtonEngine}
_cache = {}


def engine(kind: str, scene: str, num_envs: int):
    """One engine per (kind, scene, E) for the whole module: Newton's construction costs seconds."""
    key = (kind, scene, num_envs)
    if key not in _cache:
        _cache[key] = ENGINES[kind](SCENES[scene](), num_envs)
    return _cache[key]


def all_worlds(E):
    return torch.ones(E, dtype=torch.bool)


def perturbed_state(eng, scene: str, seed: int = 0):
    """A non-trivial start: dofs at their limits (clamped 0), small random joint velocities,
    small random torso twists, the box turned about z and pressed 1 mm into the floor."""
    g = torch.Generator().manual_seed(seed)
    E = eng.num_envs
    rs = eng.initial_root_states.cpu().repeat(E, 1, 1)
    box = eng.index_of_actor("box")
    yaw = (torch.rand(E, generator=g) - 0.5) * 0.4
    rs[:, box, 3:7] = torch.stack([torch.zeros(E), torch.zeros(E), torch.sin(yaw / 2), torch.cos(yaw / 2)], -1)
    rs[:, box, 2] = 0.199
    dof_pos = torch.zeros(E, eng.num_dof).clamp(eng.dof_lower.cpu(), eng.dof_upper.cpu())
    dof_vel = torch.rand(E, eng.num_dof, generator=g) - 0.5
    if scene == "ants":
        for a in range(eng.num_actors - 1):
            rs[:, a, 7:10] = (torch.rand(E, 3, generator=g) - 0.5) * 0.2
            rs[:, a, 10:13] = (torch.rand(E, 3, generator=g) - 0.5) * 0.2
    else:  # balls line up with the box's face (x = -0.2, +0.2), so pushing +y reaches it
        dof_pos[:, 0::4] = 0.3
        dof_pos[:, 2::4] = -0.3
    return rs.to(eng.device), dof_pos.to(eng.device), dof_vel.to(eng.device)


def random_torques(eng, g, scene: str):
    lim = eng.dof_effort_limit.cpu()
    tq = (torch.rand(eng.num_envs, eng.num_dof, generator=g) * 2 - 1) * lim
    if scene == "balls":  # push the box: +y force, small random x
        tq[:, 0::2] *= 0.3
        tq[:, 1::2] = lim[1::2] * (0.4 + 0.6 * torch.rand(eng.num_envs, eng.num_dof // 2, generator=g))
    return tq.to(eng.device)


def rollout(eng, scene: str, steps: int, hold: int = 5, seed: int = 1, start=None):
    """Set ``start`` (or the perturbed state) in every world, then hold random torques ``hold``
    steps at a time; returns the (root_states, dof_pos, dof_vel) trajectory at each hold."""
    rs, dp, dv = start if start is not None else perturbed_state(eng, scene)
    eng.set_state(all_worlds(eng.num_envs).to(eng.device), rs, dp, dv)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps // hold):
        eng.set_dof_torques(random_torques(eng, g, scene))
        eng.simulate(hold)
        eng.refresh()
        out.append((eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone()))
    return out


def max_diff(a, b):
    return {"pos": (a[0][..., 0:3] - b[0][..., 0:3]).abs().max().item(),
            "quat": (a[0][..., 3:7] - b[0][..., 3:7]).abs().max().item(),
            "vel": (a[0][..., 7:13] - b[0][..., 7:13]).abs().max().item(),
            "dof_pos": (a[1] - b[1]).abs().max().item(),
            "dof_vel": (a[2] - b[2]).abs().max().item()}


# -- 1. the views ----------------------------------------------------------------------------
@pytest.mark.parametrize("scene", ["ants", "balls"])
@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_views_shapes_dtypes_and_identity(kind, scene):
    eng = engine(kind, scene, 2)
    sc = eng.scene
    E, A, D = 2, len(sc.actors), len(sc.dofs)
    shapes = {"root_states": (E, A, 13), "dof_pos": (E, D), "dof_vel": (E, D), "dof_effort_limit": (D,),
              "dof_lower": (D,), "dof_upper": (D,), "initial_root_states": (A, 13), "initial_dof_pos": (D,)}
    for name, shape in shapes.items():
        t = getattr(eng, name)
        assert tuple(t.shape) == shape, name
        assert t.dtype == torch.float32, name
        assert t.device.type == "cpu", name
    views = [eng.root_states.data_ptr(), eng.dof_pos.data_ptr(), eng.dof_vel.data_ptr()]
    eng.set_state(all_worlds(E), eng.initial_root_states.repeat(E, 1, 1), eng.initial_dof_pos.repeat(E, 1),
                  torch.zeros(E, D))
    eng.set_dof_torques(torch.zeros(E, D))
    eng.simulate(2)
    eng.refresh()
    assert [eng.root_states.data_ptr(), eng.dof_pos.data_ptr(), eng.dof_vel.data_ptr()] == views
    # initial state = the MJCF: first actor's position as placed, unit quaternions, at rest
    x0 = -0.75 if scene == "ants" else 0.0  # ant0's torso / the box (the balls are not free bodies)
    assert eng.initial_root_states[0, 0].item() == pytest.approx(x0, abs=1e-6)
    assert torch.allclose(eng.initial_root_states[:, 3:7].norm(dim=-1), torch.ones(A), atol=1e-6)
    assert eng.initial_root_states[:, 7:].abs().max() == 0
    assert (eng.dof_effort_limit > 0).all()
    assert eng.healthy().all()
    if kind == "newton":  # MuJoCo Warp does not reset a diverged world: past 1e10 (or NaN) is a blow-up
        for bad in (1e12, float("nan")):
            saved = eng._jqd.clone()
            eng._jqd[1, 0] = bad
            assert eng.healthy().tolist() == [True, False], bad
            eng._jqd.copy_(saved)


def test_make_engine_registry():
    sc = ball_scene()
    assert isinstance(make_engine("auto", sc, 1, "cpu"), MujocoEngine)
    assert isinstance(make_engine("newton", sc, 1, "cpu"), NewtonEngine)
    with pytest.raises(ValueError, match="mujoco"):
        make_engine("bullet", sc, 1, "cpu")
    with pytest.raises(RuntimeError, match="Isaac Gym"):
        make_engine("physx", sc, 1, "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            make_engine("newton", sc, 1, "cuda:0")


def test_newton_reports_worlds_that_overflow_its_contact_buffers():
    """Two ants standing beside a box touch the floor with every foot: with room for 4 contacts
    per world (MuJoCo Warp makes it 6), both worlds drop contacts and ``diagnostics`` counts them; at the default sizes
    (from the scene), none. ``sim.newton`` sizes the buffers through make_engine; bad keys and
    sizes are one line. The MuJoCo C engine grows its buffers: nothing to report."""
    small = make_engine("newton", ant_scene(), 2, "cpu", sim_cfg={"newton": {"nconmax": 4}})
    assert small.buffer_sizes()["nconmax"] == 6  # MuJoCo Warp's least
    for eng, worlds in ((small, 2), (engine("newton", "ants", 2), 0)):
        eng.set_state(all_worlds(2), *perturbed_state(eng, "ants"))
        eng.set_dof_torques(torch.zeros(2, eng.num_dof))
        eng.simulate(40)  # landed: 24 contacts in the two worlds
        assert eng.diagnostics()["overflow_worlds"].item() == worlds
    assert small.diagnostics()["overflow_worlds"].item() == 0  # counted since the last call
    small.set_state(all_worlds(2), *perturbed_state(small, "ants"))
    small.simulate(1)  # in the air, 8 contacts: room enough
    assert small.diagnostics()["overflow_worlds"].item() == 0
    small.simulate(40)  # landed (overflowing) ...
    small.set_state(all_worlds(2), *perturbed_state(small, "ants"))
    small.simulate(1)   # ... and back in the air: the count covers every step since the last call
    assert small.diagnostics()["overflow_worlds"].item() == 2
    with pytest.raises(ValueError, match="sim.newton.nconmx"):
        make_engine("newton", ant_scene(), 1, "cpu", sim_cfg={"newton": {"nconmx": 4}})
    with pytest.raises(ValueError, match="sim.newton.njmax must be an integer >= 1"):
        make_engine("newton", ant_scene(), 1, "cpu", sim_cfg={"newton": {"njmax": 0}})
    assert engine("mujoco", "ants", 2).diagnostics() == {}


# -- 2. Newton imports the MJCF as MuJoCo compiles it; the engines agree ----------------------
def test_friction_cone_option_reaches_both_engines_and_means_what_it_says():
    """sim.cone: with MuJoCo's pyramidal cone (4 facets about the floor contacts' axes, world x
    and y) a box on the floor resists a push along world x better than along the world's
    diagonal, whichever way the box faces; an elliptic cone resists both alike. A 7 N push on the
    tasks' box (1.5 kg, friction 0.5: mu m g = 7.36 N at the contact) for 2 s."""
    import mujoco
    import qmix_isaac
    moved = {}
    for cone in ("pyramidal", "elliptic"):
        sc = compose_scene([], [Prop("box", (0.3, 0.3, 0.2), 1.5, 0.5, (0.0, 0.0, 0.2))], timestep=0.01,
                           floor_friction=0.5, cone=cone)
        m = mujoco.MjModel.from_xml_string(sc.xml)
        for yaw, angle in ((0.0, 0.0), (0.0, 45.0), (45.0, 0.0), (45.0, 45.0)):
            d = mujoco.MjData(m)
            d.qpos[3:7] = [math.cos(math.radians(yaw) / 2), 0.0, 0.0, math.sin(math.radians(yaw) / 2)]
            for _ in range(50):  # settle
                mujoco.mj_step(m, d)
            x0 = d.qpos[:2].copy()
            d.xfrc_applied[1, :2] = [7.0 * math.cos(math.radians(angle)), 7.0 * math.sin(math.radians(angle))]
            for _ in range(200):
                mujoco.mj_step(m, d)
            moved[cone, yaw, angle] = float(((d.qpos[:2] - x0) ** 2).sum() ** 0.5)
    for yaw in (0.0, 45.0):  # the box's own yaw does not matter: the world's axes do
        assert moved["pyramidal", yaw, 0.0] < 0.2 and moved["pyramidal", yaw, 45.0] > 1.0, moved
        assert moved["elliptic", yaw, 0.0] < 0.1 and moved["elliptic", yaw, 45.0] < 0.1, moved
    for engine_name in ("mujoco", "newton"):  # the task key reaches the engine's model
        env = qmix_isaac.make("MultiBallPush", num_envs=1, cone="elliptic", physics_engine=engine_name)
        if engine_name == "mujoco":
            cone = env.engine.model.opt.cone
        else:  # the model MuJoCo Warp steps
            cone = env.engine.solver.mjw_model.opt.cone
            cone = cone.numpy()[0] if hasattr(cone, "numpy") else cone
            assert env.engine.model_mismatches() == []
        assert int(cone) == int(mujoco.mjtCone.mjCONE_ELLIPTIC), engine_name
        env.close()
    with pytest.raises(ValueError, match="sim.cone must be 'pyramidal' or 'elliptic'"):
        compose_scene([], [], timestep=0.01, cone="round")


def test_newton_reports_an_mjcf_option_its_importer_drops():
    """Newton's SolverMuJoCo has no noslip solver: an MJCF asking for one is simulated without it,
    and model_mismatches names the option (the check that the two engines step one model)."""
    import dataclasses
    sc = ant_scene()
    sc = dataclasses.replace(sc, xml=sc.xml.replace("<option ", '<option noslip_iterations="5" ', 1))
    assert make_engine("newton", sc, 1, "cpu").model_mismatches() == [
        "opt.noslip_iterations: mujoco 5 vs newton 0 (flat index 0)"]


@pytest.mark.parametrize("scene", ["ants", "balls"])
def test_newton_compiles_the_mujoco_model(scene):
    eng = engine("newton", scene, 2)
    assert eng.model_mismatches() == []
    ref = MujocoEngine(eng.scene, 1)
    for name in ("dof_effort_limit", "dof_lower", "dof_upper", "initial_root_states", "initial_dof_pos"):
        assert torch.equal(getattr(eng, name), getattr(ref, name)), name


def test_cross_engine_balls_push_box():
    """Balls drive into the box and shove it for 1 s: the engines agree to ~1e-4."""
    runs = [rollout(engine(k, "balls", 3), "balls", 100) for k in ("mujoco", "newton")]
    box_y = runs[0][-1][0][:, 0, 1]
    assert (box_y > 1.1).all(), "the balls should have pushed the box (+y): %s" % box_y
    for t in (1, 4, 9, 19):  # 10, 25, 50, 100 steps
        d = max_diff(runs[0][t], runs[1][t])
        assert d["pos"] < 2e-3 and d["quat"] < 2e-3 and d["dof_pos"] < 2e-3, (t, d)
        assert d["vel"] < 2e-2 and d["dof_vel"] < 2e-2, (t, d)


def test_cross_engine_ants_random_torques():
    """Perturbed ants under random torques: identical to ~1e-5 until their legs hit the floor
    (~step 12); compared over the first 10 steps (see the module docstring)."""
    runs = [rollout(engine(k, "ants", 3), "ants", 10) for k in ("mujoco", "newton")]
    for t in (0, 1):  # 5, 10 steps
        d = max_diff(runs[0][t], runs[1][t])
        assert d["pos"] < 1e-3 and d["quat"] < 1e-3 and d["dof_pos"] < 1e-3, (t, d)
        assert d["vel"] < 1e-2 and d["dof_vel"] < 1e-2, (t, d)


def test_cross_engine_ants_fall_and_land():
    """Zero torque from the perturbed state: the ants fall, land and settle the same way."""
    out = {}
    for k in ("mujoco", "newton"):
        eng = engine(k, "ants", 3)
        rs, dp, dv = perturbed_state(eng, "ants")
        eng.set_state(all_worlds(3), rs, dp, dv)
        eng.set_dof_torques(torch.zeros(3, eng.num_dof))
        eng.simulate(100)
        eng.refresh()
        out[k] = (eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone())
    d = max_diff(out["mujoco"], out["newton"])
    assert d["pos"] < 1e-3 and d["quat"] < 1e-3 and d["dof_pos"] < 1e-2, d
    assert d["vel"] < 1e-2 and d["dof_vel"] < 1e-1, d


# -- 3. resets touch only the masked worlds ----------------------------------------------------
@pytest.mark.parametrize("scene", ["ants", "balls"])
@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_set_state_subset_leaves_others_bit_identical(kind, scene):
    E = 4
    eng = engine(kind, scene, E)
    start = perturbed_state(eng, scene)
    g = torch.Generator().manual_seed(3)
    torques = [random_torques(eng, g, scene) for _ in range(4)]

    def run(reset_mask):
        eng.set_state(all_worlds(E), *start)
        traj = []
        for i, tq in enumerate(torques):
            if i == 2 and reset_mask is not None:
                before = (eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone())
                eng.refresh()
                new_rs = eng.initial_root_states.repeat(E, 1, 1)
                new_dp = eng.initial_dof_pos.repeat(E, 1).clamp(eng.dof_lower, eng.dof_upper)
                eng.set_state(reset_mask, new_rs, new_dp, torch.zeros(E, eng.num_dof))
                eng.refresh()
                keep = ~reset_mask
                assert torch.equal(eng.root_states[keep], before[0][keep])
                assert torch.equal(eng.dof_pos[keep], before[1][keep])
                assert torch.equal(eng.dof_vel[keep], before[2][keep])
                assert torch.allclose(eng.root_states[reset_mask], new_rs[reset_mask], atol=1e-6)
                assert torch.allclose(eng.dof_pos[reset_mask], new_dp[reset_mask], atol=1e-6)
            eng.set_dof_torques(tq)
            eng.simulate(3)
            eng.refresh()
            traj.append((eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone()))
        return traj

    plain = run(None)
    mask = torch.tensor([True, False, True, False])
    reset = run(mask)
    keep = ~mask
    for a, b in zip(plain, reset):  # the other worlds never notice the reset, bit for bit
        for x, y in zip(a, b):
            assert torch.equal(x[keep], y[keep])
    assert not torch.equal(plain[-1][0][mask], reset[-1][0][mask])


@pytest.mark.parametrize("scene", ["ants", "balls"])
@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_encoded_states_set_what_set_state_sets(kind, scene):
    """A task converts its pool of start states to the engine's layout once (``encode_state``)
    and sets rows of it (``set_encoded_state``): the reset worlds, and their next steps, equal
    ``set_state``'s bit for bit, and the others are untouched. Also the base class's default
    pair (what the Isaac Gym engine uses)."""
    E = 4
    eng = engine(kind, scene, E)
    start = perturbed_state(eng, scene)
    new = perturbed_state(eng, scene, seed=7)
    tq = random_torques(eng, torch.Generator().manual_seed(5), scene)
    mask = torch.tensor([True, False, True, False])

    def run(reset):
        eng.set_state(all_worlds(E), *start)
        eng.set_dof_torques(tq)
        eng.simulate(2)  # away from the start, so that kept and reset worlds differ
        eng.refresh()
        reset()
        eng.refresh()
        after = (eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone())
        eng.simulate(3)
        eng.refresh()
        return after + (eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone())

    want = run(lambda: eng.set_state(mask, *new))
    assert not torch.equal(want[0][mask], want[0][~mask])
    for reset in (lambda: eng.set_encoded_state(mask, eng.encode_state(*new)),
                  lambda: Engine.set_encoded_state(eng, mask, Engine.encode_state(eng, *new))):
        got = run(reset)
        for x, y in zip(want, got):
            assert torch.equal(x, y)


def test_newton_converts_velocities_of_bodies_whose_com_is_off_their_origin():
    """Newton keeps a free body's centre-of-mass velocity, the contract its origin's:
    v_com = v + w x (R c). No shipped body has such an offset, so one is set here: the box,
    turned 90 degrees about z, c = (0.1, 0, 0) in its frame, w = (0, 0, 2), v = (1, 0, 0), so
    R c = (0, 0.1, 0), w x R c = (-0.2, 0, 0) and Newton must hold v_com = (0.8, 0, 0)."""
    eng = engine("newton", "balls", 2)
    box = eng.index_of_actor("box")
    saved = eng._com.clone(), eng._com_is_origin
    try:
        eng._com[box] = torch.tensor([0.1, 0.0, 0.0])
        eng._com_is_origin = False
        rs = eng.initial_root_states.repeat(2, 1, 1)
        rs[:, box, 3:7] = torch.tensor([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
        rs[:, box, 7:10] = torch.tensor([1.0, 0.0, 0.0])
        rs[:, box, 10:13] = torch.tensor([0.0, 0.0, 2.0])
        for reset in (lambda: eng.set_state(all_worlds(2), rs, eng.initial_dof_pos.repeat(2, 1),
                                            torch.zeros(2, eng.num_dof)),
                      lambda: eng.set_encoded_state(all_worlds(2), eng.encode_state(
                          rs, eng.initial_dof_pos.repeat(2, 1), torch.zeros(2, eng.num_dof)))):
            eng._jqd.zero_()
            reset()
            lin_com = eng._jqd[:, eng._lin_idx[box]]
            assert torch.allclose(lin_com, torch.tensor([0.8, 0.0, 0.0]).expand(2, 3), atol=1e-6)
            eng.refresh()
            assert torch.allclose(eng.root_states[:, box, 7:13], rs[:, box, 7:13], atol=1e-6)
    finally:
        eng._com.copy_(saved[0])
        eng._com_is_origin = saved[1]


@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_a_scene_without_free_bodies_builds_resets_and_steps(kind):
    """No actor has a free joint (a lone ball robot on its slide joints): root_states is
    [E, 0, 13], and refresh, set_state and the encoded pair (the engine's and the base class's)
    still work on the dofs."""
    sc = compose_scene([RobotPlacement("ball_robot.xml", "ball", "ball0_", (0, 0, 0))], [],
                       timestep=DT)
    eng = ENGINES[kind](sc, 2)
    assert tuple(eng.root_states.shape) == (2, 0, 13)
    dp = torch.tensor([[0.5, -0.25], [1.0, 0.75]])
    mask = torch.tensor([False, True])
    for reset in (lambda rs, dv: eng.set_state(mask, rs, dp, dv),
                  lambda rs, dv: eng.set_encoded_state(mask, eng.encode_state(rs, dp, dv)),
                  lambda rs, dv: Engine.set_encoded_state(eng, mask, Engine.encode_state(eng, rs, dp, dv))):
        eng.set_state(all_worlds(2), eng.root_states.clone(), torch.zeros(2, 2), torch.zeros(2, 2))
        reset(eng.root_states.clone(), torch.zeros(2, 2))
        eng.refresh()
        assert torch.equal(eng.dof_pos, torch.tensor([[0.0, 0.0], [1.0, 0.75]]))
    eng.set_dof_torques(torch.zeros(2, 2))
    eng.simulate(2)
    eng.refresh()
    assert torch.allclose(eng.dof_pos, torch.tensor([[0.0, 0.0], [1.0, 0.75]]), atol=1e-3)
    eng.close()


# -- 4. determinism ------------------------------------------------------------------------------
@pytest.mark.parametrize("scene", ["ants", "balls"])
@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_same_inputs_same_trajectory(kind, scene):
    eng = engine(kind, scene, 2)
    a = rollout(eng, scene, 30)
    b = rollout(eng, scene, 30)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert torch.equal(u, v)


# -- 5. physics facts ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_ants_settle_and_stay(kind):
    eng = engine(kind, "ants", 1)
    rs = eng.initial_root_states.clone()[None]
    for a in range(2):
        rs[0, a, 2] = 0.45
    dp = torch.zeros(1, eng.num_dof).clamp(eng.dof_lower, eng.dof_upper)
    eng.set_state(all_worlds(1), rs, dp, torch.zeros(1, eng.num_dof))
    eng.set_dof_torques(torch.zeros(1, eng.num_dof))
    eng.simulate(100)
    eng.refresh()
    z1 = eng.root_states[0, :2, 2].clone()
    eng.simulate(200)
    eng.refresh()
    z3 = eng.root_states[0, :2, 2]
    assert (z3 - z1).abs().max() < 0.01, "torso height should be steady from t=1 s to 3 s: %s -> %s" % (z1, z3)
    assert torch.allclose(z3, torch.full_like(z3, 0.3612), atol=0.01), "settled torso height %s" % z3


@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_box_alone_stays_put(kind):
    sc = compose_scene([], [Prop("box", (0.3, 0.3, 0.2), 2.0, 0.5, (0.0, 0.0, 0.2))], timestep=DT)
    eng = ENGINES[kind](sc, 1)
    eng.refresh()
    p0 = eng.root_states[0, 0, :3].clone()
    eng.simulate(200)
    eng.refresh()
    assert (eng.root_states[0, 0, :3] - p0).norm() < 1e-3, "a resting box should not move"
    assert eng.root_states[0, 0, 7:].abs().max() < 1e-3


@pytest.mark.parametrize("kind", ["mujoco", "newton"])
def test_ball_pushed_plus_x_moves_plus_x(kind):
    eng = engine(kind, "balls", 1)
    eng.set_state(all_worlds(1), eng.initial_root_states[None], eng.initial_dof_pos[None],
                  torch.zeros(1, eng.num_dof))
    x0 = eng.initial_dof_pos.clone()
    torque = torch.zeros(1, eng.num_dof)
    torque[0, 2] = eng.dof_effort_limit[2]  # ball1 slide_x: away from ball0 and past the box
    eng.set_dof_torques(torque)
    eng.simulate(100)
    eng.refresh()
    dx = eng.dof_pos[0] - x0
    v = 10.0 / 2.0 * (1.0 - math.exp(-2.0 * 1.0))  # F = gear 10 x ctrl 1, damping 2, mass 1, t = 1 s
    assert dx[2] > 0.5, "ball1 pushed +x should move +x (moved %.3f m)" % dx[2]
    assert dx[[0, 1, 3]].abs().max() < 1e-3, "nothing else should move: %s" % dx
    assert math.isclose(eng.dof_vel[0, 2].item(), v, rel_tol=0.02), "speed %.3f, expected %.3f" % (eng.dof_vel[0, 2], v)


# -- CUDA ----------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


@cuda
def test_cuda_graph_matches_eager_and_cpu():
    sc = ant_scene()
    graph = NewtonEngine(sc, 4, "cuda:0")
    eager = NewtonEngine(sc, 4, "cuda:0", use_cuda_graph=False)
    cpu = MujocoEngine(sc, 4)
    runs = []
    for eng in (graph, eager, cpu):
        start = [t.to(eng.device) for t in perturbed_state(cpu, "ants")]
        traj = rollout(eng, "ants", 10, start=start)
        runs.append([tuple(t.cpu() for t in step) for step in traj])
    for a, b in zip(runs[0], runs[1]):
        d = max_diff(a, b)
        assert max(d.values()) < 1e-4, d
    d = max_diff(runs[0][-1], runs[2][-1])
    assert d["pos"] < 1e-3 and d["dof_pos"] < 1e-3, d
    assert graph.root_states.device.type == "cuda" and graph.dof_pos.is_cuda


@cuda
def test_cuda_set_state_subset_bit_identical():
    E = 8
    eng = NewtonEngine(ant_scene(), E, "cuda:0")
    eng.set_dof_torques(torch.zeros(E, eng.num_dof, device=eng.device))
    eng.simulate(5)
    eng.refresh()
    before = eng.root_states.clone(), eng.dof_pos.clone(), eng.dof_vel.clone()
    mask = torch.arange(E, device=eng.device) % 2 == 0
    eng.set_state(mask, eng.initial_root_states.repeat(E, 1, 1), eng.initial_dof_pos.repeat(E, 1),
                  torch.zeros(E, eng.num_dof, device=eng.device))
    eng.refresh()
    assert torch.equal(eng.root_states[~mask], before[0][~mask])
    assert torch.equal(eng.dof_pos[~mask], before[1][~mask])
    assert torch.allclose(eng.root_states[mask], eng.initial_root_states.expand(int(mask.sum()), -1, -1))
