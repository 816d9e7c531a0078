"""Engine-neutral multi-agent task base (DESIGN.md §3.1)."""
from .vec_task import MultiAgentVecTask, TaskConfigError, teammate_index

__all__ = ["MultiAgentVecTask", "TaskConfigError", "teammate_index"]
