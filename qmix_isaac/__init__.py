"""qmix-isaac: cooperative robot teams on batched physics, trained with QMIX on the device.

``qmix_isaac.make`` builds a task the way ``isaacgymenvs.make`` does::

    import qmix_isaac
    env = qmix_isaac.make("MultiBallPush", num_envs=64, sim_device="cpu", rl_device="cpu", seed=0)
    obs = env.reset()
    obs, rew, reset, extras = env.step(actions)   # actions: LongTensor [E, A] (or [E, A, B])
"""
from __future__ import annotations

import copy
import os as _os
from typing import Any, Mapping, Optional

# A source checkout on PYTHONPATH (no pip install): ``qmix_isaac.tasks`` lives in ../tasks, as
# setup.py's package_dir maps it for installs. Let the package find it there too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "tasks")) \
        and _os.path.isfile(_os.path.join(_root, "tasks", "__init__.py")):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821

__version__ = "0.1.0"
__all__ = ["make", "__version__"]


def make(task: str, num_envs: int, sim_device: str = "cpu", rl_device: str = "cpu",
         seed: int = 0, physics_engine: Optional[str] = None, headless: bool = True,
         graphics_device_id: int = 0, cfg: Optional[Mapping[str, Any]] = None,
         multi_gpu: bool = False, virtual_screen_capture: bool = False, force_render: bool = True,
         **overrides: Any):
    """Build task ``task`` with ``num_envs`` worlds; ``overrides`` are task-config keys.

    Takes ``isaacgymenvs.make``'s arguments by name too (``seed``, ``task``, ``num_envs``,
    ``sim_device``, ``rl_device``, ``graphics_device_id``, ``headless``, ``multi_gpu``,
    ``virtual_screen_capture``, ``force_render``, ``cfg``): ``cfg`` is a task config, or a whole
    Hydra config (a mapping or DictConfig with a ``task`` block, as IsaacGymEnvs passes it);
    ``multi_gpu=True`` puts a CUDA sim / rl device on ``cuda:$LOCAL_RANK`` as IsaacGymEnvs does.
    ``physics_engine`` defaults to the config's, else ``auto``. ``seed`` -1 draws one at random
    (the task's ``rng``; torch's global generator is the caller's to seed).
    """
    from .config import ConfigError, apply_overrides, load_task_config, to_plain
    from .tasks import task_map

    if task not in task_map:
        raise ConfigError("unknown task %r; available: %s" % (task, ", ".join(sorted(task_map))))
    if int(num_envs) < 1:
        raise ConfigError("num_envs must be >= 1 (got %s)" % num_envs)
    if seed is not None and int(seed) == -1:  # IsaacGymEnvs: -1 draws a seed
        import random
        seed = random.SystemRandom().randint(0, 2 ** 31 - 1)
    if multi_gpu:  # IsaacGymEnvs: one process per GPU, its local rank picks the GPU
        local_rank = int(_os.environ.get("LOCAL_RANK", "0"))
        sim_device = "cuda:%d" % local_rank if str(sim_device).startswith("cuda") else sim_device
        rl_device = "cuda:%d" % local_rank if str(rl_device).startswith("cuda") else rl_device
    if cfg is None:
        cfg = load_task_config(task, num_envs=int(num_envs), physics_engine=physics_engine or "auto",
                               seed=seed)
    else:
        block = cfg.get("task") if isinstance(cfg, Mapping) else None
        if isinstance(block, Mapping) and "env" in block:  # a whole Hydra config, as IsaacGymEnvs'
            engine = cfg.get("physics_engine")
            cfg = copy.deepcopy(to_plain(block))
            cfg.setdefault("physics_engine", engine)
        else:
            cfg = copy.deepcopy(to_plain(cfg))
        if not isinstance(cfg, dict) or not isinstance(cfg.get("env"), Mapping):
            raise ConfigError("cfg must be a task config (with an env block) or a config with a task block")
        if cfg.get("name", task) != task:
            raise ConfigError("cfg is the config of task %s, not %s" % (cfg.get("name"), task))
        cfg["env"] = dict(cfg["env"], numEnvs=int(num_envs))
        cfg["physics_engine"] = physics_engine or cfg.get("physics_engine") or "auto"
        cfg["seed"] = seed
    apply_overrides(cfg, overrides)
    return task_map[task](cfg, rl_device=rl_device, sim_device=sim_device,
                          graphics_device_id=graphics_device_id, headless=headless,
                          virtual_screen_capture=virtual_screen_capture, force_render=force_render)
