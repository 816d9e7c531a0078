"""The task contract (tasks/base/vec_task.py) and physics facts, on the real MuJoCo engine."""
import math
import warnings

import pytest
import torch

import qmix_isaac
from qmix_isaac.config import ConfigError
from qmix_isaac.tasks.base import TaskConfigError
from qmix_isaac.tasks.multi_ant_push import compute_ant_push_observations, compute_ant_push_reward
from qmix_isaac.tasks.multi_ball_push import (compute_ball_push_observations, compute_ball_push_reward,
                                              scripted_ball_push_actions)

TASKS = ["MultiBallPush", "MultiAntPush"]


def zero_actions(env):
    """Every joint at its middle torque level (0 torque) / every ball idle."""
    E, A = env.num_envs, env.num_agents
    if env.action_branches is not None:
        return torch.full((E, A, len(env.action_branches)), env.action_branches[0] // 2, dtype=torch.long)
    if env.num_actions == 5:  # balls: action 0 is "stay"
        return torch.zeros(E, A, dtype=torch.long)
    bins = env.bins
    mid = sum((bins // 2) * bins ** j for j in range(env.joints_per_agent))
    return torch.full((E, A), mid, dtype=torch.long)


def random_actions(env, gen=None):
    E, A = env.num_envs, env.num_agents
    shape = (E, A) + env.action_shape[:-1]
    return torch.randint(0, env.action_shape[-1], shape, generator=gen)


@pytest.mark.parametrize("engine", ["mujoco", "newton"])
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("mode", ["ant", "leg"])
def test_contract_shapes_dtypes_devices(task, mode, engine):
    kw = {"agentMode": mode} if task == "MultiAntPush" else {}
    if task == "MultiBallPush" and mode == "leg":
        pytest.skip("agent modes are a MultiAntPush option")
    if engine == "newton":
        pytest.importorskip("newton", reason="newton[sim] not installed")
    env = qmix_isaac.make(task, num_envs=3, seed=0, physics_engine=engine, **kw)
    assert env.engine.name == engine
    E, A = 3, env.num_agents
    obs = env.reset()
    assert obs["obs"].shape == (E, A, env.num_obs) and obs["obs"].dtype == torch.float32
    assert obs["states"].shape == (E, env.num_states) and obs["states"].dtype == torch.float32
    assert obs["avail_actions"].shape == (E, A) + env.action_shape
    assert obs["avail_actions"].dtype == torch.bool
    for _ in range(3):
        obs, rew, reset, extras = env.step(random_actions(env))
    assert rew.shape == (E,) and rew.dtype == torch.float32
    assert reset.shape == (E,) and reset.dtype == torch.bool
    assert extras["time_outs"].shape == (E,) and extras["time_outs"].dtype == torch.bool
    ep = extras["episode"]
    assert ep["mask"].dtype == torch.bool
    for k in ["return", "length", "success", "final_box_dist"] + ["rew/" + t for t in env.reward_terms]:
        assert ep[k].shape == (E,), k
    for t in [obs["obs"], obs["states"], obs["avail_actions"], rew, reset, extras["time_outs"]]:
        assert t.device == env.rl_device
        assert torch.isfinite(t.float()).all()
    if task == "MultiAntPush":
        if mode == "ant":
            assert env.num_agents == 2 and env.action_branches == (3,) * 8
        else:
            assert env.num_agents == 8 and env.num_actions == 9
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_trajectory(task):
    def run(seed, **kw):
        env = qmix_isaac.make(task, num_envs=4, seed=seed, **kw)
        env.reset()
        g = torch.Generator().manual_seed(7)
        out = []
        for _ in range(30):
            obs, rew, _, _ = env.step(random_actions(env, g))
            out.append(torch.cat([obs["obs"].flatten(), rew]))
        env.close()
        return torch.stack(out)
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a, run(3, cudaGraph=True)), "env.cudaGraph is ignored on the CPU"


def graph_trio(task, num_envs, **kw):
    """An eager env and two graphed ones (env.cudaGraph), same seed, Newton on CUDA. startPool=1:
    the eager env draws its start states every step, as the graphed ones must."""
    pytest.importorskip("newton", reason="newton[sim] not installed")
    return [qmix_isaac.make(task, num_envs=num_envs, seed=0, sim_device="cuda:0",
                            rl_device="cuda:0", physics_engine="newton", cudaGraph=g, startPool=1,
                            **kw) for g in (False, True, True)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (env.cudaGraph)")
@pytest.mark.parametrize("task", TASKS)
def test_cuda_graph_task_layer_matches_eager(task):
    """The task's side of the step replayed from its two CUDA graphs, physics left out (the
    engine's ``simulate``, which runs between the graphs, made a no-op): observations, rewards,
    time-outs, resets through ``set_encoded_state`` and start-state draws are the same kernels
    eager or replayed, so they agree to rounding: eager vs graphed until the first reset (a
    reset draws from the task's generator, whose offsets differ inside a graph), the two graphed
    envs at every step; and every replay draws new start states (a draw frozen at capture would
    give every episode the same start). Without the physics nothing falls or flies, and no
    contact order (MuJoCo Warp's atomic adds on CUDA) blurs the comparison."""
    envs = graph_trio(task, 16, episodeLength=6)
    for env in envs:
        env.engine.simulate = lambda steps: None
        env.reset()
    g = torch.Generator().manual_seed(1)
    episode_obs = []
    for t in range(20):  # time-outs at steps 5, 12, 19; each world restarts on the step after
        acts = random_actions(envs[0], g).to("cuda:0")
        (o0, r0, d0, x0), (o1, r1, d1, x1), (o2, r2, d2, x2) = [e.step(acts) for e in envs]
        if t <= 5:
            assert torch.allclose(o0["obs"], o1["obs"], atol=1e-6), t
            assert torch.allclose(r0, r1, atol=1e-6) and torch.equal(d0, d1), t
        assert torch.allclose(o1["obs"], o2["obs"], atol=1e-6), t
        assert torch.allclose(r1, r2, atol=1e-6) and torch.equal(d1, d2), t
        assert torch.equal(x1["time_outs"], x2["time_outs"]), t
        assert torch.allclose(x1["episode"]["return"], x2["episode"]["return"], atol=1e-5), t
        if t in (5, 12):
            assert bool(x1["time_outs"].all()), t
        if t in (7, 13):
            episode_obs.append(o1["obs"].clone())
    assert envs[1]._step_graphs is not None, "the step was not captured"
    assert not torch.allclose(episode_obs[0], episode_obs[1]), "replays drew the same starts"
    for env in envs:
        env.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (env.cudaGraph)")
@pytest.mark.parametrize("task, steps, atol", [("MultiBallPush", 60, 1e-4), ("MultiAntPush", 4, 1e-3)])
def test_cuda_graph_step_matches_eager(task, steps, atol):
    """The whole step, physics included (the task's graphs around the engine's): same
    observations, rewards and resets as the eager step in every world that has not yet been
    reset. MuJoCo Warp on CUDA is not bitwise repeatable (contacts take their slots by atomic
    adds), and an ant team turns a 1e-7 difference into ~4e-4 in 5 steps (1e-7 added to every
    joint velocity, Newton on the CPU), the balls into ~1e-5 over 60: hence the horizons and
    tolerances."""
    envs = graph_trio(task, 64)
    for env in envs:
        env.reset()
    g = torch.Generator().manual_seed(1)
    fresh = torch.ones(64, dtype=torch.bool, device="cuda:0")   # worlds no env has reset yet
    for t in range(steps):
        acts = random_actions(envs[0], g).to("cuda:0")
        (o0, r0, d0, x0), (o1, r1, d1, x1), (o2, r2, d2, x2) = [e.step(acts) for e in envs]
        fresh &= ~(x0["blown"] | x1["blown"] | x2["blown"])
        for o, r, d in ((o1, r1, d1), (o2, r2, d2)):
            assert torch.allclose(o0["obs"][fresh], o["obs"][fresh], atol=atol), t
            assert torch.allclose(r0[fresh], r[fresh], atol=atol), t
            assert torch.equal(d0[fresh], d[fresh]), t
        fresh &= ~(d0 | d1 | d2)
    assert envs[1]._step_graphs is not None, "the step was not captured"
    assert int(fresh.sum()) >= 16, "too few worlds ran without a reset to compare"
    for env in envs:
        env.close()


@pytest.mark.parametrize("fail", [None, "pre", "post"])
def test_cuda_graph_step_order_and_fallback_on_the_cpu(monkeypatch, fail):
    """What env.cudaGraph does around the graphs, run on the CPU with graphs that record a call
    and replay it (CUDA itself is checked by test_cuda_graph_step_matches_eager on a GPU): step 1
    eager, step 2 records pre- and post-physics and runs them around the physics exactly once,
    later steps replay them; a capture that fails warns and that step and the rest run eagerly.
    Every step equals the eager env's. (The stand-ins run the recorded Python at every replay; a
    real graph runs it once, at capture: Python-side values frozen there are not covered here.)"""
    import contextlib

    class Replayed:
        def __init__(self, fn):
            self.fn = fn

        def replay(self):
            self.fn()

    recorded, generators, streams_set = [], [], []

    def record(fn, generator=None):
        recorded.append(fn)
        generators.append(generator)
        if fail is not None and len(recorded) == (1 if fail == "pre" else 2):
            try:  # as at a capture's end: a secondary error in the wake of the first
                raise ValueError("an illegal call while capturing")
            except ValueError:
                raise RuntimeError("capture failed")
        return Replayed(fn)

    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev=None: "caller")
    monkeypatch.setattr(torch.cuda, "set_stream", streams_set.append)
    eager, graphed = [qmix_isaac.make("MultiBallPush", num_envs=4, seed=0, episodeLength=6,
                                      physics_engine="mujoco") for _ in range(2)]
    graphed._graph_state = "cold"                    # as on CUDA (the CPU ignores env.cudaGraph)
    graphed._record = record
    sims = []
    simulate = graphed.engine.simulate
    graphed.engine.simulate = lambda n: (sims.append(n), simulate(n))[1]
    eager.reset(), graphed.reset()
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(15):                         # two resets of every world
            acts = random_actions(eager, g)
            (o0, r0, d0, x0), (o1, r1, d1, x1) = eager.step(acts), graphed.step(acts)
            assert torch.equal(o0["obs"], o1["obs"]) and torch.equal(r0, r1) and torch.equal(d0, d1), t
            for k, v in x0["episode"].items():
                assert torch.equal(v, x1["episode"][k]), (t, k)
            assert sims == [graphed.control_freq_inv] * (t + 1), "one physics call per step"
    assert len(recorded) == {None: 2, "pre": 1, "post": 2}[fail]
    assert generators == [None, graphed.rng][:len(recorded)]  # resets draw in the post graph only
    assert (graphed._step_graphs is not None) == (fail is None)
    assert streams_set == ([] if fail is None else ["caller"])
    warned = [str(w.message) for w in caught if "env.cudaGraph" in str(w.message)]
    assert len(warned) == (0 if fail is None else 1)
    assert fail is None or "ValueError: an illegal call while capturing" in warned[0], warned


@pytest.mark.parametrize("task", ["MultiBallPush", "MultiAntPush"])
def test_a_step_before_reset_resets_first(task):
    """A step before any reset() is reset() then that step (IsaacGymEnvs flags every world for
    reset at the start). Without it the first episode ran from the MJCF's own pose with the goal
    at the box: a 'success' at once, counted as an episode."""
    envs = [qmix_isaac.make(task, num_envs=3, seed=0, physics_engine="mujoco") for _ in range(2)]
    acts = zero_actions(envs[0])
    envs[1].reset()
    (o0, r0, d0, x0), (o1, r1, d1, x1) = (e.step(acts) for e in envs)
    for a, b in ((o0["obs"], o1["obs"]), (o0["states"], o1["states"]), (r0, r1), (d0, d1),
                 (x0["episode"]["mask"], x1["episode"]["mask"])):
        assert torch.equal(a, b)
    assert not bool(d0.any()) and not bool(x0["episode"]["mask"].any())
    box = envs[0].engine.root_states[:, envs[0].box_index, 0:2]
    assert bool((torch.norm(envs[0].goal_pos - box, dim=-1) > 0.5).all())  # a sampled goal
    for e in envs:
        e.close()


def test_clip_observations():
    """IsaacGymEnvs' clipObservations clamps observations and states, after resets too."""
    outs = {}
    for clip in (float("inf"), 0.5):
        env = qmix_isaac.make("MultiBallPush", num_envs=4, seed=0, physics_engine="mujoco",
                              clipObservations=clip)
        first = env.reset()
        obs, _, _, _ = env.step(torch.ones(4, env.num_agents, dtype=torch.long))
        outs[clip] = (first["obs"].clone(), obs["obs"].clone(), obs["states"].clone())
        env.close()
    assert max(float(t.abs().max()) for t in outs[float("inf")]) > 0.5  # something to clip
    for clipped, free in zip(outs[0.5], outs[float("inf")]):
        assert torch.equal(clipped, free.clamp(-0.5, 0.5))
    with pytest.raises(ValueError, match="clipObservations"):  # TaskConfigError
        qmix_isaac.make("MultiBallPush", num_envs=1, physics_engine="mujoco", clipObservations=0)


def test_seed_minus_one_draws_a_seed():
    """make(seed=-1) as in IsaacGymEnvs: a drawn seed (it used to mean seed 0)."""
    envs = [qmix_isaac.make("MultiBallPush", num_envs=4, seed=s, physics_engine="mujoco") for s in (0, -1, -1)]
    starts = [e.reset()["obs"] for e in envs]
    assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2])
    for e in envs:
        e.close()


