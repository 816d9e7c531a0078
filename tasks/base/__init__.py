"""Engine-neutral multi-agent task base (DESIGN.md §3.1)."""
from .vec_task import MultiAgentVecTask, TaskConfigError

__all__ = ["MultiAgentVecTask", "TaskConfigError"]
