"""qmix-isaac: cooperative robot teams on batched physics, trained with QMIX on the device.

``qmix_isaac.make`` builds a task the way ``isaacgymenvs.make`` does::

    import qmix_isaac
    env = qmix_isaac.make("MultiBallPush", num_envs=64, sim_device="cpu", rl_device="cpu", seed=0)
    obs = env.reset()
    obs, rew, reset, extras = env.step(actions)   # actions: LongTensor [E, A] (or [E, A, B])
"""
from __future__ import annotations

import os as _os
from typing import Any, Dict, Optional

# A source checkout on PYTHONPATH (no pip install): ``qmix_isaac.tasks`` lives in ../tasks, as
# setup.py's package_dir maps it for installs. Let the package find it there too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "tasks")) \
        and _os.path.isfile(_os.path.join(_root, "tasks", "__init__.py")):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821

__version__ = "0.1.0"
__all__ = ["make", "__version__"]


def make(task: str, num_envs: int, sim_device: str = "cpu", rl_device: str = "cpu",
         seed: int = 0, physics_engine: str = "auto", headless: bool = True,
         graphics_device_id: int = 0, cfg: Optional[Dict[str, Any]] = None, **overrides: Any):
    """Build task ``task`` with ``num_envs`` worlds; ``overrides`` are task-config keys."""
    from .config import ConfigError, apply_overrides, load_task_config
    from .tasks import task_map

    if task not in task_map:
        raise ConfigError("unknown task %r; available: %s" % (task, ", ".join(sorted(task_map))))
    if int(num_envs) < 1:
        raise ConfigError("num_envs must be >= 1 (got %s)" % num_envs)
    if cfg is None:
        cfg = load_task_config(task, num_envs=int(num_envs), physics_engine=physics_engine, seed=seed)
    else:
        cfg = dict(cfg)
        cfg["env"] = dict(cfg["env"], numEnvs=int(num_envs))
        cfg["physics_engine"], cfg["seed"] = physics_engine, seed
    apply_overrides(cfg, overrides)
    return task_map[task](cfg, rl_device=rl_device, sim_device=sim_device,
                          graphics_device_id=graphics_device_id, headless=headless)
