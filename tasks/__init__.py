"""Tasks and the ``task_map`` registry (name -> class), as in IsaacGymEnvs.

Installed as ``qmix_isaac.tasks``. Every class here meets DESIGN.md §3.1.
"""
from .multi_ant_push import MultiAntPush
from .multi_ball_push import MultiBallPush

task_map = {
    "MultiAntPush": MultiAntPush,
    "MultiBallPush": MultiBallPush,
}

__all__ = ["MultiAntPush", "MultiBallPush", "task_map"]
