"""One run folder for every learner: set-up, the progress line, and the end of a run.

``start_run`` is what train.py's QMIX loop and the rl-games runner both do before the first
iteration: a new ``<train_dir>/<experiment>_<date>/`` (local, or staged for ``s3://…``), the
resolved ``config.yaml``, the logger (TensorBoard, wandb), and, when resuming, the old run's
``nn/best.pth`` so that the run's best so far stays its best. A folder that cannot be set up is
removed again and the failure is one line (``RunSetupError``).
"""
from __future__ import annotations

import datetime
import os
import shutil
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .checkpoint import atomic_write_text
from .logger import RunLogger
from .storage import RunFolder, StorageError, download_file, is_url, new_run_folder, remote_exists

__all__ = ["RunSetupError", "engine_health", "episode_metric", "progress_line", "start_run"]


class RunSetupError(ValueError):
    """The run folder could not be created or set up (one line)."""


def start_run(cfg, task_cfg: Mapping[str, Any], train_cfg: Mapping[str, Any],
              ckpt: Optional[Mapping[str, Any]],
              history: Optional[Dict[str, List[Tuple[int, float]]]] = None) -> Tuple[RunFolder, RunLogger]:
    """A new run folder with its config and logger; ``cfg`` is train.py's composed config."""
    from omegaconf import OmegaConf

    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        run = new_run_folder(str(cfg.train_dir), cfg.experiment or task_cfg["name"], stamp)
    except StorageError as exc:
        raise RunSetupError(("train_dir=%s" if is_url(str(cfg.train_dir)) else "%s") % exc)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["task"], resolved["train"] = dict(task_cfg), dict(train_cfg)
        atomic_write_text(run.path("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(resolved)))
        wandb_cfg = {"activate": bool(cfg.wandb_activate), "project": cfg.wandb_project,
                     "entity": cfg.wandb_entity, "group": cfg.wandb_group,
                     "name": cfg.wandb_name or os.path.basename(run.target.rstrip("/")),
                     "tags": list(cfg.wandb_tags), "logcode_dir": cfg.get("wandb_logcode_dir", "")}
        logger = RunLogger(run.local, config=resolved, wandb_cfg=wandb_cfg, history=history)
        old_best = os.path.join(os.path.dirname(str(cfg.checkpoint)), "best.pth")
        if ckpt is not None and is_url(old_best) and remote_exists(old_best):
            download_file(old_best, run.path("nn", "best.pth"))
        elif ckpt is not None and os.path.isfile(old_best):
            shutil.copyfile(old_best, run.path("nn", "best.pth"))
        run.sync()
    except Exception as exc:
        run.discard()
        raise RunSetupError("cannot set up the run folder %s: %s"
                            % (run.target, (str(exc).strip().splitlines() or [repr(exc)])[0]))
    return run, logger


def progress_line(it: int, max_it: int, stats: Mapping[str, float],
                  extra: Sequence[Tuple[str, str, str]]) -> str:
    """``[it i/n] env steps | steps/s | return | success`` and ``extra`` (label, key, format)."""
    def f(key, fmt):
        v = stats.get(key)
        return "-" if v is None or v != v else fmt % v
    fields = [("steps/s", "charts/env_steps_per_s", "%.0f"), ("return", "charts/episode_return", "%.2f"),
              ("success", "charts/success_rate", "%.2f")] + list(extra)
    head = "[it %d/%d] env steps %s" % (it, max_it, "{:,}".format(int(stats.get("charts/env_steps", 0))))
    return " | ".join([head] + [("%s %s" % (f(k, fmt), label) if label == "steps/s" else
                                 "%s %s" % (label, f(k, fmt))) for label, k, fmt in fields])


_CHARTS = {"return": "charts/episode_return", "success": "charts/success_rate",
           "length": "charts/episode_length"}


def episode_metric(key: str) -> str:
    """Logged name of an episode statistic (a key of ``extras["episode"]``): the main three as
    ``charts/…`` (CleanRL's names), the rest (reward terms, final distances) as ``episode/…``."""
    return _CHARTS.get(key, "episode/" + key)


def engine_health(env, stats: Dict[str, float], say: Callable[..., Any], warned: bool) -> bool:
    """The engine's diagnostics into ``stats`` (``perf/engine_<name>``; a host read: logging
    interval only); the first time worlds overflow the engine's buffers, one warning naming the
    keys that size them. Returns whether it has warned."""
    for key, value in env.engine.diagnostics().items():
        stats["perf/engine_" + key] = float(value)
    worlds = int(stats.get("perf/engine_overflow_worlds", 0))
    if worlds and not warned:
        sizes = env.engine.buffer_sizes()
        say("[qmix-isaac] warning: %d world%s overflowed the %s engine's contact / constraint "
            "buffers and dropped contacts (per world: %s): raise task.sim.newton.nconmax / njmax"
            % (worlds, "s" if worlds > 1 else "", env.engine.name,
               ", ".join("%s %d" % kv for kv in sizes.items()) or "-"), flush=True)
        return True
    return warned
