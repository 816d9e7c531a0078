"""Task configuration: load ``cfg/task/<Task>.yaml`` and apply overrides, checking every key.

Used by :func:`qmix_isaac.make` and ``train.py``; the Hydra resolvers IsaacGymEnvs configs use
(``resolve_default``, ``eq``, ``if``) are registered here once.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

__all__ = ["CFG_DIR", "register_resolvers", "load_task_config", "apply_overrides",
           "ConfigError"]

CFG_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cfg"))


class ConfigError(ValueError):
    """A configuration key or value is wrong (one-line message naming it)."""


def register_resolvers() -> None:
    for name, fn in (("resolve_default", lambda default, arg: default if arg in ("", None) else arg),
                     ("eq", lambda x, y: str(x).lower() == str(y).lower()),
                     ("if", lambda pred, a, b: a if pred else b)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def available_tasks():
    d = os.path.join(CFG_DIR, "task")
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".yaml"))


# top-level keys of cfg/config.yaml that the task configs' sim.physx blocks read (IsaacGymEnvs')
TOP_LEVEL_PHYSX = ("num_threads", "solver_type", "num_subscenes")


def load_task_config(task: str, *, num_envs: Optional[int] = None, physics_engine: str = "auto",
                     seed: int = 0) -> Dict[str, Any]:
    """The task's YAML as a plain dict, with ``numEnvs``, ``physics_engine`` and ``seed`` set."""
    path = os.path.join(CFG_DIR, "task", task + ".yaml")
    if not os.path.isfile(path):
        raise ConfigError("unknown task %r; available: %s" % (task, ", ".join(available_tasks())))
    register_resolvers()
    top = OmegaConf.load(os.path.join(CFG_DIR, "config.yaml"))  # the keys a task config reads
    root = OmegaConf.create({"num_envs": "" if num_envs is None else num_envs,
                             "physics_engine": physics_engine, "seed": seed,
                             **{k: top[k] for k in TOP_LEVEL_PHYSX},
                             "task": OmegaConf.load(path)})
    cfg = OmegaConf.to_container(root, resolve=True)["task"]
    cfg["seed"] = seed
    return cfg


def _flat_keys(d: Mapping[str, Any], prefix: str = ""):
    for k, v in d.items():
        path = prefix + k
        if isinstance(v, Mapping) and k != "rewards":
            yield from _flat_keys(v, path + ".")
        elif isinstance(v, Mapping):
            for r in v:
                yield path + "." + r
        else:
            yield path


def apply_overrides(cfg: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Set task-config keys given as dotted paths (``env.numBalls``) or unique leaf names
    (``numBalls``); an unknown or ambiguous key is a :class:`ConfigError`."""
    keys = list(_flat_keys(cfg))
    for key, value in overrides.items():
        matches = [k for k in keys if k == key or k.endswith("." + key)]
        if not matches:
            raise ConfigError("unknown task config key %r for task %s" % (key, cfg.get("name")))
        if len(matches) > 1:
            raise ConfigError("ambiguous task config key %r: one of %s" % (key, ", ".join(matches)))
        node = cfg
        parts = matches[0].split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return cfg


def to_plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