def test_episode_boundary_semantics():
    """IsaacGymEnvs: reset=True on the last step with its final obs; the env resets on the next
    step, whose reward is 0; time_outs marks the time limit."""
    env = qmix_isaac.make("MultiBallPush", num_envs=2, seed=0, episodeLength=5)
    env.reset()
    acts = torch.zeros(2, 2, dtype=torch.long)
    for t in range(1, 6):
        obs, rew, reset, ex = env.step(acts)
        assert env.progress_buf.tolist() == [t, t]
        assert reset.tolist() == ([True, True] if t == 5 else [False, False])
        assert ex["time_outs"].tolist() == reset.tolist()
    last_obs = obs["obs"].clone()
    assert ex["episode"]["length"].tolist() == [5.0, 5.0]
    obs, rew, reset, ex = env.step(acts)          # the crossing step
    assert rew.tolist() == [0.0, 0.0] and reset.tolist() == [False, False]
    assert env.progress_buf.tolist() == [0, 0]
    assert not torch.equal(obs["obs"], last_obs)   # a fresh episode's observation
    obs, rew, reset, ex = env.step(acts)
    assert env.progress_buf.tolist() == [1, 1]


def test_success_terminates_and_is_reported():
    env = qmix_isaac.make("MultiBallPush", num_envs=1, seed=0)
    env.reset()
    # put the goal on the box: the next step succeeds and terminates (not a time-out)
    env.goal_pos.copy_(env.engine.root_states[:, env.box_index, 0:2])
    _, rew, reset, ex = env.step(torch.zeros(1, 2, dtype=torch.long))
    assert reset.item() and not ex["time_outs"].item()
    assert ex["episode"]["success"].item() == 1.0
    assert ex["episode"]["rew/success"].item() == pytest.approx(env.reward_weights["success"])


