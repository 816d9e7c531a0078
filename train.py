"""Train, resume, evaluate or watch a QMIX team — IsaacGymEnvs conventions, Hydra overrides.

    python train.py task=MultiAntPush                         # train (Newton on CUDA, MuJoCo on CPU)
    python train.py task=MultiBallPush num_envs=64 max_iterations=200
    python train.py checkpoint=runs/<run>/nn/last.pth         # resume where it stopped
    python train.py test=True checkpoint=runs/<run>/nn/best.pth [capture_video=True]
    python train.py test=True checkpoint=... headless=False [viewer_steps=N]   # watch (ESC quits)

A run writes ``<train_dir>/<experiment>_<date>/``: ``config.yaml`` (resolved), ``nn/last.pth``
and ``nn/best.pth``, TensorBoard ``summaries/``, ``curves.png`` and ``videos/``. Bad input (an
unknown task, a mistyped override, a missing or foreign checkpoint, CUDA without CUDA) ends with
one line on stderr, exit code 2, and no run folder.

Resuming (``checkpoint=`` without ``test=True``) continues the checkpoint's counters (iterations,
env steps, gradient steps) and learning curves in a new run folder; ``max_iterations`` counts from
the start of the run. The task and train configs are the checkpoint's, with the command line's
``task.*`` / ``train.*`` overrides on top; a checkpoint whose task or network shapes differ from
the requested ones is refused.
"""
from __future__ import annotations

import datetime
import math
import os
import random
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_NUM_ENVS = 256  # default number of worlds when simulating on the CPU
CFG_DIR = os.path.join(HERE, "cfg")


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit code 2."""


def fail(msg: str, code: int = 2) -> None:
    print("train.py: error: " + msg, file=sys.stderr)
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def _given(argv: List[str], key: str) -> Optional[str]:
    for a in argv:
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def compose_config(argv: List[str], checkpoint_task: Optional[str] = None):
    """Hydra's compose over ``cfg/`` with the command-line overrides; errors become UsageError."""
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


def resolve_device(name: str) -> str:
    import torch
    if name in ("", "auto", None):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("%s requested but CUDA is not available (use sim_device=cpu rl_device=cpu)" % name)
    return name


def set_seed(seed: int, deterministic: bool) -> int:
    import numpy as np
    import torch
    if seed == -1:
        seed = random.SystemRandom().randint(0, 2 ** 31 - 1)
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
def build(cfg, ckpt: Optional[Dict[str, Any]], argv: List[str]):
    """Task and runner from the config (or from the checkpoint's own configs plus the command
    line's ``task.*`` / ``train.*`` overrides)."""
    from omegaconf import OmegaConf

    import qmix_isaac
    from qmix_isaac.config import ConfigError
    from qmix_isaac.record.checkpoint import check_compatible
    from qmix_isaac.runner import build_runner

    sim_device = resolve_device(cfg.sim_device)
    rl_device = resolve_device(cfg.rl_device)
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    train_cfg = OmegaConf.to_container(cfg.train, resolve=True)
    if ckpt is not None:  # the networks' inputs are the checkpoint's: rebuild its task and learner
        task_cfg = _with_overrides(ckpt["task_cfg"], "task", argv, cfg)
        train_cfg = _with_overrides(ckpt["train_cfg"], "train", argv, cfg)
    num_envs = int(cfg.num_envs) if cfg.num_envs not in ("", None) else int(task_cfg["env"]["numEnvs"])
    if cfg.num_envs in ("", None) and sim_device == "cpu" and num_envs > CPU_NUM_ENVS:
        # the task configs are sized for a GPU; a CPU steps a few hundred worlds per core-second
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
        runner = build_runner(train_cfg, env)
    except (KeyError, TypeError) as exc:
        raise UsageError("train config: %s" % str(exc).splitlines()[0])
    print("[qmix-isaac] task %s, %d envs, engine %s on %s, learner on %s"
          % (task_cfg["name"], num_envs, env.engine.name, sim_device, rl_device), flush=True)
    return env, runner, task_cfg, train_cfg


