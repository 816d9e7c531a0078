"""Episode statistics and rl-games' own scalars into our RunLogger, checkpoints at log time.

rl-games calls an ``AlgoObserver`` after every env step (``process_infos``) and after every
epoch (``after_print_stats``). Here the first adds up the task's ``extras["episode"]``
(return, length, success, final box distance, each reward term) on the device, with no host
read; the second, once per ``log_interval`` env steps, reads the sums, logs them with the
losses rl-games wrote to its ``writer`` in the meantime, prints one line, and has the caller
save ``nn/last.pth`` and (when the success rate improved) ``nn/best.pth``.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from rl_games.common.algo_observer import AlgoObserver

from qmix_isaac.record.run import episode_metric, progress_line

__all__ = ["EpisodeObserver", "ScalarSink", "log_line"]

# rl-games' scalars under our names (CleanRL-style namespaces, RunLogger's convention); the rest
# of what it writes (the same values against epochs or seconds, its own episode means) is dropped
RENAME = {
    "losses/a_loss": "losses/actor_loss",
    "losses/c_loss": "losses/critic_loss",
    "losses/cval_loss": "losses/central_value_loss",
    "losses/entropy": "losses/entropy",
    "info/kl": "losses/approx_kl",
    "info/last_lr": "charts/learning_rate",
    "info/cval_lr": "charts/central_value_learning_rate",
    "info/e_clip": "charts/e_clip",
    "performance/step_fps": "perf/env_step_fps",
    "performance/step_inference_fps": "perf/rollout_fps",
    "performance/step_inference_rl_update_fps": "perf/total_fps",
    "performance/rl_update_time": "perf/update_s",
    "performance/step_inference_time": "perf/rollout_s",
}
# fps figures rl-games computes per actor (agent); ours count env steps (worlds). Only step_fps:
# rl-games divides the other two by the number of agents itself (its scaled_time, scaled_play_time)
PER_AGENT = ("perf/env_step_fps",)


class ScalarSink:
    """Stands in for rl-games' TensorBoard writer (``algo.writer``): keeps the mean of each
    scalar since the last read, so that everything goes through one RunLogger (TensorBoard,
    wandb, curves) instead of a second event file."""

    def __init__(self) -> None:
        self._sums: Dict[str, Tuple[float, int]] = {}

    def add_scalar(self, tag: str, value: Any, *args: Any, **kwargs: Any) -> None:
        name = RENAME.get(tag)
        if name is None:
            return
        s, n = self._sums.get(name, (0.0, 0))
        self._sums[name] = (s + float(value), n + 1)  # once per epoch: rl-games' own host reads

    def pop(self) -> Dict[str, float]:
        out = {k: s / n for k, (s, n) in self._sums.items() if n}
        self._sums = {}
        return out

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def log_line(it: int, max_it: int, stats: Dict[str, float]) -> str:
    return progress_line(it, max_it, stats, [("entropy", "losses/entropy", "%.3f"),
                                             ("kl", "losses/approx_kl", "%.4f")])


class EpisodeObserver(AlgoObserver):
    """``save(algo, name, best_score)`` writes a checkpoint; ``logger`` is a RunLogger."""

    def __init__(self, logger, *, log_interval: int, max_epochs: int,
                 save: Callable[[Any, str, float], None], best: float = -math.inf,
                 summaries_dir: Optional[str] = None, quiet: bool = False,
                 health: Optional[Callable[[Dict[str, float]], None]] = None,
                 has_best: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self.health = health  # adds the engine's diagnostics to each log's statistics
        self.has_best = has_best  # whether the run folder holds a best.pth yet
        self.logger = logger
        self.log_interval = int(log_interval)
        self.max_epochs = int(max_epochs)
        self.save = save
        self.best = best
        self.quiet = quiet
        self.algo = None
        self.sink = ScalarSink()
        self.epoch = 0
        self.env_steps = 0
        self.lines: List[str] = []
        self._summaries_dir = summaries_dir
        self._summaries_before = set(os.listdir(summaries_dir)) if summaries_dir and \
            os.path.isdir(summaries_dir) else set()
        self._keys: Optional[List[str]] = None
        self._sums: Optional[torch.Tensor] = None
        self._count: Optional[torch.Tensor] = None
        self._last_epoch = -1
        self._next_log = 0
        self._t_log = time.perf_counter()
        self._steps_log = 0

    # ---- rl-games hooks -----------------------------------------------------------------------
    def after_init(self, algo) -> None:
        self.algo = algo
        # rl-games opened a tensorboardX writer in <run>/summaries; route its scalars through
        # our logger instead and remove the (still empty) event file it created
        old = getattr(algo, "writer", None)
        algo.writer = self.sink
        cv = getattr(algo, "central_value_net", None)
        if cv is not None:
            cv.writter = self.sink  # (sic: rl-games' spelling)
        if old is not None:
            old.close()
            if self._summaries_dir and os.path.isdir(self._summaries_dir):
                for name in set(os.listdir(self._summaries_dir)) - self._summaries_before:
                    if name.startswith("events.out.tfevents."):
                        os.unlink(os.path.join(self._summaries_dir, name))
        self.resumed(algo)

    def resumed(self, algo) -> None:
        """Take the counters from ``algo`` (after its training state was restored)."""
        self.epoch = int(algo.epoch_num)
        self.env_steps = int(algo.frame) // int(algo.num_agents)
        self._last_epoch = self.epoch
        self._next_log = self.env_steps + self.log_interval
        self._steps_log = self.env_steps
        self._t_log = time.perf_counter()

    def process_infos(self, infos, done_indices) -> None:
        episode = infos.get("episode") if isinstance(infos, dict) else None
        if not episode:
            return
        if self._keys is None:
            self._keys = [k for k in episode if k != "mask"]
            device = episode["mask"].device
            self._sums = torch.zeros(len(self._keys), device=device)
            self._count = torch.zeros((), device=device)
        mask = episode["mask"].to(torch.float32)
        values = torch.stack([episode[k].to(torch.float32) for k in self._keys], -1)  # [E, K]
        self._sums += (values * mask.unsqueeze(-1)).sum(0)
        self._count += mask.sum()

    def after_print_stats(self, frame, epoch_num, total_time) -> None:
        # rl-games 1.6.5 calls this twice per epoch (from write_stats and from train): once counts
        epoch_num = int(epoch_num)
        if epoch_num == self._last_epoch:
            return
        self._last_epoch = epoch_num
        self.epoch, self.env_steps = epoch_num, int(frame)
        if self.env_steps >= self._next_log or epoch_num >= self.max_epochs:
            self.log()

    # ---- ours ---------------------------------------------------------------------------------
    def pop_episode_stats(self) -> Dict[str, float]:
        """Means over the episodes ended since the last call (one host read)."""
        if self._keys is None:
            return {}
        count = float(self._count)
        means = (self._sums / max(count, 1.0)).tolist()
        self._sums.zero_()
        self._count.zero_()
        if count == 0:
            return {}
        out = {"charts/episodes": count}
        for k, v in zip(self._keys, means):
            out[episode_metric(k)] = v
        return out

    def log(self) -> Dict[str, float]:
        now = time.perf_counter()
        stats = self.pop_episode_stats()
        stats.update(self.sink.pop())
        for k in PER_AGENT:
            if k in stats:
                stats[k] /= float(self.algo.num_agents)
        if not getattr(self.algo, "has_value_loss", True):
            # MAPPO: the actor-critic's own value head is not trained (rl-games logs a zero for
            # it); the critic is the central value, whose loss is losses/central_value_loss
            stats.pop("losses/critic_loss", None)
        stats["charts/env_steps"] = float(self.env_steps)
        stats["charts/env_steps_per_s"] = (self.env_steps - self._steps_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._steps_log = now, self.env_steps
        self._next_log = self.env_steps + self.log_interval
        if self.health is not None:
            self.health(stats)
        self.logger.log(self.env_steps, stats)
        line = log_line(self.epoch, self.max_epochs, stats)
        self.lines.append(line)
        if not self.quiet:
            print(line, flush=True)
        score = stats.get("charts/success_rate", float("nan"))
        score = stats.get("charts/episode_return", -math.inf) if score != score else score
        if score == score and score > self.best:
            self.best = score
            self.save(self.algo, "best.pth", self.best)
        elif not self.has_best():  # nothing scored yet (or a resume): the first weights, as QMIX
            self.save(self.algo, "best.pth", self.best)
        self.save(self.algo, "last.pth", self.best)
        return stats