def test_ants_stand_under_zero_torque():
    env = qmix_isaac.make("MultiAntPush", num_envs=4, seed=0, episodeLength=1000, dofNoise=0.0)
    env.reset()
    acts = zero_actions(env)
    steps_per_s = int(round(1.0 / env.dt))
    heights = []
    for t in range(3 * steps_per_s):
        _, _, reset, _ = env.step(acts)
        assert not reset.any()
        if t + 1 in (steps_per_s, 3 * steps_per_s):
            heights.append(env.engine.root_states[:, env.ant_index, 2].clone())
    h1, h3 = heights
    assert (h3 > 0.3).all(), "torso should rest on its legs, not the floor: %s" % h3
    assert (h3 - h1).abs().max() < 0.01, "torso height drifts under zero torque"


def test_box_moves_only_when_pushed():
    env = qmix_isaac.make("MultiBallPush", num_envs=8, seed=2, episodeLength=1000)
    obs = env.reset()
    box0 = env.engine.root_states[:, env.box_index, 0:3].clone()
    for _ in range(int(2.0 / env.dt)):
        obs, *_ = env.step(torch.zeros(8, 2, dtype=torch.long))
    idle = (env.engine.root_states[:, env.box_index, 0:3] - box0).norm(dim=-1)
    assert idle.max() < 1e-3, "box moved without being pushed: %s" % idle
    box0 = env.engine.root_states[:, env.box_index, 0:2].clone()
    for _ in range(int(3.0 / env.dt)):
        obs, *_ = env.step(scripted_ball_push_actions(obs["obs"]))
    pushed = (env.engine.root_states[:, env.box_index, 0:2] - box0).norm(dim=-1)
    # (some boxes reach their goal and restart near the origin, so look at the mean)
    assert pushed.mean() > 0.5, "the scripted team should move the boxes: %s" % pushed