def make_run_dir(cfg, task_name: str) -> str:
    """A new ``<train_dir>/<experiment>_<date>/`` (``_2``, ``_3``… when started in the same second)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = os.path.join(str(cfg.train_dir), (cfg.experiment or task_name) + "_" + stamp)
    run_dir, n = base, 1
    while True:
        try:
            os.makedirs(run_dir)
            break
        except FileExistsError:
            n += 1
            run_dir = "%s_%d" % (base, n)
        except OSError as exc:
            raise UsageError("cannot create the run folder %s: %s" % (run_dir, exc.strerror or exc))
    os.makedirs(os.path.join(run_dir, "nn"))
    return run_dir


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
    return write_mp4(path, frames, fps=max(1, int(round(1.0 / env.dt))))


def log_line(it: int, max_it: int, stats: Dict[str, float]) -> str:
    def f(key, fmt):
        v = stats.get(key)
        return "-" if v is None or v != v else fmt % v
    return ("[it %d/%d] env steps %s | %s steps/s | return %s | success %s | eps %s | loss %s"
            % (it, max_it, "{:,}".format(int(stats.get("charts/env_steps", 0))),
               f("charts/env_steps_per_s", "%.0f"), f("charts/episode_return", "%.2f"),
               f("charts/success_rate", "%.2f"), f("charts/epsilon", "%.3f"),
               f("losses/td_loss", "%.4f")))


def named_stats(raw: Dict[str, Any], env_steps: int) -> Dict[str, float]:
    """The runner's statistics as floats (a host read: logging interval only), renamed."""
    out = {}
    for k, v in raw.items():
        v = float(v)
        if k == "episode/return":
            out["charts/episode_return"] = v
        elif k == "episode/success":
            out["charts/success_rate"] = v
        elif k == "episode/length":
            out["charts/episode_length"] = v
        elif k.startswith("episode/"):
            out["episode/" + k[len("episode/"):]] = v
        elif k.startswith("charts/"):
            out[k] = v
        elif k.startswith("rollout/"):
            continue
        else:
            out[k if "/" in k else "losses/" + k] = v
    out["charts/env_steps"] = float(env_steps)
    return out


def train(cfg, ckpt, env, runner, task_cfg, train_cfg) -> None:
    import torch
    from omegaconf import OmegaConf

    from qmix_isaac.record.checkpoint import (atomic_write_text, rng_state, save_checkpoint,
                                              set_rng_state, task_shapes)
    from qmix_isaac.record.curves import plot_curves
    from qmix_isaac.record.logger import RunLogger

    iteration, history, best = 0, None, -math.inf
    if ckpt is not None:
        runner.load_state_dict(ckpt["runner"])
        iteration, history = int(ckpt["iteration"]), ckpt.get("history")
        best = float(ckpt.get("best_score", -math.inf))
        set_rng_state(ckpt["rng"])
    default_its = train_cfg.get("max_iterations", 1000)
    max_it = int(cfg.max_iterations) if cfg.max_iterations not in ("", None) else int(default_its)
    if iteration >= max_it:
        raise UsageError("the checkpoint already ran %d iterations; max_iterations=%d counts from the "
                         "start of the run: give a larger one to continue" % (iteration, max_it))
    run_dir = make_run_dir(cfg, task_cfg["name"])
    try:  # a run folder that cannot be set up is not left behind
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["task"], resolved["train"] = task_cfg, train_cfg
        atomic_write_text(os.path.join(run_dir, "config.yaml"),
                          OmegaConf.to_yaml(OmegaConf.create(resolved)))
        wandb_cfg = {"activate": bool(cfg.wandb_activate), "project": cfg.wandb_project,
                     "entity": cfg.wandb_entity, "group": cfg.wandb_group,
                     "name": cfg.wandb_name or os.path.basename(run_dir),
                     "tags": list(cfg.wandb_tags)}
        logger = RunLogger(run_dir, config=resolved, wandb_cfg=wandb_cfg, history=history)
    except Exception as exc:
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)
        raise UsageError("cannot set up the run folder: %s" % (str(exc).strip().splitlines() or [repr(exc)])[0])
    print("[qmix-isaac] run folder %s (from iteration %d of %d)" % (run_dir, iteration, max_it), flush=True)
    old_best = os.path.join(os.path.dirname(os.path.abspath(str(cfg.checkpoint))), "best.pth")
    if ckpt is not None and os.path.isfile(old_best):  # the run's best so far stays its best
        import shutil
        shutil.copyfile(old_best, os.path.join(run_dir, "nn", "best.pth"))
    if ckpt is not None:
        print("[qmix-isaac] resumed at iteration %d: %d env steps, %d gradient steps"
              % (iteration, runner.env_steps, runner.learner.grad_steps), flush=True)

    def save(name: str, score: float) -> None:
        save_checkpoint(os.path.join(run_dir, "nn", name), {
            "task": task_cfg["name"], "task_cfg": task_cfg, "train_cfg": train_cfg,
            "shapes": task_shapes(env), "runner": runner.state_dict(), "iteration": iteration,
            "rng": rng_state(), "history": {k: [list(p) for p in v] for k, v in logger.history.items()},
            "best_score": score})

    next_log = runner.env_steps + runner.log_interval
    next_clip = runner.env_steps + int(cfg.capture_video_freq) * env.num_envs
    t0 = time.perf_counter()
    stats: Dict[str, float] = {}
    check_syncs = bool(cfg.sync_debug) and torch.device(env.rl_device).type == "cuda"
    guarded = 0
    try:
        while iteration < max_it:
            # sync_debug: once warm (graphs captured, learning started), any host sync between
            # simulation and gradient step raises (DESIGN.md §2)
            guard = check_syncs and runner.learner.grad_steps > 0
            if guard:
                torch.cuda.set_sync_debug_mode("error")
            new_steps = runner.collect()                        # T steps of every env -> replay
            runner.train(runner.grad_steps_due(new_steps))      # replay ratio
            if guard:
                torch.cuda.set_sync_debug_mode("default")
                guarded += 1
            iteration += 1
            if runner.env_steps >= next_log or iteration == max_it:
                stats = named_stats(runner.pop_stats(), runner.env_steps)
                logger.log(runner.env_steps, stats)
                print(log_line(iteration, max_it, stats), flush=True)
                next_log = runner.env_steps + runner.log_interval
                score = stats.get("charts/success_rate", float("nan"))
                score = stats.get("charts/episode_return", -math.inf) if score != score else score
                if score == score and score > best:
                    best = score
                    save("best.pth", best)
                elif not os.path.isfile(os.path.join(run_dir, "nn", "best.pth")):
                    save("best.pth", best)  # nothing scored yet: the first weights are the best
                save("last.pth", best)
            if cfg.capture_video and runner.env_steps >= next_clip:
                clip = os.path.join(run_dir, "videos", "it%06d.mp4" % iteration)
                print("[qmix-isaac] video %s" % record_clip(cfg, runner, task_cfg, clip), flush=True)
                next_clip = runner.env_steps + int(cfg.capture_video_freq) * env.num_envs
    except KeyboardInterrupt:
        print("[qmix-isaac] interrupted: saving nn/last.pth", flush=True)
    save("last.pth", best)
    if not os.path.isfile(os.path.join(run_dir, "nn", "best.pth")):
        save("best.pth", best)
    png = plot_curves(logger.history, os.path.join(run_dir, "curves.png"), title=task_cfg["name"])
    logger.close()
    wall = time.perf_counter() - t0
    if check_syncs:
        print("[qmix-isaac] sync_debug: %d iterations ran under torch.cuda.set_sync_debug_mode"
              "('error') without a host sync" % guarded, flush=True)
    print("[qmix-isaac] done: %d iterations, %s env steps, %d gradient steps in %.0f s; best %s; "
          "curves %s" % (iteration, "{:,}".format(runner.env_steps), runner.learner.grad_steps, wall,
                         "%.3f" % best if best > -math.inf else "-", png), flush=True)


