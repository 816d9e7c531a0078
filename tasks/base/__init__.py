"""Engine-neutral multi-agent task base (the task contract: tasks/base/vec_task.py)."""
from .vec_task import MultiAgentVecTask, TaskConfigError, teammate_index

__all__ = ["MultiAgentVecTask", "TaskConfigError", "teammate_index"]