@pytest.mark.parametrize("task, robots", [("MultiAntPush", "numAnts"), ("MultiBallPush", "numBalls")])
def test_robots_start_clear_of_each_other_and_the_box(task, robots):
    """No contact between two different bodies (robots, box) in any start state, for 2-4 robots
    (the floor is excluded). With MultiAntPush's old spawn range, 1.4-2.0 m from the box, a leg
    started inside the box in ~6% of worlds."""
    mujoco = pytest.importorskip("mujoco")
    for n in (2, 3, 4):
        env = qmix_isaac.make(task, num_envs=256, seed=n, physics_engine="mujoco", **{robots: n})
        env.reset()
        m = env.engine.model
        d = mujoco.MjData(m)
        root = m.body_rootid[m.geom_bodyid]                      # geom -> its free body (0: world)
        touching = 0
        for w in range(env.num_envs):
            mujoco.mj_setState(m, d, env.engine._state[w], mujoco.mjtState.mjSTATE_FULLPHYSICS)
            mujoco.mj_forward(m, d)
            a, b = root[d.contact.geom1[:d.ncon]], root[d.contact.geom2[:d.ncon]]
            touching += bool(((a != b) & (a != 0) & (b != 0)).any())
        env.close()
        assert touching == 0, "%d of 256 worlds start with %d %s touching" % (touching, n, robots)


def _success_rate(env, policy, steps):
    obs = env.reset()
    done = succ = 0.0
    for _ in range(steps):
        obs, _, _, ex = env.step(policy(obs))
        m = ex["episode"]["mask"].float()
        done += m.sum().item()
        succ += (ex["episode"]["success"] * m).sum().item()
    return succ / max(done, 1.0), done


def test_scripted_team_solves_ball_push_random_does_not():
    env = qmix_isaac.make("MultiBallPush", num_envs=32, seed=5)
    scripted, n1 = _success_rate(env, lambda o: scripted_ball_push_actions(o["obs"]), 400)
    g = torch.Generator().manual_seed(0)
    rand, n2 = _success_rate(env, lambda o: random_actions(env, g), 400)
    assert n1 >= 50 and n2 >= 50
    assert scripted > 0.6, scripted
    assert rand < 0.1, rand


def test_ball_reward_terms_hand_computed():
    ball = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    terms, box_d, ball_d, succ, fail = compute_ball_push_reward(
        ball_pos=ball, box_pos=torch.tensor([[1.0, 0.0]]), goal_pos=torch.tensor([[1.0, 3.0]]),
        prev_box_dist=torch.tensor([3.5]), prev_ball_dist=torch.tensor([1.25]),
        moving=torch.tensor([[True, False]]), success_radius=0.25, arena_radius=4.0)
    assert box_d.item() == pytest.approx(3.0) and ball_d.item() == pytest.approx(1.0)
    assert terms["box_progress"].item() == pytest.approx(0.5)
    assert terms["approach"].item() == pytest.approx(0.25)
    assert terms["action_cost"].item() == pytest.approx(0.5)
    assert not succ.item() and not fail.item()
    terms, _, _, succ, fail = compute_ball_push_reward(
        ball_pos=torch.tensor([[[4.5, 0.0]]]), box_pos=torch.tensor([[1.0, 0.0]]),
        goal_pos=torch.tensor([[1.1, 0.0]]), prev_box_dist=torch.tensor([0.0]),
        prev_ball_dist=torch.tensor([0.0]), moving=torch.tensor([[False]]),
        success_radius=0.25, arena_radius=4.0)
    assert succ.item() and not fail.item(), "success wins over a ball outside the arena"