def test(cfg, ckpt, env, runner, task_cfg) -> None:
    from qmix_isaac.runner import evaluate

    runner.load_state_dict(ckpt["runner"])
    if not cfg.headless:
        from qmix_isaac.record.viewer import play
        if play(env, runner.agent, max_steps=int(cfg.viewer_steps)):
            return
    res = evaluate(runner.agent, env, int(cfg.eval_episodes))
    print("[qmix-isaac] eval %s: %d episodes | success rate %.3f | return %.3f | final box-goal "
          "distance %.3f m | length %.1f" % (task_cfg["name"], int(res["episodes"]),
                                              res.get("success", float("nan")), res["return"],
                                              res.get("final_box_dist", float("nan")),
                                              res["length"]), flush=True)
    if cfg.capture_video:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        path = os.path.join(str(cfg.train_dir), "play_%s_%s.mp4" % (task_cfg["name"], stamp))
        print("[qmix-isaac] video %s" % record_clip(cfg, runner, task_cfg, path), flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    headless = str(_given(argv, "headless") or "True").lower() not in ("false", "0")
    video = str(_given(argv, "capture_video") or "False").lower() in ("true", "1")
    if video or not headless:  # rendering: pick an OpenGL backend before anything imports mujoco
        from qmix_isaac.record.video import choose_gl_backend
        choose_gl_backend(headless)
    os.environ.setdefault("WARP_CACHE_PATH", os.path.join(HERE, ".warp_cache"))
    from qmix_isaac.record.checkpoint import CheckpointError, load_checkpoint
    try:
        ckpt_path = _given(argv, "checkpoint")
        ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
        cfg = compose_config(argv, checkpoint_task=ckpt["task"] if ckpt else None)
        if ckpt is not None and cfg.task.name != ckpt["task"]:
            raise CheckpointError("checkpoint %s is for task %s, not %s"
                                  % (ckpt_path, ckpt["task"], cfg.task.name))
        for key in ("num_envs", "max_iterations", "eval_episodes", "capture_video_len",
                    "capture_video_freq"):
            _positive(cfg, key)
        _positive(cfg, "viewer_steps", least=0)
        if cfg.test and ckpt is None:
            raise UsageError("test=True needs checkpoint=<path of a .pth>")
        if cfg.multi_gpu:
            raise UsageError("multi_gpu=True is not supported yet (torchrun scale-out is issue 6)")
        if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
            raise UsageError("seed must be an integer (got %s)" % cfg.seed)
        cfg.seed = set_seed(int(cfg.seed), bool(cfg.torch_deterministic))
        env, runner, task_cfg, train_cfg = build(cfg, ckpt, argv)
        if cfg.test:
            test(cfg, ckpt, env, runner, task_cfg)
        else:
            train(cfg, ckpt, env, runner, task_cfg, train_cfg)
    except (UsageError, CheckpointError) as exc:
        fail(str(exc))
        return
    env.close()


if __name__ == "__main__":
    main()
