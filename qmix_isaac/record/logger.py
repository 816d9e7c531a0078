"""Run logging: TensorBoard always, wandb when asked, and an in-memory history for curves.

``RunLogger.log(env_steps, scalars)`` takes plain floats (the runner's device statistics are read
once, at the logging interval, by the caller). Metric names are namespaced like CleanRL's:
``charts/…`` for episode statistics, ``losses/…`` for the learner, ``perf/…`` for speed.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["RunLogger"]


class RunLogger:
    def __init__(self, run_dir: str, *, config: Optional[Mapping[str, Any]] = None,
                 wandb_cfg: Optional[Mapping[str, Any]] = None, enabled: bool = True,
                 history: Optional[Dict[str, List[Tuple[int, float]]]] = None) -> None:
        self.history: Dict[str, List[Tuple[int, float]]] = {
            k: [tuple(p) for p in v] for k, v in (history or {}).items()}
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(os.path.join(run_dir, "summaries"))
        except ImportError:
            print("[qmix-isaac] tensorboard is not installed: no summaries/ (pip install tensorboard)")
        if wandb_cfg and wandb_cfg.get("activate"):
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError("wandb_activate=True needs wandb: pip install wandb") from exc
            self._wandb = wandb.init(
                project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity") or None,
                group=wandb_cfg.get("group") or None, name=wandb_cfg.get("name") or None,
                tags=list(wandb_cfg.get("tags") or []), config=dict(config or {}),
                dir=run_dir, resume="allow", id=wandb_cfg.get("id"))
            if wandb_cfg.get("logcode_dir"):  # IsaacGymEnvs' wandb_logcode_dir: the code as an artifact
                self._wandb.log_code(root=str(wandb_cfg["logcode_dir"]))

    def log(self, env_steps: int, scalars: Mapping[str, float]) -> None:
        for k, v in scalars.items():
            v = float(v)
            if v != v:  # NaN: no episode ended in this window
                continue
            self.history.setdefault(k, []).append((int(env_steps), v))
            if self._tb is not None:
                self._tb.add_scalar(k, v, env_steps)
        if self._wandb is not None:
            self._wandb.log({k: float(v) for k, v in scalars.items() if float(v) == float(v)},
                            step=int(env_steps))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