def test_ant_reward_terms_hand_computed():
    s = math.sqrt(0.5)
    quat = torch.tensor([[[0.0, 0.0, 0.0, 1.0], [s, 0.0, 0.0, s]]])  # upright; rolled 90 deg
    terms, box_d, ant_d, succ, fail = compute_ant_push_reward(
        torso_pos=torch.tensor([[[0.0, 0.0, 0.4], [0.0, 2.0, 0.4]]]), torso_quat=quat,
        box_pos=torch.tensor([[0.0, 1.0, 0.2]]), goal_pos=torch.tensor([[4.0, 4.0]]),
        prev_box_dist=torch.tensor([5.5]), prev_ant_dist=torch.tensor([1.5]),
        joint_levels=torch.tensor([[1.0, -1.0, 0.0, 0.0]]), success_radius=0.4,
        arena_radius=8.0, fall_up_z=0.2)
    assert box_d.item() == pytest.approx(5.0)
    assert terms["box_progress"].item() == pytest.approx(0.5)
    assert terms["approach"].item() == pytest.approx(0.5)
    assert terms["upright"].item() == pytest.approx(0.5, abs=1e-6)
    assert terms["action_cost"].item() == pytest.approx(0.5)
    assert terms["fall"].item() == 1.0 and fail.item() and not succ.item()


def test_out_of_arena_ends_the_episode_as_a_failure():
    """The box (or a ball) outside the arena is a failure, not a success; at the env level the
    episode ends on that step by termination (time_outs False)."""
    _, _, _, succ, fail = compute_ball_push_reward(
        ball_pos=torch.tensor([[[0.0, 0.0]], [[0.0, 4.5]]]), box_pos=torch.tensor([[4.5, 0.0], [1.0, 0.0]]),
        goal_pos=torch.tensor([[0.0, 0.0], [0.0, 0.0]]), prev_box_dist=torch.zeros(2),
        prev_ball_dist=torch.zeros(2), moving=torch.zeros(2, 1, dtype=torch.bool),
        success_radius=0.25, arena_radius=4.0)
    assert fail.tolist() == [True, True] and succ.tolist() == [False, False]
    up = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
    kw = dict(torso_pos=torch.tensor([[[0.0, 0.0, 0.4]]]), torso_quat=up, goal_pos=torch.zeros(1, 2),
              prev_box_dist=torch.zeros(1), prev_ant_dist=torch.zeros(1), joint_levels=torch.zeros(1, 8),
              success_radius=0.4, arena_radius=8.0, fall_up_z=0.2)
    terms, _, _, succ, fail = compute_ant_push_reward(box_pos=torch.tensor([[9.0, 0.0, 0.2]]), **kw)
    assert fail.item() and not succ.item() and terms["fall"].item() == 0.0
    _, _, _, _, fail = compute_ant_push_reward(box_pos=torch.tensor([[7.0, 0.0, 0.2]]), **kw)
    assert not fail.item()
    for task in TASKS:  # an arena smaller than the start layout: every world fails at once
        env = qmix_isaac.make(task, num_envs=4, seed=0, arenaRadius=0.05, physics_engine="mujoco")
        env.reset()
        _, _, reset, ex = env.step(zero_actions(env))
        assert reset.all() and not ex["time_outs"].any(), task
        assert (ex["episode"]["success"] == 0).all() and (ex["episode"]["length"] == 1).all()
        env.close()


def test_ant_observations_hand_computed():
    """Egocentric frames: ant 0 yawed +90 degrees (heading along world +y), ant 1 rolled +90
    degrees about world x (yaw 0). Every value below is worked out by hand from the docstring of
    compute_ant_push_observations."""
    s = math.sqrt(0.5)
    quat = torch.tensor([[[0.0, 0.0, s, s], [s, 0.0, 0.0, s]]])
    lower, upper = torch.full((2, 8), -0.5), torch.full((2, 8), 1.5)
    obs, states = compute_ant_push_observations(
        torso_pos=torch.tensor([[[1.0, 0.0, 0.4], [1.0, -3.0, 0.3]]]), torso_quat=quat,
        torso_linvel=torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]),
        torso_angvel=torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]]]),
        dof_pos=torch.ones(1, 2, 8), dof_vel=torch.full((1, 2, 8), 2.0), dof_lower=lower,
        dof_upper=upper, box_pos=torch.tensor([[1.0, 2.0, 0.2]]),
        box_linvel=torch.tensor([[0.0, 1.0, 0.0]]), goal_pos=torch.tensor([[4.0, 2.0]]),
        time_left=torch.tensor([0.25]))
    assert obs.shape == (1, 2, 43) and states.shape == (1, 66)
    # world (x, y) in the heading frame of yaw +90: (y, -x); of yaw 0: unchanged
    ant0 = [0.4, 0, 0, -1, 0, -1, 0, 0, 0, 0.5] + [0.5] * 8 + [0.2] * 8 \
        + [2, 0, 1, 0, 2, -3, 0, -3, 0, 1, 0.25, 0.2, 1.0] + [-3, 0, 0, -1]
    # rolled +90 degrees about x, the world-to-body rotation maps gravity (0, 0, -1) -> (0, -1, 0),
    # linear (1, 0, 0) -> (1, 0, 0), angular (0, 0, 0.5) -> (0, 0.5, 0)
    ant1 = [0.3, 0, -1, 0, 1, 0, 0, 0, 0.5, 0] + [0.5] * 8 + [0.2] * 8 \
        + [0, 5, 0, 1, 3, 5, 3, 0, 1, 0, 0.25, 0.2, 1.0] + [0, 3, 0, 1]
    assert obs[0, 0].tolist() == pytest.approx(ant0, abs=1e-6)
    assert obs[0, 1].tolist() == pytest.approx(ant1, abs=1e-6)
    expect = [1, 0, 0.4, 1, -3, 0.3] + [0, 0, s, s, s, 0, 0, s] + [1, 0, 0] * 2 + [0, 0, 0.5] * 2 \
        + [0.5] * 16 + [0.2] * 16 + [-3, 0, 0.2] + [0, 1, 0] + [4, 2]
    assert states[0].tolist() == pytest.approx(expect, abs=1e-6)


