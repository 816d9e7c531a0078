"""Train, resume, evaluate or watch a QMIX (or rl-games PPO / MAPPO) team — IsaacGymEnvs
conventions, Hydra overrides.

    python train.py task=MultiAntPush                         # train (Newton on CUDA, MuJoCo on CPU)
    python train.py task=MultiBallPush num_envs=64 max_iterations=200
    python train.py checkpoint=runs/<run>/nn/last.pth         # resume where it stopped
    python train.py test=True checkpoint=runs/<run>/nn/best.pth [capture_video=True]
    python train.py test=True checkpoint=... headless=False [viewer_steps=N]   # watch (ESC quits)

A run writes ``<train_dir>/<experiment>_<date>/``: ``config.yaml`` (resolved), ``nn/last.pth``
and ``nn/best.pth``, TensorBoard ``summaries/``, ``curves.png`` and (``capture_video=True``)
``videos/``. Bad input (an
unknown task, a mistyped override, a missing or foreign checkpoint, CUDA without CUDA) ends with
one line on stderr, exit code 2, and no run folder.

Resuming (``checkpoint=`` without ``test=True``) continues the checkpoint's counters (iterations,
env steps, gradient steps), the task's generator and curriculum levels, and the learning curves in
a new run folder; ``max_iterations`` counts from the start of the run. The task and train configs
are the checkpoint's, with the command line's ``task.*`` / ``train.*`` overrides on top
(``train=`` naming another file than the checkpoint's is refused); a checkpoint whose task or
network shapes differ from the requested ones is refused.
"""
from __future__ import annotations

import datetime
import math
import os
import random
import sys
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_NUM_ENVS = 256  # default number of worlds when simulating on the CPU
CFG_DIR = os.path.join(HERE, "cfg")


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit code 2."""


def fail(msg: str, code: int = 2) -> None:
    if os.environ.get("RANK", "0") == "0" or code != 2:  # torchrun: one line per job, not per rank
        print("train.py: error: " + msg, file=sys.stderr, flush=True)
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def _given(argv: List[str], key: str) -> Optional[str]:
    """The command line's value of ``key`` (also given as ``+key=`` / ``++key=``), else None."""
    for a in argv:
        name, eq, value = a.partition("=")
        if eq and name.lstrip("+~") == key:
            return value
    return None


def _checkpoint_train_name(ckpt) -> Optional[str]:
    """The cfg/train file an rl-games checkpoint was trained with (its ``params.config.name``),
    so that ``train.*`` overrides of a PPO checkpoint compose against that file, not QMIX's."""
    params = ((ckpt or {}).get("train_cfg") or {}).get("params") or {}
    name = (params.get("config") or {}).get("name")
    return name if name and os.path.isfile(os.path.join(CFG_DIR, "train", name + ".yaml")) else None


def train_config_name(argv: List[str], cfg, ckpt) -> Optional[str]:
    """The cfg/train file whose config the run uses. A resumed or replayed run uses its
    checkpoint's (plus ``train.*`` overrides): ``train=`` naming another file of the same learner
    is refused, since it would not be read (another learner: ``check_checkpoint_learner``)."""
    from qmix_isaac.record.checkpoint import CheckpointError
    from qmix_isaac.rlgames import checkpoint_learner, learner_of

    given = _given(argv, "train")
    if ckpt is None:
        return given or "%sQMIX" % cfg.task.name
    had = ckpt.get("train_name") or _checkpoint_train_name(ckpt)
    if given is not None and given != had and learner_of(cfg.train) == checkpoint_learner(ckpt):
        if had is None:  # written before checkpoints named their train config
            print("[qmix-isaac] train=%s is not read: the checkpoint's own train config is used "
                  "(change its values with train.params.<key>=...)" % given, flush=True)
        else:
            raise CheckpointError("the checkpoint was trained with train=%s and keeps its train "
                                  "config: leave out train=%s (change values with "
                                  "train.params.<key>=...)" % (had, given))
    return had


