"""QMIX runner: act in a vectorised env, store sequences on the device, update, log, evaluate.

    runner = build_runner(train_cfg, env)          # cfg/train/<Task>QMIX.yaml (dict or OmegaConf)
    runner.learn(total_env_steps, log_fn=fn)       # fn(env_steps: int, stats: dict of 0-d tensors / numbers)
    runner.evaluate(eval_env, n_episodes)          # greedy; dict of floats
    torch.save(runner.state_dict(), path)          # tensors / ints / floats / dicts only
    runner.load_state_dict(torch.load(path, weights_only=True))

The env is anything meeting the task contract (tasks/base/vec_task.py). Between ``env.step`` and the gradient step nothing
reads a tensor on the host (no .item() / .cpu() / Python branches on values / boolean indexing):
statistics accumulate as device tensors and ``log_fn`` receives them every ``log_interval`` env
steps; it is the only place where they may be read. Counters (env steps, gradient steps, the
replay fill) are host ints, known without asking the device.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch

from .qmix.agent import RNNAgent
from .qmix.exploration import EpsilonGreedy
from .qmix.learner import QLearner
from .qmix.mixer import build_mixer, mixer_map
from .qmix.replay import SequenceReplay
from .qmix.spaces import ActionSpec
from .qmix.targets import greedy_actions

__all__ = ["GreedyTeam", "QMIXRunner", "build_runner", "evaluate", "print_stats"]

LogFn = Callable[[int, Dict[str, Any]], None]
_StatKey = Union[str, Tuple[str, ...]]  # a name, or the names of a [K] sum (add_masked)


class _DeviceMeans:
    """Running sums and counts kept as device tensors; read only when popped and logged."""

    def __init__(self, device=None) -> None:
        self.device = device
        self.sums: Dict[_StatKey, Any] = {}
        self.counts: Dict[_StatKey, Any] = {}

    def add(self, key: _StatKey, total, count) -> None:
        """Add ``total`` (a [K] tensor when ``key`` is a tuple of K names) over ``count`` items."""
        self.sums[key] = self.sums.get(key, 0) + total
        self.counts[key] = self.counts.get(key, 0) + count

    def add_masked(self, values: Mapping[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Sum each named [E] tensor over the worlds in ``mask``, all in one: a handful of
        kernels per call however many names (the acting loop calls this every step)."""
        if values:
            stacked = torch.stack([v.to(torch.float32) for v in values.values()], -1)  # [E, K]
            self.add(tuple(values), torch.where(mask.unsqueeze(-1), stacked, 0.0).sum(0), mask.sum())

    def pop(self, reduce: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None) -> Dict[str, Any]:
        """Means since the last pop. ``reduce`` sums sums and counts over processes first
        (torchrun: ``distributed.sum_over_ranks``), so means weigh every rank's episodes."""
        sums, counts = {}, {}
        for key, total in self.sums.items():
            if isinstance(key, tuple):  # a group from add_masked: one [K] sum for K names
                sums.update(zip(key, total.unbind(0)))
                counts.update(dict.fromkeys(key, self.counts[key]))
            else:
                sums[key], counts[key] = total, self.counts[key]
        if reduce is not None:
            keys = sorted(sums)
            both = reduce({**{"s/" + k: torch.as_tensor(sums[k], device=self.device) for k in keys},
                           **{"c/" + k: torch.as_tensor(counts[k], device=self.device) for k in keys}})
            sums = {k: both["s/" + k] for k in keys}
            counts = {k: both["c/" + k] for k in keys}
        out = {}
        for key, total in sums.items():
            count = counts[key]
            if isinstance(count, torch.Tensor):  # empty windows give NaN, not a fake zero
                mean = total / count.clamp(min=1)
                out[key] = torch.where(count > 0, mean, torch.full_like(mean, float("nan")))
            else:
                out[key] = total / max(count, 1)
        self.sums, self.counts = {}, {}
        return out