def test_ball_observations_hand_computed():
    """World-aligned ball observations and the state's box yaw as (cos 4y, sin 4y): a box turned
    by 30 degrees reads (cos 120, sin 120)."""
    y = math.radians(30.0)
    obs, states = compute_ball_push_observations(
        ball_pos=torch.tensor([[[0.0, 0.0], [2.0, 1.0]]]), ball_vel=torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]),
        box_pos=torch.tensor([[1.0, 0.0]]), box_vel=torch.tensor([[0.5, 0.5]]),
        box_quat=torch.tensor([[0.0, 0.0, math.sin(y / 2), math.cos(y / 2)]]),
        goal_pos=torch.tensor([[1.0, 3.0]]), time_left=torch.tensor([0.5]))
    assert obs[0, 0].tolist() == pytest.approx([1, 0, 1, 0, 0.5, 0.5, 0, 3, 1, 3, 2, 1, 0, -1])
    assert obs[0, 1].tolist() == pytest.approx([-1, -1, 0, -1, 0.5, 0.5, 0, 3, -1, 2, -2, -1, 1, 0])
    c, s = math.cos(4 * y), math.sin(4 * y)
    assert states[0].tolist() == pytest.approx([-1, 0, 1, 1, 1, 0, 0, -1, 0, -3, 0.5, 0.5, c, s, 0.5],
                                               abs=1e-6)


def test_ant_actions_become_the_named_joints_torques():
    """Factored (ant) and flat (leg) actions: bin b of a joint is torque linspace(-1, 1)[b] x the
    motor's limit x powerScale on that joint alone, flat actions decoded little-endian in the
    agent's joints; a hip torqued positive turns the hip positive."""
    for mode in ("ant", "leg"):
        env = qmix_isaac.make("MultiAntPush", num_envs=2, seed=0, agentMode=mode, dofNoise=0.0,
                              physics_engine="mujoco")
        sent = []
        real = env.engine.set_dof_torques
        env.engine.set_dof_torques = lambda t: (sent.append(t.clone()), real(t))[1]
        env.reset()
        limit = 15.0 * float(env.cfg["task"]["powerScale"])
        want = torch.zeros(2, 16)
        if mode == "ant":                 # 8 branches of 3 bins per ant; bin 1 is zero torque
            acts = torch.ones(2, 2, 8, dtype=torch.long)
            acts[1, 1, 0] = 2              # world 1, ant 1, hip_1: +1
            acts[1, 0, 2] = 0              # world 1, ant 0, hip_2: -1
        else:                              # 4 legs per ant, flat 3 x 3: k = b(hip) + 3 b(ankle)
            acts = torch.full((2, 8), 1 + 3 * 1, dtype=torch.long)
            acts[1, 4] = 2 + 3 * 1         # ant 1, leg 0: hip_1 +1, ankle_1 0
            acts[1, 1] = 0 + 3 * 1         # ant 0, leg 1: hip_2 -1, ankle_2 0
        want[1, 8 + 0], want[1, 2] = limit, -limit
        start = env.engine.dof_pos.clone()
        for _ in range(3):
            env.step(acts)
        assert len(sent) == 3 and torch.allclose(sent[-1], want), (mode, sent[-1])
        moved = env.engine.dof_pos - start
        assert moved[1, 8] > 0.02 and moved[1, 2] < -0.02, (mode, moved[1])
        env.close()