def compose_config(argv: List[str], checkpoint_task: Optional[str] = None,
                   checkpoint_train: Optional[str] = None):
    """Hydra's compose over ``cfg/`` with the command-line overrides; errors become UsageError.
    Without ``task=`` / ``train=`` a checkpoint's own task / rl-games train config is composed."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from qmix_isaac.config import available_tasks, register_resolvers

    register_resolvers()
    overrides = list(argv)
    task = _given(argv, "task")
    if task is None and checkpoint_task is not None:
        overrides.append("task=" + checkpoint_task)
        task = checkpoint_task
    if task is not None and task not in available_tasks():
        raise UsageError("unknown task %r; available: %s" % (task, ", ".join(available_tasks())))
    train = _given(argv, "train")
    if train is None and checkpoint_train is not None:
        overrides.append("train=" + checkpoint_train)
    if train is not None and not os.path.isfile(os.path.join(CFG_DIR, "train", train + ".yaml")):
        raise UsageError("unknown train config %r (no cfg/train/%s.yaml)" % (train, train))
    for a in argv:
        if "=" not in a:
            raise UsageError("override %r is not key=value" % a)
    try:
        with initialize_config_dir(config_dir=CFG_DIR, version_base=None, job_name="train"):
            cfg = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise UsageError("bad override: %s" % str(exc).strip().splitlines()[0])
    return cfg


def resolve_device(name: str, key: str) -> str:
    """``auto``: cuda:0 where there is CUDA, else cpu; otherwise ``name``, checked and indexed."""
    import torch
    if name in ("", "auto", None):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    from qmix_isaac.sim.base import resolve_device as checked
    try:
        return str(checked(name, key))
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def set_seed(seed: int, deterministic: bool, rank: int = 0) -> int:
    """Seed python, numpy and torch with ``seed + rank`` (``seed`` -1: drawn at random first, so
    that torchrun's ranks draw too); returns the seed used."""
    import numpy as np
    import torch
    if seed == -1:
        seed = random.SystemRandom().randint(0, 2 ** 31 - 1)
    seed += rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return seed


def _positive(cfg, key: str, least: int = 1) -> None:
    value = cfg[key]
    if value in ("", None):
        return
    try:
        ok = isinstance(value, (int, str)) and not isinstance(value, bool) and int(value) >= least
    except ValueError:
        ok = False
    if not ok:
        raise UsageError("%s must be an integer >= %d (got %s)" % (key, least, value))


BOOLEANS = ("test", "headless", "capture_video", "torch_deterministic", "multi_gpu",
            "wandb_activate", "sync_debug", "force_render")


def _boolean(cfg, key: str) -> None:
    if not isinstance(cfg[key], bool):  # Hydra reads true / false, in any case, as booleans
        raise UsageError("%s must be true or false (got %s)" % (key, cfg[key]))


def _kind_error(key: str, value: Any, like: Any) -> Optional[str]:
    """Why ``value`` cannot stand where a config has ``like`` (a word for a number, a number for
    a flag), or None."""
    if isinstance(like, bool):
        return None if isinstance(value, bool) else "%s must be true or false (got %s)" % (key, value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(like, (int, float)) and not number:
        return "%s must be a number (got %s)" % (key, value)
    return None


def check_task_values(argv: List[str], cfg) -> None:
    """The command line's ``task.*`` values against the kinds of the task config's own: a word
    where a task reads a number would fail deep inside the task, without naming the key."""
    from omegaconf import OmegaConf

    from qmix_isaac.config import load_task_config
    keys = [k for k in (a.split("=", 1)[0].lstrip("+") for a in argv) if k.startswith("task.")]
    defaults = load_task_config(str(cfg.task.name)) if keys else {}
    for key in keys:
        like: Any = defaults
        for part in key.split(".")[1:]:
            like = like.get(part) if isinstance(like, dict) else None
        problem = _kind_error(key, OmegaConf.select(cfg, key), like)
        if problem:
            raise UsageError(problem)


# train.params.<key>: counts that must be integers of at least this much
QMIX_COUNTS = {"agent.hidden_dim": 1, "replay.capacity": 1, "replay.seq_len": 1,
               "replay.burn_in": 0, "runner.batch_size": 1, "runner.log_interval": 1,
               "runner.learning_starts": 0}


def check_qmix_values(train_cfg: Mapping[str, Any]) -> None:
    """A QMIX train config's values, named: counts (``QMIX_COUNTS``), the storage dtype, and every
    other key against the kind of its constructor's default. ``build_runner`` would fail deep in a
    constructor (``float('abc')``) or, for ``runner.batch_size=0``, train on empty batches."""
    import inspect

    import torch

    from qmix_isaac.qmix.agent import RNNAgent
    from qmix_isaac.qmix.exploration import EpsilonGreedy
    from qmix_isaac.qmix.learner import QLearner
    from qmix_isaac.qmix.mixer import mixer_map
    from qmix_isaac.qmix.replay import SequenceReplay
    from qmix_isaac.runner import QMIXRunner

    params = train_cfg.get("params", train_cfg)
    mixer = params.get("mixer") or {}
    sections = [("agent", RNNAgent), ("learner", QLearner), ("replay", SequenceReplay),
                ("exploration", EpsilonGreedy), ("runner", QMIXRunner)]
    if mixer.get("name") in mixer_map:
        sections.append(("mixer." + mixer["name"], mixer_map[mixer["name"]]))
    for section, cls in sections:
        node: Any = params
        for part in section.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        defaults = inspect.signature(cls).parameters
        for key, value in node.items():
            path = section + "." + key
            name = "train.params." + path
            if path in QMIX_COUNTS:
                least = QMIX_COUNTS[path]
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    raise UsageError("%s must be an integer >= %d (got %s)" % (name, least, value))
            elif path == "replay.obs_dtype":
                if not isinstance(getattr(torch, str(value), None), torch.dtype):
                    raise UsageError("%s must be a torch dtype name such as float32 or float16 "
                                     "(got %s)" % (name, value))
            elif key in defaults:  # unknown keys: the constructor names them
                problem = _kind_error(name, value, defaults[key].default)
                if problem:
                    raise UsageError(problem)


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _leaves(v, prefix + k + ".")
        else:
            yield prefix + k, v


def _num_envs_given(argv: List[str]) -> bool:
    return _given(argv, "num_envs") is not None or _given(argv, "task.env.numEnvs") is not None


def apply_cpu_block(train_cfg: Dict[str, Any], task_cfg: Dict[str, Any], argv: List[str],
                    cpu: Mapping[str, Any]) -> List[str]:
    """A train config's ``cpu:`` block, for a fresh run that simulates on the CPU: each leaf
    replaces the train key at the same path (``num_envs`` the task's world count) unless the
    command line gives that key (``num_envs`` or ``task.env.numEnvs`` for the world count). The
    train configs are sized for thousands of GPU worlds; this is what their authors measured on a
    CPU. Returns ``key value`` notes of what changed."""
    notes = []
    for path, value in _leaves(cpu):
        if path == "num_envs":
            if not _num_envs_given(argv):
                task_cfg["env"]["numEnvs"] = value
                notes.append("num_envs %s" % value)
            continue
        node, keys = train_cfg, path.split(".")
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or keys[-1] not in node:
            raise UsageError("train config: cpu.%s names no key train.%s" % (path, path))
        given = _given(argv, "train." + path) is not None or \
            (path == "max_iterations" and _given(argv, path) is not None)
        if not given:
            node[keys[-1]] = value
            notes.append("train.%s %s" % (path, value))
    return notes


def _with_overrides(base: Dict[str, Any], section: str, argv: List[str], cfg) -> Dict[str, Any]:
    """A checkpoint's task or train config with the command line's ``<section>.*`` overrides
    (as Hydra parsed them into ``cfg``) put on top: a resumed or replayed run keeps the trained
    configuration except where told otherwise."""
    import copy

    from omegaconf import DictConfig, ListConfig, OmegaConf
    out = copy.deepcopy(base)
    for a in argv:
        key = a.split("=", 1)[0].lstrip("+~")
        if not key.startswith(section + "."):
            continue
        path = key[len(section) + 1:].split(".")
        value = OmegaConf.select(cfg[section], ".".join(path))
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def build(cfg, ckpt: Optional[Dict[str, Any]], argv: List[str], dinfo=None):
    """Task and runner from the config (or from the checkpoint's own configs plus the command
    line's ``task.*`` / ``train.*`` overrides)."""
    import torch
    from omegaconf import OmegaConf

    import qmix_isaac
    from qmix_isaac.config import ConfigError
    from qmix_isaac.record.checkpoint import check_compatible
    from qmix_isaac.rlgames import (RLGamesConfigError, check_checkpoint_learner, learner_of,
                                    rlgames_runner)
    from qmix_isaac.runner import build_runner

    sim_device = resolve_device(cfg.sim_device, "sim_device")
    rl_device = resolve_device(cfg.rl_device, "rl_device")
    if torch.device(rl_device).index is not None:  # cuda:N: streams and CUDA graphs made
        torch.cuda.set_device(torch.device(rl_device))  # without a device argument are the current one's
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    train_cfg = OmegaConf.to_container(cfg.train, resolve=True)
    if ckpt is not None:  # the networks' inputs are the checkpoint's: rebuild its task and learner
        task_cfg = _with_overrides(ckpt["task_cfg"], "task", argv, cfg)
        train_cfg = _with_overrides(ckpt["train_cfg"], "train", argv, cfg)
        from qmix_isaac.config import TOP_LEVEL_PHYSX
        for key in TOP_LEVEL_PHYSX:  # IsaacGymEnvs' top-level PhysX keys, given now
            if _given(argv, key) is not None:
                task_cfg.setdefault("sim", {}).setdefault("physx", {})[key] = cfg[key]
    cpu_block = train_cfg.pop("cpu", None)  # never stored: a checkpoint holds what ran
    if cpu_block and ckpt is None and sim_device == "cpu":
        notes = apply_cpu_block(train_cfg, task_cfg, argv, cpu_block)
        if notes and (dinfo is None or dinfo.is_main):
            print("[qmix-isaac] on the CPU (the train config's cpu: block; give a key to choose): "
                  + ", ".join(notes), flush=True)
    curriculum = (task_cfg.get("task") or {}).get("curriculum") or {}
    if cfg.test and curriculum.get("levels") and _given(argv, "task.task.curriculum.levels") is None:
        curriculum["levels"] = 0  # evaluation at full difficulty: a curriculum is a training aid
        print("[qmix-isaac] test=True: task curriculum off (goals at full distance)", flush=True)
    # a PPO checkpoint with train=<...>QMIX (or the reverse) is refused (qmix_isaac/rlgames)
    check_checkpoint_learner(ckpt, str(cfg.checkpoint), cfg.train, _given(argv, "train"))
    num_envs = int(cfg.num_envs) if cfg.num_envs not in ("", None) else int(task_cfg["env"]["numEnvs"])
    resumed = ckpt is not None and not cfg.test  # training on: the run's world count is its own
    if not _num_envs_given(argv) and sim_device == "cpu" and num_envs > CPU_NUM_ENVS and not resumed:
        # the task configs are sized for a GPU; a CPU steps a few hundred worlds per core-second
        if dinfo is None or dinfo.is_main:
            print("[qmix-isaac] num_envs %d -> %d on the CPU (set num_envs= to choose)"
                  % (num_envs, CPU_NUM_ENVS), flush=True)
        num_envs = CPU_NUM_ENVS
    try:
        env = qmix_isaac.make(task_cfg["name"], num_envs=num_envs, sim_device=sim_device,
                              rl_device=rl_device, seed=int(cfg.seed),
                              physics_engine=str(cfg.physics_engine), headless=bool(cfg.headless),
                              graphics_device_id=int(cfg.graphics_device_id), cfg=task_cfg)
    except (ConfigError, ValueError, RuntimeError, ImportError) as exc:
        raise UsageError(str(exc).splitlines()[0])
    if ckpt is not None:
        check_compatible(ckpt, task_cfg["name"], env)
    try:
        if learner_of(train_cfg) == "qmix":
            check_qmix_values(train_cfg)
            runner = build_runner(train_cfg, env)
        else:
            runner = rlgames_runner(train_cfg, env, distributed=dinfo is not None and dinfo.active)
    except (KeyError, TypeError, ValueError, RLGamesConfigError) as exc:
        raise UsageError("train config: %s" % str(exc).splitlines()[0])
    if dinfo is not None and dinfo.active:  # torchrun: equal parameters, averaged gradients
        from qmix_isaac.distributed import GradAllReduce, broadcast_parameters, sum_over_ranks
        learner = runner.learner
        broadcast_parameters([learner.agent, learner.mixer])
        learner.hard_update_targets()
        learner.grad_reduce = GradAllReduce(learner.params, dinfo.world_size)
        runner.stats_reduce = sum_over_ranks
    if dinfo is None or dinfo.is_main:
        print("[qmix-isaac] task %s, %d envs%s, engine %s on %s, learner on %s"
              % (task_cfg["name"], num_envs, " x %d ranks" % dinfo.world_size
                 if dinfo is not None and dinfo.world_size > 1 else "", env.engine.name,
                 sim_device, rl_device), flush=True)
    return env, runner, task_cfg, train_cfg


def load_runner_state(runner, ckpt: Mapping[str, Any]) -> None:
    """The checkpoint's weights (and training state) into ``runner``; weights that do not fit its
    networks (``train.params.agent.*`` / ``mixer.*`` changed since) are a CheckpointError."""
    from qmix_isaac.record.checkpoint import CheckpointError
    try:
        runner.load_state_dict(ckpt["runner"])
    except CheckpointError:  # rl-games' runner says so itself
        raise
    except (RuntimeError, ValueError, KeyError) as exc:  # torch's size mismatch, missing keys
        lines = str(exc).strip().splitlines() or [repr(exc)]
        detail = " ".join(line.strip() for line in lines[:2])
        raise CheckpointError("the checkpoint's weights do not fit this train config's network "
                              "(%s)" % detail[:240])


def record_clip(cfg, runner, task_cfg, path: str) -> str:
    """A clip of the greedy team in a fresh one-world copy of the task."""
    import qmix_isaac
    from qmix_isaac.record.video import TeamRenderer, write_mp4
    from qmix_isaac.runner import GreedyTeam

    env = qmix_isaac.make(task_cfg["name"], num_envs=1, sim_device=runner.env.sim_device,
                          rl_device=runner.env.rl_device, seed=int(cfg.seed) + 1,
                          physics_engine=str(cfg.physics_engine), cfg=task_cfg)
    renderer = TeamRenderer(env)
    team, frames = GreedyTeam(runner.agent, env), []
    for _ in range(int(cfg.capture_video_len)):
        team.step()
        frames.append(renderer.frame())
    renderer.close()
    env.close()
    return write_mp4(path, frames, fps=1.0 / env.dt)


def log_line(it: int, max_it: int, stats: Dict[str, float]) -> str:
    from qmix_isaac.record.run import progress_line
    return progress_line(it, max_it, stats, [("eps", "charts/epsilon", "%.3f"),
                                             ("loss", "losses/td_loss", "%.4f")])


def named_stats(raw: Dict[str, Any], env_steps: int) -> Dict[str, float]:
    """The runner's statistics as floats (a host read: logging interval only), renamed."""
    from qmix_isaac.record.run import episode_metric
    out = {}
    for k, v in raw.items():
        v = float(v)
        if k.startswith("episode/"):
            out[episode_metric(k[len("episode/"):])] = v
        elif k.startswith("charts/"):
            out[k] = v
        elif k.startswith("rollout/"):
            continue
        else:
            out[k if "/" in k else "losses/" + k] = v
    out["charts/env_steps"] = float(env_steps)
    return out


def train(cfg, ckpt, env, runner, task_cfg, train_cfg, dinfo, train_name=None) -> None:
    import torch

    from qmix_isaac.distributed import digest, gather_strings, tensor_digest
    from qmix_isaac.record.checkpoint import (restore_task_state, rng_state, save_checkpoint,
                                              set_rng_state, task_shapes)
    from qmix_isaac.record.curves import plot_curves
    from qmix_isaac.record.run import RunSetupError, engine_health, start_run
    from qmix_isaac.record.storage import StorageError

    main_rank = dinfo.is_main
    say = print if main_rank else (lambda *a, **k: None)  # rank 0 alone logs
    ranks = dinfo.world_size
    iteration, history, best = 0, None, -math.inf
    steps_offset = 0  # total env steps of the run = offset + this job's per-rank count x ranks
    if ckpt is not None:
        load_runner_state(runner, ckpt)
        iteration, history = int(ckpt["iteration"]), ckpt.get("history")
        best = float(ckpt.get("best_score", -math.inf))
        was_ranks = int(ckpt.get("world_size", 1))
        steps_before = int(ckpt.get("total_env_steps", runner.env_steps * was_ranks))
        steps_offset = steps_before - runner.env_steps * ranks
        if was_ranks != ranks:
            say("[qmix-isaac] the checkpoint ran on %d rank%s, this job on %d: iterations, epsilon "
                "and the replay ratio go on per rank; env steps count on from %s"
                % (was_ranks, "s" if was_ranks > 1 else "", ranks, "{:,}".format(steps_before)),
                flush=True)
        if main_rank:  # other ranks keep their own seed's random streams
            set_rng_state(ckpt["rng"])
        # every rank takes rank 0's per-world state (curriculum levels): the best estimate of its own
        restore_task_state(env, ckpt, say, with_rng=main_rank)

    def total_steps() -> int:
        """Env steps of every rank since the run began."""
        return steps_offset + runner.env_steps * ranks
    default_its = train_cfg.get("max_iterations", 1000)
    max_it = int(cfg.max_iterations) if cfg.max_iterations not in ("", None) else int(default_its)
    if iteration >= max_it:
        raise UsageError("the checkpoint already ran %d iterations; max_iterations=%d counts from the "
                         "start of the run: give a larger one to continue" % (iteration, max_it))
    run = logger = None
    if main_rank:  # rank 0 alone writes the run folder
        try:
            run, logger = start_run(cfg, task_cfg, train_cfg, ckpt, history)
        except RunSetupError as exc:
            raise UsageError(str(exc))
        say("[qmix-isaac] run folder %s (from iteration %d of %d%s)"
            % (run.target, iteration, max_it, ", %d ranks" % ranks if ranks > 1 else ""), flush=True)
    if ckpt is not None:
        say("[qmix-isaac] resumed at iteration %d: %d env steps, %d gradient steps"
            % (iteration, total_steps(), runner.learner.grad_steps), flush=True)

    def save(name: str, score: float) -> None:
        if run is None:
            return
        save_checkpoint(run.path("nn", name), {
            "task": task_cfg["name"], "task_cfg": task_cfg, "train_cfg": train_cfg,
            "shapes": task_shapes(env), "runner": runner.state_dict(), "iteration": iteration,
            "rng": rng_state(), "history": {k: [list(p) for p in v] for k, v in logger.history.items()},
            "best_score": score, "world_size": ranks, "total_env_steps": total_steps(),
            "task_state": env.state_dict(), "train_name": train_name})

    def has_best() -> bool:
        return run is not None and os.path.isfile(run.path("nn", "best.pth"))

    next_log = runner.env_steps + runner.log_interval
    next_clip = runner.env_steps + int(cfg.capture_video_freq) * env.num_envs
    t0 = time.perf_counter()
    stats: Dict[str, float] = {}
    check_syncs = bool(cfg.sync_debug) and torch.device(env.rl_device).type == "cuda"
    guarded, overflow_warned = 0, False
    try:
        while iteration < max_it:
            # sync_debug: once warm (graphs captured, learning started), any host sync between
            # simulation and gradient step raises (the hot-path rules: tests/test_hot_path.py)
            guard = check_syncs and runner.learner.grad_steps > 0
            if guard:
                torch.cuda.set_sync_debug_mode("error")
            try:
                new_steps = runner.collect()                    # T steps of every env -> replay
                runner.train(runner.grad_steps_due(new_steps))  # replay ratio
            finally:  # also on Ctrl-C: saving last.pth reads the weights back to the host
                if guard:
                    torch.cuda.set_sync_debug_mode("default")
            guarded += int(guard)
            iteration += 1
            if runner.env_steps >= next_log or iteration == max_it:  # every rank at once: lockstep
                stats = named_stats(runner.pop_stats(), total_steps())  # over all ranks
                overflow_warned = engine_health(env, stats, say, overflow_warned)  # rank 0's worlds
                next_log = runner.env_steps + runner.log_interval
                if run is not None:
                    logger.log(total_steps(), stats)
                    say(log_line(iteration, max_it, stats), flush=True)
                    score = stats.get("charts/success_rate", float("nan"))
                    score = stats.get("charts/episode_return", -math.inf) if score != score else score
                    if score == score and score > best:
                        best = score
                        save("best.pth", best)
                    elif not has_best():
                        save("best.pth", best)  # nothing scored yet: the first weights are the best
                    save("last.pth", best)
                    run.try_sync()  # a failure warns; tried again at the next log, then at close
            if run is not None and cfg.capture_video and runner.env_steps >= next_clip:
                name = "it%06d.mp4" % iteration
                try:
                    record_clip(cfg, runner, task_cfg, run.path("videos", name))
                    say("[qmix-isaac] video %s" % run.url("videos", name), flush=True)  # where it ends up
                except (RuntimeError, ValueError, OSError) as exc:  # a clip is not worth the run
                    say("[qmix-isaac] warning: recording a clip failed (%s); no more clips this run"
                        % (str(exc).strip().splitlines() or [type(exc).__name__])[0], flush=True)
                    cfg.capture_video = False
                next_clip = runner.env_steps + int(cfg.capture_video_freq) * env.num_envs
    except KeyboardInterrupt:
        say("[qmix-isaac] interrupted: saving nn/last.pth", flush=True)
    wall = time.perf_counter() - t0
    digests = gather_strings(digest([runner.learner.agent, runner.learner.mixer]), dinfo)
    # each rank simulates its own worlds (seed + rank): their current observations differ
    worlds = gather_strings(tensor_digest([("obs", env.obs_buf), ("states", env.states_buf)]), dinfo) \
        if ranks > 1 else []
    if run is None:
        return
    try:
        save("last.pth", best)
        if not has_best():
            save("best.pth", best)
        png = plot_curves(logger.history, run.path("curves.png"), title=task_cfg["name"])
        logger.close()
        run.close()
    except StorageError as exc:
        raise UsageError("uploading the run failed (%s); its files are kept in %s" % (exc, run.local))
    if check_syncs:
        say("[qmix-isaac] sync_debug: %d iterations ran under torch.cuda.set_sync_debug_mode"
            "('error') without a host sync" % guarded, flush=True)
    if ranks > 1:
        same = len(set(digests)) == 1
        say("[qmix-isaac] parameters on %d ranks: %s (digests %s)"
            % (ranks, "identical" if same else "DIFFERENT", " ".join(digests)), flush=True)
        say("[qmix-isaac] worlds on %d ranks: %s (observation digests %s)"
            % (ranks, "distinct" if len(set(worlds)) == ranks else "NOT DISTINCT", " ".join(worlds)),
            flush=True)
    say("[qmix-isaac] done: %d iterations, %s env steps, %d gradient steps in %.0f s; best %s; "
        "curves %s" % (iteration, "{:,}".format(total_steps()), runner.learner.grad_steps,
                       wall, "%.3f" % best if best > -math.inf else "-",
                       run.url("curves.png") if png else "-"), flush=True)


def test(cfg, ckpt, env, runner, task_cfg) -> None:
    import tempfile

    from qmix_isaac.record.storage import StorageError, is_url, join, upload_file
    from qmix_isaac.runner import evaluate

    load_runner_state(runner, ckpt)
    played = False
    if not cfg.headless:
        from qmix_isaac.record.viewer import play
        played = play(env, runner.agent, max_steps=int(cfg.viewer_steps))
    if not played:  # the viewer replaces the evaluation; a clip asked for is recorded either way
        res = evaluate(runner.agent, env, int(cfg.eval_episodes))
        start = " (at the start %.3f m)" % res["start_box_dist"] if "start_box_dist" in res else ""
        print("[qmix-isaac] eval %s: %d episodes | success rate %.3f | return %.3f | final box-goal "
              "distance %.3f m%s | length %.1f" % (task_cfg["name"], int(res["episodes"]),
                                                    res.get("success", float("nan")), res["return"],
                                                    res.get("final_box_dist", float("nan")), start,
                                                    res["length"]), flush=True)
    if cfg.capture_video:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        name = "play_%s_%s.mp4" % (task_cfg["name"], stamp)
        target = join(str(cfg.train_dir), name)
        if not is_url(target):
            print("[qmix-isaac] video %s" % record_clip(cfg, runner, task_cfg, target), flush=True)
            return
        with tempfile.TemporaryDirectory() as tmp:
            record_clip(cfg, runner, task_cfg, os.path.join(tmp, name))
            try:
                upload_file(os.path.join(tmp, name), target)
            except StorageError as exc:
                raise UsageError("uploading the video failed: %s" % exc)
        print("[qmix-isaac] video %s" % target, flush=True)


def join_job(cfg):
    """``multi_gpu=True`` under torchrun: join the process group, take this rank's device
    (``cuda:LOCAL_RANK``, or the CPU with gloo) and make a SIGTERM from torchrun (another rank
    failed) end this rank with one line. One process otherwise."""
    from qmix_isaac.distributed import DistInfo, init_distributed

    if not cfg.multi_gpu:
        return DistInfo()
    if cfg.test:
        raise UsageError("test=True evaluates in one process: drop multi_gpu=True")
    try:
        dinfo = init_distributed(str(cfg.sim_device), float(cfg.dist_timeout_s))
    except ValueError as exc:
        raise UsageError(str(exc))
    cfg.sim_device = cfg.rl_device = dinfo.device
    rank = dinfo.rank

    def stopped(signum, frame):
        print("[qmix-isaac] rank %d: stopped by torchrun (another rank failed or the job was "
              "cancelled)" % rank, file=sys.stderr, flush=True)
        os._exit(143)

    import signal
    signal.signal(signal.SIGTERM, stopped)
    return dinfo


def print_help() -> None:
    """``--help``: this module's docstring, the tasks and train configs, and cfg/config.yaml's keys."""
    from qmix_isaac.config import available_tasks
    trains = sorted(f[:-5] for f in os.listdir(os.path.join(CFG_DIR, "train")) if f.endswith(".yaml"))
    print(__doc__.strip())
    print("\ntasks: %s\ntrain configs (train=): %s\n" % (", ".join(available_tasks()), ", ".join(trains)))
    print("top-level keys (cfg/config.yaml; task.* and train.* reach the task and train configs):")
    with open(os.path.join(CFG_DIR, "config.yaml")) as f:
        for line in f:
            if line.startswith("defaults:"):
                break
            if line.strip() and not line.startswith("#"):
                print("  " + line.rstrip())


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print_help()
        return
    if str(_given(argv, "physics_engine") or "").lower() in ("physx", "flex"):
        try:  # Isaac Gym must be imported before torch; nothing has imported torch yet
            from isaacgym import gymapi  # noqa: F401
        except ImportError:
            pass  # make_engine says in one line what is missing
    os.environ.setdefault("WARP_CACHE_PATH", os.path.join(HERE, ".warp_cache"))
    from qmix_isaac.record.checkpoint import CheckpointError, load_checkpoint
    dinfo = None
    try:
        ckpt_path = _given(argv, "checkpoint")
        ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
        cfg = compose_config(argv, checkpoint_task=ckpt["task"] if ckpt else None,
                             checkpoint_train=_checkpoint_train_name(ckpt))
        if ckpt is not None and cfg.task.name != ckpt["task"]:
            raise CheckpointError("checkpoint %s is for task %s, not %s"
                                  % (ckpt_path, ckpt["task"], cfg.task.name))
        train_name = train_config_name(argv, cfg, ckpt)
        for key in ("num_envs", "max_iterations", "eval_episodes", "capture_video_len",
                    "capture_video_freq"):
            _positive(cfg, key)
        _positive(cfg, "viewer_steps", least=0)
        for key in BOOLEANS:
            _boolean(cfg, key)
        check_task_values(argv, cfg)
        if cfg.capture_video or not cfg.headless:  # before anything imports mujoco
            from qmix_isaac.record.video import GLBackendError, choose_gl_backend
            try:  # a window, or offscreen frames for videos; nothing to draw: no backend forced
                choose_gl_backend(bool(cfg.headless), offscreen=bool(cfg.capture_video))
            except GLBackendError as exc:
                raise UsageError("capture_video=True: %s" % exc)
        if cfg.test and ckpt is None:
            raise UsageError("test=True needs checkpoint=<path of a .pth>")
        if _given(argv, "train.params.config.max_epochs") is not None:  # rl-games' own stop
            raise UsageError("train.params.config.max_epochs: a run stops at max_iterations "
                             "(rl-games epochs); set max_iterations= instead")
        pipeline = str(cfg.pipeline).lower()  # IsaacGymEnvs compares it lower-cased
        if pipeline not in ("gpu", "cpu"):
            raise UsageError("pipeline must be gpu or cpu (got %s)" % cfg.pipeline)
        if pipeline == "cpu" and resolve_device(str(cfg.sim_device), "sim_device") != "cpu":
            # IsaacGymEnvs' CPU pipeline: CPU tensors whatever simulates; here they live on sim_device
            raise UsageError("pipeline=cpu: the engines' tensors live on sim_device; set "
                             "sim_device=cpu rl_device=cpu for a CPU pipeline")
        if str(cfg.sigma) != "":
            raise UsageError("sigma=%s: sets a Gaussian policy's std in IsaacGymEnvs; the policies "
                             "here are discrete (drop it)" % cfg.sigma)
        if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
            raise UsageError("seed must be an integer (got %s)" % cfg.seed)
        dinfo = join_job(cfg)
        if dinfo.is_main and (not cfg.test or cfg.capture_video):
            # before the (slow) build: where the run (or the test's clip) goes can take it
            from qmix_isaac.record.storage import StorageError, check_local_dir, check_remote, is_url
            train_dir = str(cfg.train_dir)
            try:
                if is_url(train_dir):
                    check_remote(train_dir)  # bucket, credentials, network; names the URL itself
                else:
                    check_local_dir(train_dir)
            except StorageError as exc:
                raise UsageError("train_dir=%s" % exc if is_url(train_dir)
                                 else "train_dir=%s: %s" % (train_dir, exc))
        cfg.seed = set_seed(int(cfg.seed), bool(cfg.torch_deterministic), dinfo.rank)
        env, runner, task_cfg, train_cfg = build(cfg, ckpt, argv, dinfo)
        if cfg.test:
            test(cfg, ckpt, env, runner, task_cfg)
        elif getattr(runner, "trains_itself", False):  # rl-games PPO / MAPPO: qmix_isaac/rlgames
            runner.learn(cfg, ckpt, task_cfg, train_cfg, usage_error=UsageError)
        else:
            train(cfg, ckpt, env, runner, task_cfg, train_cfg, dinfo, train_name)
    except (UsageError, CheckpointError) as exc:
        fail(str(exc))
        return
    except RuntimeError as exc:  # a collective failed: another rank died or hung (torchrun jobs)
        if dinfo is None or not dinfo.active:
            raise
        fail("rank %d: lost the other ranks (%s); ending the job"
             % (dinfo.rank, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]), code=1)
        return
    env.close()
    from qmix_isaac.distributed import close_distributed
    close_distributed()


if __name__ == "__main__":
    main()
