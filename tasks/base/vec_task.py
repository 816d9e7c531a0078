"""The task contract, and ``MultiAgentVecTask``: the step/reset protocol shared by every task.

The contract, which the learner (``qmix_isaac.runner``) and the rl-games adapter read and a
user's own torch env may meet without this class (``tasks/toy.py``, installed as ``qmix_isaac.tasks.toy``, has examples):

- attributes ``num_envs`` (E), ``num_agents`` (A), ``num_obs`` (O), ``num_states`` (S),
  ``max_episode_length`` (policy steps), ``rl_device``; flat actions: ``num_actions`` (K),
  actions long [E, A]; factored (one branch per joint): ``action_branches`` (a tuple of bin
  counts), actions long [E, A, len(branches)];
- ``reset() -> obs_dict`` and ``step(actions) -> (obs_dict, rew, reset, extras)``, where
  ``obs_dict = {"obs": float [E, A, O], "states": float [E, S], "avail_actions": bool [E, A, K]}``
  (factored: [E, A, n_branches, widest branch]), ``rew`` float [E] (the team's), ``reset`` bool
  [E], all on ``rl_device``;
- ``extras["time_outs"]`` bool [E] and ``extras["episode"]`` (below).

A subclass describes its robots and props (:meth:`build_scene`), maps discrete actions to joint
torques (:meth:`pre_physics_step`), samples start states (:meth:`sample_start_states`) and
computes observations and named reward terms with pure tensor functions. Start states are drawn
for ``env.startPool`` steps of every world at once (one batch of sampling kernels every that many
steps instead of every step; each block of E rows serves one step's resets, so every reset still
gets its own independent draw); under ``env.cudaGraph`` they are drawn every step, inside the
graph. This class owns the engine, the buffers and the episode bookkeeping, with IsaacGymEnvs
semantics:

- ``step`` returns ``reset[E] = True`` on the LAST step of an episode, together with that
  episode's final observation; the env is reset at the start of the NEXT step's post-physics
  phase, so that step's transition crosses the boundary (its reward is 0 and learners mask it).
- ``extras["time_outs"]`` marks episodes cut by the time limit (bootstrap), as opposed to
  termination (success, failure).
- ``extras["episode"]`` holds per-env statistics of episodes that ended this step, valid where
  ``extras["episode"]["mask"]``: return, length, success, the task's metrics and every reward
  term's episode sum (``"rew/<term>"``). All tensors, no Python lists.
- A world whose state turns non-finite (a physics blow-up) gets a start state at once (physics
  only), so its observation stays finite; its episode ends on that step as a time-out with the
  statistics it had (no reward for the blown step) and the usual crossing step follows. Counted in
  ``extras["blowups"]``; ``blown_buf`` marks the step. One bad world never poisons the others.

Nothing in ``step`` reads a tensor on the host: resets are masked writes, not index lists. So on
CUDA the task's side of the step can be replayed from CUDA graphs (``env.cudaGraph: true``, engines
whose ``graph_capturable`` is True, i.e. newton): the first step runs eagerly, the second records
``pre_physics_step`` and ``post_physics_step`` (resets, observations, rewards, statistics: torch's
kernels and the engine's, on one stream) as two graphs, and it and every later step replay them around
``engine.simulate``, which launches the engine's own graph of the physics. The physics stays out of
the task's graphs because MuJoCo Warp's solver loop stops early (all worlds converged) only as a
conditional node of a Warp graph, which a torch capture cannot hold: inside one it would run every
solver iteration. Inside the graphs, Python-side values (config numbers, weights) are frozen at
capture: anything a task changes during training must live in a tensor.

As in IsaacGymEnvs, the returned observation, reward and reset tensors are the task's own
buffers (when ``rl_device`` is ``sim_device``) and the next ``step`` overwrites them in place:
a learner copies what it keeps past the next step. The same holds for ``extras``' tensors when the
step is replayed from CUDA graphs (they live in the graph's memory); eagerly they are new each step.
A ``step`` before any ``reset()`` resets first (IsaacGymEnvs starts every world flagged for reset;
without either, the first episode would start from the MJCF's own pose).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch

from qmix_isaac.qmix.spaces import ActionSpec
from qmix_isaac.sim import make_engine, resolve_device
from qmix_isaac.sim.scene import Scene

__all__ = ["MultiAgentVecTask", "TaskConfigError", "teammate_index"]


@functools.lru_cache(maxsize=None)
def teammate_index(n: int, device) -> torch.Tensor:
    """LongTensor [n, n-1]: row i lists every agent but i, in index order. Pure arithmetic (no
    boolean-mask indexing, which would make the device report its count to the host), made once
    per (n, device): the observations index with it every step. Read it, do not write it."""
    j = torch.arange(n - 1, device=device).view(1, -1)
    return j + (j >= torch.arange(n, device=device).view(-1, 1)).to(torch.long)


class TaskConfigError(ValueError):
    """A task configuration value is out of range or unknown (one-line message)."""


class MultiAgentVecTask:
    """Base of every multi-agent task. Subclasses set the sizes before calling ``__init__``:
    ``num_agents``, ``num_obs``, ``num_states`` and either ``num_actions`` (flat) or
    ``action_branches`` (a tuple of choices per branch)."""

    num_agents: int
    num_obs: int
    num_states: int
    num_actions: Optional[int] = None
    action_branches: Optional[Tuple[int, ...]] = None
    reward_terms: Tuple[str, ...] = ()
    metric_names: Tuple[str, ...] = ()

    def __init__(self, cfg: Dict[str, Any], rl_device: Any = "cpu", sim_device: Any = "cpu",
                 graphics_device_id: int = 0, headless: bool = True,
                 virtual_screen_capture: bool = False, force_render: bool = False) -> None:
        self.cfg = cfg
        env = cfg["env"]
        self.num_envs = int(env["numEnvs"])
        if self.num_envs < 1:
            raise TaskConfigError("num_envs must be >= 1 (got %d)" % self.num_envs)
        self.max_episode_length = int(env["episodeLength"])
        if self.max_episode_length < 1:
            raise TaskConfigError("episodeLength must be >= 1 (got %d)" % self.max_episode_length)
        self.control_freq_inv = int(env.get("controlFrequencyInv", 1))
        # IsaacGymEnvs' clipObservations: observations and states clamped to [-c, c] (inf: off)
        self.clip_obs = float(env.get("clipObservations", float("inf")))
        if not self.clip_obs > 0:
            raise TaskConfigError("clipObservations must be > 0 (got %s)" % self.clip_obs)
        if self.control_freq_inv < 1:
            raise TaskConfigError("controlFrequencyInv must be >= 1")
        self.sim_device = resolve_device(sim_device, "sim_device")
        self.rl_device = resolve_device(rl_device, "rl_device")
        self.device = self.sim_device  # IsaacGymEnvs name for where the buffers live
        self.headless = headless
        self.graphics_device_id = graphics_device_id
        self.physics_engine = str(cfg.get("physics_engine", "auto"))
        seed = cfg.get("seed", 0)
        self.rng = torch.Generator(device=self.sim_device)
        self.rng.manual_seed(int(seed) if seed is not None and int(seed) >= 0 else 0)

        self.scene = self.build_scene()
        self.engine = make_engine(self.physics_engine, self.scene, self.num_envs, self.sim_device,
                                  sim_cfg=cfg.get("sim"), headless=headless,
                                  graphics_device_id=graphics_device_id,
                                  env_spacing=env.get("envSpacing"))
        # the policy step in seconds (IsaacGymEnvs' VecTask.dt is the physics step: engine.dt here)
        self.dt = self.engine.dt * self.control_freq_inv

        E, A, dev = self.num_envs, self.num_agents, self.sim_device
        self.obs_buf = torch.zeros(E, A, self.num_obs, device=dev)
        self.states_buf = torch.zeros(E, self.num_states, device=dev)
        self.avail_buf = torch.ones((E, A) + self.action_shape, dtype=torch.bool, device=dev)
        if self.action_branches is not None:  # branches padded to the widest: padding never available
            self.avail_buf &= ActionSpec.factored_bins(self.action_branches).bin_mask(dev)
        self.rew_buf = torch.zeros(E, device=dev)
        self.reset_buf = torch.zeros(E, dtype=torch.bool, device=dev)
        self._never_reset = True  # a step before any reset() resets first
        self.terminated_buf = torch.zeros(E, dtype=torch.bool, device=dev)
        self.success_buf = torch.zeros(E, dtype=torch.bool, device=dev)
        self.timeout_buf = torch.zeros(E, dtype=torch.bool, device=dev)
        self.blown_buf = torch.zeros(E, dtype=torch.bool, device=dev)  # blew up on the last step
        self.progress_buf = torch.zeros(E, dtype=torch.long, device=dev)
        # episode statistics in one buffer [E, 2 + T]: return, length, then each reward term's
        # weighted sum, so that a step updates and snapshots them with a handful of kernels
        self.reward_weights = {k: float(cfg["task"]["rewards"][k]) for k in self.reward_terms}
        self._weights = torch.tensor([self.reward_weights[k] for k in self.reward_terms], device=dev)
        self.ep_stats = torch.zeros(E, 2 + len(self.reward_terms), device=dev)
        self.ep_return, self.ep_length = self.ep_stats[:, 0], self.ep_stats[:, 1]
        self._stat_names = ["return", "length"] + ["rew/" + k for k in self.reward_terms]
        self.blowups = torch.zeros((), dtype=torch.long, device=dev)
        self.metrics: Dict[str, torch.Tensor] = {k: torch.zeros(E, device=dev)
                                                 for k in self.metric_names}
        self.extras: Dict[str, Any] = {}
        self._all = torch.ones(E, dtype=torch.bool, device=dev)
        # env.cudaGraph: after one eager step, record the task's side of the step (actions ->
        # torques; resets, observations, rewards, statistics) as two CUDA graphs and replay them
        # around the engine's own physics graph (see the module docstring and step)
        use_graph = bool(env.get("cudaGraph", False)) and self.sim_device.type == "cuda"  # CPU: ignored
        if use_graph and not self.engine.graph_capturable:
            raise TaskConfigError("env.cudaGraph needs an engine that CUDA graphs can record "
                                  "(newton on cuda), not %s" % self.engine.name)
        if use_graph and self.rl_device != self.sim_device:
            raise TaskConfigError("env.cudaGraph needs rl_device == sim_device (got %s, %s)"
                                  % (self.rl_device, self.sim_device))
        self._graph_state = "cold" if use_graph else "off"
        # start states for start_pool steps of every world, drawn together (see _start_block);
        # a graph replays one step's kernels, so under env.cudaGraph they are drawn every step
        self.start_pool = int(env.get("startPool", 16))
        if self.start_pool < 1:
            raise TaskConfigError("startPool must be >= 1 (got %d)" % self.start_pool)
        if use_graph:
            self.start_pool = 1
        self._pool: Dict[str, torch.Tensor] = {}
        self._pool_next = self.start_pool      # next block to use; start_pool: draw a new pool
        self._pool_rng: Optional[torch.Tensor] = None  # the generator's state before this pool
        self._step_graphs: Optional[Tuple[Any, Any]] = None   # (pre-physics, post-physics)
        self._graph_actions: Optional[torch.Tensor] = None

    # ---- sizes ----------------------------------------------------------------------------------
    @property
    def action_shape(self) -> Tuple[int, ...]:
        """Per-agent shape of ``avail_actions``: (K,) flat or (n_branches, max_bins) factored."""
        if self.action_branches is not None:
            return (len(self.action_branches), max(self.action_branches))
        return (int(self.num_actions),)

    # ---- for subclasses -------------------------------------------------------------------------
    def build_scene(self) -> Scene:
        raise NotImplementedError

    def scene_options(self, floor_friction: float = 0.6) -> Dict[str, Any]:
        """``compose_scene``'s physics options from the config's ``sim`` block: dt, integrator,
        floorFriction (``floor_friction`` when absent) and the friction cone."""
        sim = self.cfg["sim"]
        return {"timestep": float(sim["dt"]), "integrator": str(sim.get("integrator", "implicitfast")),
                "floor_friction": float(sim.get("floorFriction", floor_friction)),
                "cone": str(sim.get("cone", "pyramidal"))}

    def pre_physics_step(self, actions: torch.Tensor) -> None:
        """Turn discrete actions into joint torques and hand them to the engine."""
        raise NotImplementedError

    def sample_start_states(self, n: int) -> Dict[str, torch.Tensor]:
        """``n`` independent start states, [n, ...] each: ``root_states``, ``dof_pos``, ``dof_vel``
        and any task-side state (goals, quantities derived from the start). Drawn for
        ``start_pool`` steps of every world at once (n = start_pool * E); each step's block of E
        rows is offered to every world, and only the rows of the worlds being reset are used.
        The base adds ``engine_state``, the three engine parts in the engine's own layout
        (``Engine.encode_state``), converted once per pool."""
        raise NotImplementedError

    def on_reset(self, mask: torch.Tensor, start: Dict[str, torch.Tensor]) -> None:
        """Update task-side buffers (goal, previous distances) of the worlds in ``mask`` from
        ``start``, this step's [E, ...] block of ``sample_start_states``."""

    def compute_observations(self) -> None:
        raise NotImplementedError

    def compute_reward(self) -> Dict[str, torch.Tensor]:
        """Set ``terminated_buf`` and ``success_buf``; return the named reward terms [E] (unweighted)."""
        raise NotImplementedError

    # ---- protocol -------------------------------------------------------------------------------
    def reset(self) -> Dict[str, torch.Tensor]:
        """Reset every world; return the first observations."""
        self._never_reset = False
        self._reset_worlds(self._all)
        self.engine.refresh()
        self.reset_buf.zero_()
        self.blown_buf.zero_()
        self._observe()
        return self._obs_dict()

    def step(self, actions: torch.Tensor):
        if self._never_reset:  # a Python flag: no host read
            self.reset()
        actions = actions.to(self.sim_device)
        if self._graph_state == "warm":  # the first step ran every kernel once: record them now
            self._step_graphs = self._record_step(actions)  # None after a warning: eager from now on
        if self._step_graphs is not None:
            pre, post = self._step_graphs
            with torch.cuda.device(self.sim_device):  # cuda:N: replays on its current stream
                self._graph_actions.copy_(actions)
                pre.replay()
                self.engine.simulate(self.control_freq_inv)  # the engine's own graph
                post.replay()
        else:
            self._physics_step(actions)
            if self._graph_state == "cold":
                self._graph_state = "warm"
        return self._obs_dict(), self.rew_buf.to(self.rl_device), \
            self.reset_buf.to(self.rl_device), self.extras

    def _physics_step(self, actions: torch.Tensor) -> None:
        self.pre_physics_step(actions)
        self.engine.simulate(self.control_freq_inv)
        self.post_physics_step()

    def _record_step(self, actions: torch.Tensor):
        """``pre_physics_step`` and ``post_physics_step`` (torch ops and the engine's kernels)
        recorded as two CUDA graphs, to be replayed around ``engine.simulate``; recording runs
        nothing, so the step that records them replays them too. None if a capture failed."""
        self._graph_actions = actions.clone()
        with torch.cuda.device(self.sim_device):
            pre = self._record_or_warn(lambda: self.pre_physics_step(self._graph_actions))
            post = None if pre is None else self._record_or_warn(self.post_physics_step, self.rng)
        if post is None:
            return None
        self._graph_state = "on"
        return pre, post

    def _record_or_warn(self, fn, generator: Optional[torch.Generator] = None):
        """``_record``, or None after a warning naming what failed (then every step runs eagerly)."""
        caller = torch.cuda.current_stream(self.sim_device)
        try:
            return self._record(fn, generator)
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager steps
            torch.cuda.set_stream(caller)  # a capture that fails at its end leaves its stream current
            self._graph_state, self._graph_actions = "off", None
            # the error that broke the capture, not the capture's end failing in its wake
            first = exc.__context__ if exc.__context__ is not None and not exc.__suppress_context__ else exc
            warnings.warn("env.cudaGraph: capturing the task step failed (%s: %s); stepping without "
                          "graphs" % (type(first).__name__, first), RuntimeWarning)
            return None

    def _record(self, fn, generator: Optional[torch.Generator] = None):
        """``fn()`` recorded (not run) into a new CUDA graph on a side stream, the engine's
        kernels on the same stream; ``generator``'s draws are replayed as fresh draws."""
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)
        stream = torch.cuda.Stream(device=self.sim_device)
        stream.wait_stream(torch.cuda.current_stream(self.sim_device))
        # thread_local: the capture mode engines are told of (Warp's default for external ones)
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"), \
                self.engine.capture_scope():
            fn()
        return graph

    def post_physics_step(self) -> None:
        blown = ~self.engine.healthy()                 # read from the engine's own state
        self.blowups += blown.sum()
        was_reset = self.reset_buf                    # worlds reset now: the crossing step
        restarted = was_reset | blown
        self._reset_worlds(was_reset, physics=restarted)
        self.blown_buf.copy_(blown)
        self.engine.refresh()
        self.progress_buf += ~was_reset
        self._observe()
        kept = torch.stack(list(self.metrics.values())) if self.metrics else None
        terms = self.compute_reward()
        if kept is not None:  # a blown world's episode ends with the metrics of its last sane step
            for i, m in enumerate(self.metrics.values()):
                torch.where(blown, kept[i], m, out=m)
        live_b = ~restarted                            # a blown world's step earns nothing
        live = live_b.to(self.rew_buf.dtype)
        weighted = torch.stack([terms[k] for k in self.reward_terms], -1) * self._weights \
            * live.unsqueeze(-1)                                               # [E, T]
        rew = torch.sum(weighted, -1, out=self.rew_buf)
        terminated = self.terminated_buf & live_b
        self.success_buf &= live_b
        timed_out = (self.progress_buf >= self.max_episode_length) & ~terminated & ~was_reset
        torch.bitwise_or(timed_out, blown, out=self.timeout_buf)
        torch.bitwise_or(terminated, self.timeout_buf, out=self.reset_buf)
        self.ep_stats += torch.cat([rew.unsqueeze(-1), live.unsqueeze(-1), weighted], -1)
        self.extras = self._extras(blown)

    # ---- internals ------------------------------------------------------------------------------
    def _reset_worlds(self, mask: torch.Tensor, physics: Optional[torch.Tensor] = None) -> None:
        """Start new episodes in the worlds of ``mask``; ``physics`` (a superset, default
        ``mask``) also gets a start state in the engine, without the task's bookkeeping."""
        start = self._start_block()
        self.engine.set_encoded_state(mask if physics is None else physics, start["engine_state"])
        self.on_reset(mask, start)
        self.progress_buf.masked_fill_(mask, 0)
        self.ep_stats.masked_fill_(mask.unsqueeze(-1), 0.0)

    def _start_block(self) -> Dict[str, torch.Tensor]:
        """This step's start states [E, ...]: the next unused block of the pool (views, no
        kernels), after drawing a new pool of ``start_pool`` blocks when the last is used up."""
        if self._pool_next >= self.start_pool:
            self._draw_pool()
        block = self._pool_next
        self._pool_next += 1
        return {k: v[block] for k, v in self._pool.items()}

    def _draw_pool(self) -> None:
        P, E = self.start_pool, self.num_envs
        if P > 1:  # what state_dict saves, so that a resumed task can draw this very pool again
            self._pool_rng = self.rng.get_state()
        rows = self.sample_start_states(P * E)
        # converted to the engine's own layout once per pool: a reset only selects rows
        rows["engine_state"] = self.engine.encode_state(rows["root_states"], rows["dof_pos"],
                                                        rows["dof_vel"])
        self._pool = {k: v.view((P, E) + tuple(v.shape[1:])) for k, v in rows.items()}
        self._pool_next = 0

    def _observe(self) -> None:
        self.compute_observations()
        if self.clip_obs != float("inf"):
            self.obs_buf.clamp_(-self.clip_obs, self.clip_obs)
            self.states_buf.clamp_(-self.clip_obs, self.clip_obs)

    def _obs_dict(self) -> Dict[str, torch.Tensor]:
        rl = self.rl_device
        return {"obs": self.obs_buf.to(rl), "states": self.states_buf.to(rl),
                "avail_actions": self.avail_buf.to(rl)}

    def _extras(self, blown: torch.Tensor) -> Dict[str, Any]:
        rl = self.rl_device
        # one snapshot of everything per-env: the buffers are updated in place next step
        snap = torch.cat([self.ep_stats, self.success_buf.unsqueeze(-1).to(self.ep_stats.dtype)]
                         + [v.unsqueeze(-1) for v in self.metrics.values()]
                         + [self.reset_buf.unsqueeze(-1).to(self.ep_stats.dtype),
                            self.timeout_buf.unsqueeze(-1).to(self.ep_stats.dtype)], -1).to(rl)
        names = self._stat_names + ["success"] + list(self.metrics)
        episode = {k: snap[:, i] for i, k in enumerate(names)}
        episode["mask"] = snap[:, len(names)] > 0.5
        return {"time_outs": snap[:, len(names) + 1] > 0.5, "episode": episode,
                "blowups": self.blowups.to(rl, copy=True), "blown": blown.to(rl)}

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs to go on as this one would: the task's generator (start
        layouts, goals) and any per-world task state a subclass adds. Not the worlds' physics:
        a resumed run starts new episodes, as IsaacGymEnvs' does. With a start-state pool in
        use, also the generator as it was before that pool was drawn and how much of it was used:
        a task of the same pool size and world count draws that pool again and goes on from there.
        """
        state: Dict[str, Any] = {"rng": self.rng.get_state()}  # past every draw made so far
        if self.start_pool > 1 and self._pool_next < self.start_pool:
            state.update(pool_rng=self._pool_rng, start_pool=self.start_pool,
                         start_block=self._pool_next, pool_envs=self.num_envs)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> List[str]:
        """Restore what fits this task; returns what did not (a generator of another device type,
        per-world state of another world count), for the caller to say."""
        skipped = []
        rng = state.get("rng")
        self._pool_next = self.start_pool  # the next reset draws a new pool, unless ...
        if rng is not None:
            try:
                if (state.get("start_pool") == self.start_pool
                        and state.get("pool_envs") == self.num_envs):
                    self.rng.set_state(state["pool_rng"])  # ... the saved task's, drawn again
                    self._draw_pool()
                    self._pool_next = int(state["start_block"])
                self.rng.set_state(rng)
            except (RuntimeError, TypeError, ValueError):  # a CPU generator's state on CUDA, or back
                self._pool_next = self.start_pool
                skipped.append("rng")
        return skipped

    def close(self) -> None:
        self._step_graphs = None  # the task's graphs before the engine they recorded kernels of
        self.engine.close()