def print_stats(env_steps: int, stats: Mapping[str, Any]) -> None:
    """Default log_fn: one line of ``key=value`` (reads the tensors: log time only)."""
    body = "  ".join(f"{k}={float(v):.4g}" for k, v in sorted(stats.items()))
    print(f"[qmix] env_steps={env_steps}  {body}", flush=True)


def _thread_count(train_threads: int) -> int:
    """``train_threads`` as a count: n > 0 as given; 0, the cores this process may use divided
    among the ranks torchrun started on this host (``LOCAL_WORLD_SIZE``)."""
    if train_threads > 0:
        return train_threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


@contextlib.contextmanager
def _torch_threads(n: Optional[int]):
    """torch runs ``n`` intra-op threads inside, its own setting again after (None: untouched)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class QMIXRunner:
    """Acting + replay + updates loop over one vectorised env.

    Args:
        env: a vectorised env meeting the task contract (tasks/base/vec_task.py).
        learner: the QLearner (owns agent, mixer, targets, optimiser).
        replay: the SequenceReplay (sized for ``env.num_envs``).
        explorer: the EpsilonGreedy schedule.
        batch_size: sequences per gradient step.
        replay_ratio: gradient steps per env step (one env.step of E envs is E env steps).
            Each stored transition is replayed about replay_ratio * batch_size * seq_len times.
        learning_starts: env steps held in the replay before the first gradient step (a resumed
            run, whose replay starts empty, refills it first; capped at the replay's capacity).
        log_interval: env steps between two calls of ``log_fn``.
        train_threads: torch's intra-op threads for the gradient steps of a learner on the CPU;
            torch returns to its own setting after them. None leaves torch alone; 0 takes every
            core this process may use (shared among a torchrun job's ranks on the host). The
            MuJoCo engine holds torch to one thread because its physics pool uses every core;
            the pool idles while the learner updates (BENCHMARKS.md, "The learner on every core").
    """

    def __init__(
        self,
        env,
        *,
        learner: QLearner,
        replay: SequenceReplay,
        explorer: EpsilonGreedy,
        batch_size: int = 32,
        replay_ratio: float = 1e-3,
        learning_starts: int = 0,
        log_interval: int = 100_000,
        train_threads: Optional[int] = None,
    ) -> None:
        self.env = env
        self.learner = learner
        self.replay = replay
        self.explorer = explorer
        self.batch_size = int(batch_size)
        self.replay_ratio = float(replay_ratio)
        self.learning_starts = int(learning_starts)
        self.log_interval = int(log_interval)
        self.spec = ActionSpec.from_env(env)
        self.device = replay.device
        if train_threads is not None and int(train_threads) < 0:
            raise ValueError(f"runner.train_threads must be null, 0 (every core) or a thread count; got {train_threads}")
        # resolved once: torch's thread count for the gradient steps (None: torch is left alone)
        self.train_threads = None if train_threads is None or self.device.type != "cpu" else _thread_count(int(train_threads))
        self.writer = replay.make_writer()
        self.env_steps = 0  # host counters
        self._grad_credit = 0.0
        self._stats = _DeviceMeans(self.device)
        # torchrun: sums statistics over ranks at the logging interval (train.py sets it)
        self.stats_reduce: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
        self._obs: Optional[Dict[str, torch.Tensor]] = None
        self._last_log = (0, time.perf_counter())

    @property
    def agent(self) -> RNNAgent:
        return self.learner.agent

    # -- acting ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Reset the env and the acting state (GRU state, last action, episode trackers)."""
        E, A, nb = self.env.num_envs, self.env.num_agents, self.spec.n_branches
        self._obs = {k: v.clone() for k, v in self.env.reset().items()}  # env buffers: see _step
        self.writer.restart()  # a kept overlap would splice the old trajectory onto the new one
        self._hidden = self.agent.init_hidden(E)
        self._prev_action = torch.zeros(E, A, nb, dtype=torch.long, device=self.device)
        self._start = torch.ones(E, dtype=torch.bool, device=self.device)  # obs begins an episode
        self._boundary = torch.zeros(E, dtype=torch.bool, device=self.device)  # this step crosses a reset
        self._ep_return = torch.zeros(E, device=self.device)
        self._ep_length = torch.zeros(E, device=self.device)

    @torch.no_grad()
    def _step(self, epsilon: float) -> None:
        """Act, step all envs, write the step to the sequence writer, track episodes. No syncs."""
        obs = self._obs
        avail = self.spec.avail_from_env(obs["avail_actions"])
        q, self._hidden = self.agent(obs["obs"], self._prev_action, self._start, self._hidden)
        action = self.explorer.select(q, avail, epsilon)
        next_obs, reward, done, extras = self.env.step(self.spec.to_env(action))
        # Tasks return their own buffers (IsaacGymEnvs style: obs_buf.to(rl_device) is obs_buf itself
        # when the devices match), which the next env.step overwrites in place. What is kept past
        # the next step (the observation, written to the replay after that step; done, which
        # becomes the boundary / start flags) must be a copy.
        next_obs = {k: v.clone() for k, v in next_obs.items()}
        done = done.to(torch.bool, copy=True)
        time_out = extras["time_outs"].to(torch.bool) if "time_outs" in extras else torch.zeros_like(done)
        self.writer.add(
            obs=obs["obs"], state=obs["states"], avail=avail, action=action, reward=reward,
            done=done, time_out=time_out, boundary=self._boundary,
        )  # fmt: skip
        self._track_episodes(reward, done, extras)
        # After a boundary step the next observation is a new episode's first (GRU restarts there);
        # after a done step the next transition is the boundary one (its action is ignored).
        self._start, self._boundary = self._boundary, done
        self._prev_action, self._obs = action, next_obs

    def _track_episodes(self, reward: torch.Tensor, done: torch.Tensor, extras: Mapping[str, Any]) -> None:
        live = (~self._boundary).to(reward.dtype)  # the boundary step's reward belongs to no episode
        self._ep_return += reward * live
        self._ep_length += live
        self._stats.add_masked({"rollout/episode_return": self._ep_return,
                                "rollout/episode_length": self._ep_length}, done)
        self._ep_return = torch.where(done, 0.0, self._ep_return)
        self._ep_length = torch.where(done, 0.0, self._ep_length)
        episode = extras.get("episode")
        if episode is not None:  # the env's own per-episode statistics (Python dict keys: no sync)
            self._stats.add_masked({"episode/" + k: v for k, v in episode.items() if k != "mask"},
                                   episode["mask"].to(torch.bool))

    def collect(self) -> int:
        """Step all envs until one sequence per env is complete and stored. Returns env steps taken."""
        if self._obs is None:
            self.reset()
        steps = 0
        epsilon = self.explorer.epsilon(self.env_steps)
        while not self.writer.full:  # host int comparison
            self._step(epsilon)
            steps += self.env.num_envs
        self.replay.insert(self.writer.buf)
        self.writer.roll()
        self.env_steps += steps
        return steps

    # -- learning ----------------------------------------------------------------------------

    def grad_steps_due(self, new_env_steps: int) -> int:
        """Gradient steps owed for ``new_env_steps`` at ``replay_ratio`` (fractions carry over)."""
        stored = self.replay.num_stored * self.replay.seq_len  # host ints: no sync
        if stored < min(self.learning_starts, self.replay.capacity * self.replay.seq_len):
            return 0
        self._grad_credit += self.replay_ratio * new_env_steps
        n = int(self._grad_credit)
        self._grad_credit -= n
        return n

    def train(self, n_grad_steps: int) -> None:
        if n_grad_steps <= 0:
            return
        with _torch_threads(self.train_threads):
            for _ in range(n_grad_steps):
                for key, value in self.learner.update(self.replay.sample(self.batch_size)).items():
                    self._stats.add(key, value, 1)

    def learn(self, total_env_steps: int, log_fn: Optional[LogFn] = None) -> None:
        """Act -> store -> update -> log until ``total_env_steps`` env steps (all envs counted)."""
        log_fn = print_stats if log_fn is None else log_fn
        next_log = self.env_steps + self.log_interval
        while self.env_steps < total_env_steps:
            new_steps = self.collect()  # T steps of every env, epsilon-greedy, into the replay
            self.train(self.grad_steps_due(new_steps))  # replay ratio: gradient steps per env step
            if self.env_steps >= next_log or self.env_steps >= total_env_steps:
                log_fn(self.env_steps, self.pop_stats())  # the only place statistics are read
                next_log = self.env_steps + self.log_interval

    def pop_stats(self) -> Dict[str, Any]:
        """Means since the last call: 0-d device tensors (NaN where nothing happened) and host numbers."""
        stats = self._stats.pop(self.stats_reduce)
        now = time.perf_counter()
        steps0, t0 = self._last_log
        self._last_log = (self.env_steps, now)
        rate = (self.env_steps - steps0) / max(now - t0, 1e-9)
        if self.stats_reduce is not None:  # every rank's rate, summed
            rate = float(self.stats_reduce({"r": torch.tensor(rate, device=self.device)})["r"])
        stats["charts/env_steps_per_s"] = rate
        stats["charts/epsilon"] = self.explorer.epsilon(self.env_steps)
        stats["charts/grad_steps"] = self.learner.grad_steps
        stats["charts/replay_sequences"] = self.replay.num_stored
        return stats

    # -- evaluation and checkpoints ----------------------------------------------------------

    def evaluate(self, env=None, n_episodes: int = 100, **kwargs) -> Dict[str, float]:
        """Greedy evaluation (see ``evaluate``); on the training env, the acting state restarts after."""
        if env is None or env is self.env:
            self._obs = None  # the next collect() resets env and acting state
            env = self.env
        return evaluate(self.agent, env, n_episodes, **kwargs)

    def state_dict(self) -> Dict[str, Any]:
        """Learner (agent, mixer, targets, optimiser, grad steps) and counters; not the replay."""
        return {"learner": self.learner.state_dict(), "env_steps": self.env_steps, "grad_credit": self._grad_credit}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.env_steps = int(state["env_steps"])
        self._grad_credit = float(state["grad_credit"])
        self._last_log = (self.env_steps, time.perf_counter())  # rates count from here


class GreedyTeam:
    """The greedy team acting in ``env`` (from ``env.reset()``), with the recurrent state, last
    actions and episode-start flags restarted at episode boundaries exactly as in training."""

    def __init__(self, agent: RNNAgent, env) -> None:
        self.agent, self.env = agent, env
        self.spec = ActionSpec.from_env(env)
        E, device = env.num_envs, agent.agent_ids.device
        self.obs = env.reset()
        self.hidden = agent.init_hidden(E)
        self.prev = torch.zeros(E, env.num_agents, self.spec.n_branches, dtype=torch.long, device=device)
        self.start = torch.ones(E, dtype=torch.bool, device=device)
        self.boundary = torch.zeros(E, dtype=torch.bool, device=device)

    @torch.no_grad()
    def step(self):
        """Act greedily and step the env: ``(reward, done, extras, crossing)``, where ``crossing``
        marks the worlds whose step crossed an episode boundary (their reward is no episode's)."""
        q, self.hidden = self.agent(self.obs["obs"], self.prev, self.start, self.hidden)
        action = greedy_actions(q, self.spec.avail_from_env(self.obs["avail_actions"]))
        self.obs, reward, done, extras = self.env.step(self.spec.to_env(action))
        done = done.to(torch.bool, copy=True)  # kept as next step's boundary: the env reuses its buffer
        crossing = self.boundary
        self.start, self.boundary, self.prev = self.boundary, done, action
        return reward, done, extras, crossing


@torch.no_grad()
def evaluate(agent: RNNAgent, env, n_episodes: int, *, skip_first: bool = False) -> Dict[str, float]:
    """Greedy policy for the first ``ceil(n_episodes / E)`` episodes of every env (so >= n_episodes).

    Starts with ``env.reset()``; ``skip_first`` drops each env's first episode, for envs whose
    reset() does not restart running episodes. Returns means of "return", "length" (the env steps
    of the episodes, boundary steps excluded), every key of ``extras["episode"]``, and "episodes".
    Not on the hot path: it reads the device once every ``max_episode_length`` steps.
    """
    E, device = env.num_envs, agent.agent_ids.device
    skip = 1 if skip_first else 0
    per_env = math.ceil(n_episodes / E)
    team = GreedyTeam(agent, env)
    ep_return, ep_length = torch.zeros(E, device=device), torch.zeros(E, device=device)
    finished = torch.zeros(E, dtype=torch.long, device=device)  # episodes ended, per env
    n_counted = torch.zeros((), dtype=torch.long, device=device)
    means = _DeviceMeans()
    max_steps = (per_env + skip) * (env.max_episode_length + 1) + 1
    for step in range(max_steps):
        reward, done, extras, crossing = team.step()
        live = (~crossing).to(reward.dtype)
        ep_return += reward * live
        ep_length += live
        counted = done & (finished >= skip) & (finished < skip + per_env)
        means.add_masked({"return": ep_return, "length": ep_length}, counted)
        episode = extras.get("episode", {})
        if episode:  # return and length: counted above
            means.add_masked({k: v for k, v in episode.items() if k not in ("mask", "return", "length")},
                             counted & episode["mask"].to(torch.bool))
        n_counted += counted.sum()
        finished += done.long()
        ep_return = torch.where(done, 0.0, ep_return)
        ep_length = torch.where(done, 0.0, ep_length)
        if (step + 1) % env.max_episode_length == 0 and bool((finished >= skip + per_env).all()):
            break
    out = {k: float(v) for k, v in means.pop().items()}
    out["episodes"] = float(n_counted)
    return out


def _plain_dict(cfg: Any) -> Dict[str, Any]:
    """OmegaConf or Mapping -> plain nested dict (omegaconf imported only if it is one)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return copy.deepcopy(dict(cfg))


_SECTIONS = ("algo", "agent", "mixer", "learner", "replay", "exploration", "runner")


def build_runner(train_cfg: Any, env, *, device=None) -> QMIXRunner:
    """The one place a train config (cfg/train/<Task>QMIX.yaml; whole or its ``params``) becomes objects.

    Every section's keys are the keyword arguments of one constructor, so an unknown key is an
    error. ``mixer.name`` picks the mixer from ``mixer_map``; ``mixer.<name>`` holds its options.
    ``replay.burn_in`` is shared with the learner; ``replay.obs_dtype`` is a torch dtype name.
    """
    cfg = _plain_dict(train_cfg)
    cfg = cfg.get("params", cfg)
    unknown = set(cfg) - set(_SECTIONS)
    if unknown:
        raise KeyError(f"unknown train config sections {sorted(unknown)}; expected {_SECTIONS}")
    device = torch.device(device if device is not None else env.rl_device)
    spec = ActionSpec.from_env(env)

    agent = RNNAgent(n_agents=env.num_agents, obs_dim=env.num_obs, action_spec=spec, **cfg.get("agent", {}))
    mixer_cfg = dict(cfg.get("mixer", {"name": "qmix"}))
    name = mixer_cfg.pop("name")
    options = mixer_cfg.pop(name, None) or {}
    stray = set(mixer_cfg) - set(mixer_map)
    if stray:
        raise KeyError(f"unknown mixer keys {sorted(stray)}")
    mixer = build_mixer(name, n_agents=env.num_agents, state_dim=env.num_states, **options)

    replay_cfg = dict(cfg.get("replay", {}))
    obs_dtype = getattr(torch, replay_cfg.pop("obs_dtype", "float32"))
    replay = SequenceReplay(
        num_envs=env.num_envs, n_agents=env.num_agents, obs_dim=env.num_obs, state_dim=env.num_states,
        n_branches=spec.n_branches, max_bins=spec.max_bins, device=device, obs_dtype=obs_dtype, **replay_cfg,
    )  # fmt: skip
    learner = QLearner(agent=agent.to(device), mixer=mixer.to(device), burn_in=replay.burn_in, **cfg.get("learner", {}))
    explorer = EpsilonGreedy(**cfg.get("exploration", {}))
    return QMIXRunner(env, learner=learner, replay=replay, explorer=explorer, **cfg.get("runner", {}))
