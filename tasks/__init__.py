"""Tasks and the ``task_map`` registry (name -> class), as in IsaacGymEnvs.

Installed as ``qmix_isaac.tasks``. Every class here meets the task contract (tasks/base/vec_task.py).
"""
from .multi_ant_push import MultiAntPush
from .multi_ball_push import MultiBallPush

task_map = {
    "MultiAntPush": MultiAntPush,
    "MultiBallPush": MultiBallPush,
}
# IsaacGymEnvs' name for the registry (isaacgymenvs.tasks.isaacgym_task_map): code written for it
# can build these tasks as ``isaacgym_task_map[name](cfg=..., rl_device=..., sim_device=...,
# graphics_device_id=..., headless=..., virtual_screen_capture=..., force_render=...)``
isaacgym_task_map = task_map

__all__ = ["MultiAntPush", "MultiBallPush", "task_map", "isaacgym_task_map"]