def test_ant_approach_standoff_targets_the_spot_behind_the_box():
    # box at (1, 1), goal at (4, 5): unit vector box -> goal (0.6, 0.8); standoff 0.5 puts the
    # push spot at (1 - 0.3, 1 - 0.4) = (0.7, 0.6). Ants at (0.7, -0.4) and (0.7, 2.6): 1 m and
    # 2 m from it, mean 1.5; from the box centre they are sqrt(0.09+1.96) and sqrt(0.09+2.56).
    quat = torch.tensor([[[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]])
    common = dict(torso_pos=torch.tensor([[[0.7, -0.4, 0.4], [0.7, 2.6, 0.4]]]), torso_quat=quat,
                  box_pos=torch.tensor([[1.0, 1.0, 0.2]]), goal_pos=torch.tensor([[4.0, 5.0]]),
                  prev_box_dist=torch.tensor([5.0]), prev_ant_dist=torch.tensor([2.0]),
                  joint_levels=torch.zeros(1, 4), success_radius=0.4, arena_radius=8.0, fall_up_z=0.2)
    terms, _, ant_d, _, _ = compute_ant_push_reward(approach_standoff=0.5, **common)
    assert ant_d.item() == pytest.approx(1.5)
    assert terms["approach"].item() == pytest.approx(0.5)
    _, _, centre_d, _, _ = compute_ant_push_reward(**common)  # default: the box centre
    assert centre_d.item() == pytest.approx((math.sqrt(2.05) + math.sqrt(2.65)) / 2)


def test_ant_goal_curriculum_levels_follow_success():
    """Per-world goal-distance levels: level 0 draws from startGoalDistance; a success moves the
    world up one level (goal range moved linearly toward goalDistance), any other ending down
    one, never below 0."""
    from qmix_isaac.tasks.multi_ant_push import curriculum_goal_range
    lo, hi = curriculum_goal_range(torch.tensor([0, 1, 2]), 3, (0.5, 0.6), (2.0, 4.0))
    assert lo.tolist() == pytest.approx([0.5, 1.25, 2.0]) and hi.tolist() == pytest.approx([0.6, 2.3, 4.0])
    lo, hi = curriculum_goal_range(torch.tensor([0]), 1, (0.5, 0.6), (2.0, 4.0))  # one level: the top
    assert lo.tolist() == [2.0] and hi.tolist() == [4.0]
    env = qmix_isaac.make("MultiAntPush", num_envs=3, seed=0, episodeLength=4, levels=3,
                          startGoalDistance=[0.5, 0.6], physics_engine="mujoco")
    env.reset()
    start = env.metrics["start_box_dist"]
    assert ((start >= 0.5) & (start <= 0.6)).all(), start
    acts = zero_actions(env)
    env.goal_pos[0] = env.engine.root_states[0, env.box_index, :2]   # world 0's box is on its goal
    _, _, reset, ex = env.step(acts)
    assert reset.tolist() == [True, False, False] and ex["episode"]["success"][0] == 1.0
    env.step(acts)                                   # world 0 restarts, one level up
    assert env.goal_level.tolist() == [1, 0, 0]
    assert 1.25 <= start[0] <= 2.3 and ((start[1:] >= 0.5) & (start[1:] <= 0.6)).all(), start
    for _ in range(3):                               # worlds 1, 2 time out at step 4: floor 0
        env.step(acts)
    assert env.goal_level.tolist() == [1, 0, 0]
    for _ in range(2):                               # world 0 times out at its step 4: down
        env.step(acts)
    assert env.goal_level.tolist() == [0, 0, 0]
    env.close()


def test_physics_blowup_ends_that_episode_and_touches_no_other_world():
    """A world whose state turns non-finite ends its episode on that step as a time-out, with
    the statistics it had and a finite observation; the next step is its one crossing step, and
    its curriculum level does not move. The other worlds stay bit-identical to a run without it."""
    kw = dict(num_envs=3, seed=0, levels=3, physics_engine="mujoco")
    env, ref = qmix_isaac.make("MultiAntPush", **kw), qmix_isaac.make("MultiAntPush", **kw)
    env.reset()
    ref.reset()
    acts = zero_actions(env)
    for _ in range(5):
        env.step(acts)
        ref.step(acts)
    env.goal_level[1] = ref.goal_level[1] = 1
    ret, length = env.ep_return[1].item(), env.ep_length[1].item()
    assert length == 5.0 and ret != 0.0
    last_dist = env.metrics["final_box_dist"][1].item()
    env.engine.qvel[1, 0] = float("nan")
    obs, rew, reset, ex = env.step(acts)
    robs, rrew, _, _ = ref.step(acts)
    assert ex["blowups"].item() == 1 and ex["blown"].tolist() == [False, True, False]
    assert reset.tolist() == [False, True, False] and ex["time_outs"][1].item()
    assert torch.isfinite(obs["obs"]).all() and torch.isfinite(obs["states"]).all()
    assert rew[1].item() == 0.0, "the blown step earns nothing"
    ep = ex["episode"]
    assert ep["mask"].tolist() == [False, True, False]
    assert ep["length"][1].item() == length and ep["return"][1].item() == pytest.approx(ret)
    assert ep["success"][1].item() == 0.0
    # its final box-goal distance is its last sane step's, not the fresh start state's
    fresh_dist = torch.norm(env.goal_pos[1] - env.engine.root_states[1, env.box_index, :2]).item()
    assert abs(fresh_dist - last_dist) > 1e-3
    assert ep["final_box_dist"][1].item() == last_dist
    assert torch.equal(obs["obs"][[0, 2]], robs["obs"][[0, 2]]), "other worlds must not be touched"
    assert torch.equal(rew[[0, 2]], rrew[[0, 2]])
    obs, rew, reset, ex = env.step(acts)                 # the crossing step: a fresh episode
    assert not reset[1] and not ex["episode"]["mask"][1] and rew[1].item() == 0.0
    assert env.progress_buf[1].item() == 0 and env.goal_level[1].item() == 1
    env.step(acts)
    assert env.progress_buf[1].item() == 1 and env.ep_length[1].item() == 1.0
    assert env.blowups.item() == 1


def test_task_state_round_trip_replays_start_layouts_and_curriculum_levels():
    """``state_dict`` holds the task's generator and curriculum levels: a task loaded from it
    draws the same next start layouts as the original and starts its worlds at their levels;
    state of another world count is reported, not loaded."""
    kw = dict(num_envs=4, levels=3, physics_engine="mujoco")
    env = qmix_isaac.make("MultiAntPush", seed=3, **kw)
    env.reset()
    acts = zero_actions(env)
    for _ in range(3):
        env.step(acts)
    env.goal_level.copy_(torch.tensor([2, 0, 1, 2]))
    state = env.state_dict()
    other = qmix_isaac.make("MultiAntPush", seed=99, **kw)
    assert other.load_state_dict(state) == []
    assert other.goal_level.tolist() == [2, 0, 1, 2]
    env.reset()
    other.reset()  # a reset ends no episode: every world keeps its level
    assert other.goal_level.tolist() == [2, 0, 1, 2]
    d = other.metrics["start_box_dist"]          # each world's goal at its own level's distance
    assert 1.25 <= d[2].item() <= 2.5 and 0.5 <= d[1].item() <= 1.0 and d[0].item() >= 2.0
    assert torch.equal(other.goal_pos, env.goal_pos)
    assert torch.equal(other.engine.root_states, env.engine.root_states)
    fresh = qmix_isaac.make("MultiAntPush", seed=99, **kw)
    fresh.reset()
    assert not torch.equal(fresh.goal_pos, env.goal_pos), "seed 99 alone draws other goals"
    small = qmix_isaac.make("MultiAntPush", seed=99, num_envs=2, levels=3, physics_engine="mujoco")
    assert small.load_state_dict(state) == ["goal_level"]
    for e in (env, other, fresh, small):
        e.close()


@pytest.mark.parametrize("task", TASKS)
def test_every_reset_draws_its_own_start_from_the_pool(task):
    """Start states come from a pool drawn for ``startPool`` steps of every world at once; each
    step uses the next block, and a used-up pool is drawn anew: seven resets in a row (two pools of
    three and a bit) give every world seven different start layouts, none repeated."""
    env = qmix_isaac.make(task, num_envs=2, seed=0, startPool=3, physics_engine="mujoco")
    goals, boxes = [], []
    for _ in range(7):
        env.reset()
        goals.append(env.goal_pos.clone())
        boxes.append(env.engine.root_states[:, env.box_index, 0:2].clone())
    env.close()
    for seen in (torch.cat(goals), torch.cat(boxes)):               # [7 * 2, 2]
        gaps = torch.cdist(seen, seen) + torch.eye(len(seen)) * 1e9
        assert gaps.min() > 1e-4, "a start layout was used twice"


def test_a_resumed_task_never_replays_a_start_the_saved_one_used():
    """Saved two blocks into a pool of four: a task of the same pool size and world count draws
    that pool again and goes on with the saved task's next start (also from a state saved straight
    after loading); one of another pool size or world count starts past every draw the saved
    task made, so none of the start layouts it used comes back."""
    def make(seed, num_envs=3, pool=4):
        return qmix_isaac.make("MultiBallPush", num_envs=num_envs, seed=seed, startPool=pool,
                               physics_engine="mujoco")
    env = make(5)
    used = []
    for _ in range(2):
        env.reset()
        used.append(env.goal_pos.clone())
    state = env.state_dict()
    env.reset()
    same = make(9)
    assert same.load_state_dict(state) == []
    again = make(11)
    again.load_state_dict(same.state_dict())
    for task in (same, again):
        task.reset()
        assert torch.equal(task.goal_pos, env.goal_pos)
    for other in (make(9, pool=1), make(9, num_envs=2)):
        assert other.load_state_dict(state) == []
        for _ in range(4):
            other.reset()
            assert torch.cdist(other.goal_pos, torch.cat(used)).min() > 1e-4, "a used start came back"
    env.close()


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(task="NoSuchTask", num_envs=2), ConfigError, "unknown task"),
    (dict(task="MultiBallPush", num_envs=0), ConfigError, "num_envs"),
    (dict(task="MultiAntPush", num_envs=2, numAnts=0), TaskConfigError, "numAnts"),
    (dict(task="MultiBallPush", num_envs=2, numBalls=0), TaskConfigError, "numBalls"),
    (dict(task="MultiBallPush", num_envs=2, noSuchKey=1), ConfigError, "noSuchKey"),
    (dict(task="MultiAntPush", num_envs=2, startPool=0), TaskConfigError, "startPool"),
    (dict(task="MultiBallPush", num_envs=2, physics_engine="bullet"), ValueError, "physics_engine"),
    (dict(task="MultiBallPush", num_envs=2, physics_engine="physx"), RuntimeError, "Isaac Gym"),
])
def test_bad_input_one_clear_error(kwargs, exc, words):
    with pytest.raises(exc) as info:
        qmix_isaac.make(**kwargs)
    msg = str(info.value)
    assert words in msg and "\n" not in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        qmix_isaac.make("MultiBallPush", num_envs=2, sim_device="cuda:0")


def test_a_word_that_names_no_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="sim_device=gpu is not a device"):
        qmix_isaac.make("MultiBallPush", num_envs=2, sim_device="gpu")


def test_teammate_index():
    from qmix_isaac.tasks.base import teammate_index
    assert teammate_index(3, "cpu").tolist() == [[1, 2], [0, 2], [0, 1]]
    assert teammate_index(1, "cpu").shape == (1, 0)


def test_missing_engine_package_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "newton", None)   # as if newton[sim] were not installed
    monkeypatch.delitem(sys.modules, "qmix_isaac.sim.newton_engine", raising=False)
    with pytest.raises(ImportError) as info:
        qmix_isaac.make("MultiBallPush", num_envs=2, physics_engine="newton")
    assert "pip install 'newton[sim]'" in str(info.value) and "\n" not in str(info.value)
