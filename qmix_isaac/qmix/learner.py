"""QMIX learner: the TD loss on replayed sequences, the optimiser step and the target networks.

    q      = agent.unroll(obs)                                  [B, L, A, nb, K]
    Q_tot  = mixer(Q_a(a_t), s_t)                               [B, L-1, M]
    a*     = argmax_avail q(t+1)          (online: double Q)
    Y      = TD(lambda) of r, target_mixer(target_Q_a(a*), s_{t+1})
             zero value after terminations, bootstrap at time-outs
    loss   = mean over train_t of (Q_tot - Y)^2                 train_t: see replay.loss_mask

The same code serves ``mixer = qmix | vdn | none`` (M = 1, 1, A). Everything stays on the device:
``update`` returns 0-d tensors for logging and never reads them.

``cuda_graph=True`` (CUDA only; ignored on CPU) captures loss, backward, clipping and the Adam step
in one CUDA graph on the first update, then replays it on each sampled batch copied into static
buffers. The eager update is launch-bound (hundreds of small kernels for the per-step GRU loop
and its backward), so the graph is several times faster. Shapes must stay fixed (they do: fixed
batch size and sequence length).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .agent import RNNAgent
from .replay import SequenceBatch, episode_starts, loss_mask
from .targets import chosen_utility, lambda_returns, mask_unavailable, masked_mse, next_utility

__all__ = ["QLearner", "action_gap"]


def action_gap(q: torch.Tensor, avail: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean margin of the greedy choice: best minus second-best available bin of each branch's
    utility, q float[B, T, A, nb, K], avail bool[B, T, A, nb, K], over the steps ``mask`` [B, T]
    keeps and the branches with two or more available bins. It is what a greedy action rests
    on: when it is far below ``values/td_abs`` the greedy choices are mostly the net's noise
    (MultiAntPush at 50 decisions per second; BENCHMARKS.md, session 5)."""
    if q.shape[-1] < 2:
        return q.new_zeros(())
    top = mask_unavailable(q, avail).topk(2, dim=-1).values
    gap = top[..., 0] - top[..., 1]
    keep = (avail.sum(-1) >= 2) & mask[:, :, None, None]
    return torch.where(keep, gap, torch.zeros_like(gap)).sum() / keep.sum().clamp(min=1)


class QLearner:
    """Value-decomposition Q-learning (QMIX / VDN / IQL) on replayed sequences.

    Args:
        agent: the recurrent agent network (trained in place).
        mixer: a mixer from ``mixer.mixer_map``.
        gamma: discount.
        td_lambda: 0 gives 1-step targets; > 0 TD(lambda) within each sequence.
        double_q: pick next actions with the online network, evaluate with the target network.
        lr: learning rate.
        optimizer: "adam" or "rmsprop".
        optim_eps: epsilon of the optimiser.
        rmsprop_alpha: smoothing constant of RMSprop.
        grad_clip: max global gradient norm.
        target_update_interval: hard copy of the target networks every this many gradient steps
            (used when ``target_tau`` is None).
        target_tau: soft update target <- (1 - tau) target + tau online after every gradient step.
        reward_scale: rewards are multiplied by this before the targets.
        burn_in: steps at the head of each sequence that only warm the GRU state.
        cuda_graph: capture the update in a CUDA graph (when the parameters are on CUDA).
    """

    def __init__(
        self,
        *,
        agent: RNNAgent,
        mixer: nn.Module,
        gamma: float = 0.99,
        td_lambda: float = 0.0,
        double_q: bool = True,
        lr: float = 1e-3,
        optimizer: str = "adam",
        optim_eps: float = 1e-5,
        rmsprop_alpha: float = 0.99,
        grad_clip: float = 10.0,
        target_update_interval: int = 200,
        target_tau: Optional[float] = None,
        reward_scale: float = 1.0,
        burn_in: int = 0,
        cuda_graph: bool = False,
    ) -> None:
        self.agent = agent
        self.mixer = mixer
        self.target_agent = copy.deepcopy(agent).requires_grad_(False)
        self.target_mixer = copy.deepcopy(mixer).requires_grad_(False)
        self.gamma = float(gamma)
        self.td_lambda = float(td_lambda)
        self.double_q = bool(double_q)
        self.grad_clip = float(grad_clip)
        self.target_update_interval = int(target_update_interval)
        self.target_tau = None if target_tau is None else float(target_tau)
        self.reward_scale = float(reward_scale)
        self.burn_in = int(burn_in)
        self.params = list(agent.parameters()) + list(mixer.parameters())
        self.cuda_graph = bool(cuda_graph) and self.params[0].is_cuda
        cap = dict(capturable=True) if self.cuda_graph else {}
        if optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=optim_eps, **cap)
        elif optimizer == "rmsprop":
            self.optimizer = torch.optim.RMSprop(self.params, lr=lr, alpha=rmsprop_alpha, eps=optim_eps, **cap)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {optimizer!r}")
        self.grad_steps = 0  # host int
        # Called between backward and clipping: averages gradients over ranks when training with
        # torchrun (set by train.py to a distributed.GradAllReduce; None in one process).
        self.grad_reduce: Optional[Callable[[], None]] = None
        self._graph = None  # captured CUDA graph of _gradient_step and its static input / outputs
        self._static_batch: Optional[SequenceBatch] = None
        self._static_stats: Dict[str, torch.Tensor] = {}

    # -- the maths, in three pieces that tests call one by one -------------------------------

    def q_values(self, batch: SequenceBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        """(online q, target q), each float[B, L, A, nb, K]."""
        start = episode_starts(batch.boundary, batch.filled)
        action = batch.action.long()
        prev_action = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], dim=1)
        q = self.agent.unroll(batch.obs, prev_action, start, burn_in=self.burn_in)
        with torch.no_grad():
            target_q = self.target_agent.unroll(batch.obs, prev_action, start)
        return q, target_q

    def loss_from_q(
        self, batch: SequenceBatch, q: torch.Tensor, target_q: torch.Tensor
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Masked TD loss (scalar) and detached statistics, from the agents' q-values."""
        state = batch.state.to(torch.float32)
        chosen = chosen_utility(q[:, :-1], batch.action[:, :-1])  # [B, L-1, A]
        q_tot = self.mixer(chosen, state[:, :-1])  # [B, L-1, M]
        with torch.no_grad():
            nxt = next_utility(q[:, 1:], target_q[:, 1:], batch.avail[:, 1:], double_q=self.double_q)  # [B, L-1, A]
            next_tot = self.target_mixer(nxt, state[:, 1:])  # [B, L-1, M]  V(s_{t+1})
            done = batch.done[:, :-1]
            targets = lambda_returns(
                batch.reward[:, :-1] * self.reward_scale,
                next_tot,
                done & ~batch.time_out[:, :-1],  # terminated: value zero after it
                done,
                gamma=self.gamma,
                td_lambda=self.td_lambda,
            )
        mask = loss_mask(batch.boundary, batch.filled, self.burn_in)  # [B, L-1]
        loss = masked_mse(q_tot, targets, mask)
        with torch.no_grad():
            m = mask.unsqueeze(-1).to(q_tot.dtype)
            n = (m.sum() * q_tot.shape[-1]).clamp(min=1)
            stats = {
                "losses/td_loss": loss.detach(),
                "values/q_taken": (q_tot * m).sum() / n,
                "values/target": (targets * m).sum() / n,
                "values/td_abs": ((q_tot - targets).abs() * m).sum() / n,
                "values/train_fraction": mask.float().mean(),
                "values/action_gap": action_gap(q[:, :-1].detach(), batch.avail[:, :-1], mask),
            }
            if hasattr(self.mixer, "slopes"):  # QMIX: mean dQ_tot/dQ_a over trained steps
                slope = self.mixer.slopes(chosen.detach(), state[:, :-1]).mean(-1)  # [B, L-1]
                stats["values/mix_slope"] = (slope * mask).sum() / mask.sum().clamp(min=1)
        return loss, stats

    def _gradient_step(self, batch: SequenceBatch) -> Dict[str, torch.Tensor]:
        q, target_q = self.q_values(batch)
        loss, stats = self.loss_from_q(batch, q, target_q)
        loss.backward()
        if self.grad_reduce is not None:  # torchrun: mean gradient over ranks (distributed.py)
            self.grad_reduce()
        stats["losses/grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return stats

    def update(self, batch: SequenceBatch) -> Dict[str, torch.Tensor]:
        """One gradient step (and target update when due). Returns detached 0-d tensors."""
        if self.cuda_graph:
            with torch.cuda.device(self.params[0].device):  # cuda:N: its streams, not device 0's
                if self._graph is None:
                    self._capture(batch)
                for name, static in self._static_batch.items():
                    static.copy_(getattr(batch, name))
                self._graph.replay()
                stats = {k: v.clone() for k, v in self._static_stats.items()}
        else:
            self.optimizer.zero_grad(set_to_none=True)
            stats = self._gradient_step(batch)
        self.grad_steps += 1
        if self.target_tau is not None:
            self.soft_update_targets(self.target_tau)
        elif self.grad_steps % self.target_update_interval == 0:  # host ints
            self.hard_update_targets()
        return stats

    def _capture(self, batch: SequenceBatch) -> None:
        """Record _gradient_step in a CUDA graph (PyTorch's whole-network capture recipe).

        Warm-up steps on a side stream create the optimiser state and autograd buffers; the
        parameters and optimiser state are then restored, so capturing changes no training state.
        """
        self._static_batch = SequenceBatch(**{k: v.clone() for k, v in batch.items()})
        saved_params = [p.detach().clone() for p in self.params]
        had_state = len(self.optimizer.state) > 0
        saved_opt = copy.deepcopy(self.optimizer.state_dict()) if had_state else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self._gradient_step(self._static_batch)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, v in zip(self.params, saved_params):
                p.copy_(v)
            for i, p in enumerate(self.params):  # restore optimiser state in place (graph-held tensors)
                for key, value in self.optimizer.state[p].items():
                    if isinstance(value, torch.Tensor):
                        old = saved_opt["state"][i][key] if had_state else torch.zeros_like(value)
                        value.copy_(old)
        self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph, stream=side):  # torch's default capture stream belongs
            # to whichever device was current when it was first made
            self._static_stats = self._gradient_step(self._static_batch)

    # -- target networks ---------------------------------------------------------------------

    @torch.no_grad()
    def hard_update_targets(self) -> None:
        self.target_agent.load_state_dict(self.agent.state_dict())
        self.target_mixer.load_state_dict(self.mixer.state_dict())

    @torch.no_grad()
    def soft_update_targets(self, tau: float) -> None:
        for online, target in ((self.agent, self.target_agent), (self.mixer, self.target_mixer)):
            for p, tp in zip(online.parameters(), target.parameters()):
                tp.lerp_(p, tau)

    # -- checkpoints -------------------------------------------------------------------------

    def _own_optimizer_flags(self) -> None:
        """After loading an optimiser state: torch takes the checkpoint's hyperparameters with it,
        ``capturable`` included, which is this learner's (CUDA graph or not), not the writer's: a
        checkpoint of a CUDA run resumed on a CPU (or the reverse) would fail at its first step.
        The step counters go where ``capturable`` wants them (the parameter's device, float32)."""
        for group in self.optimizer.param_groups:
            group["capturable"] = self.cuda_graph
            for p in group["params"]:
                st = self.optimizer.state.get(p, {})
                step = st.get("step")
                if isinstance(step, torch.Tensor):
                    st["step"] = step.to(device=p.device if self.cuda_graph else "cpu", dtype=torch.float32)

    def state_dict(self) -> Dict[str, object]:
        """Tensors, ints, floats and dicts only (loads with ``torch.load(weights_only=True)``)."""
        return {
            "agent": self.agent.state_dict(),
            "mixer": self.mixer.state_dict(),
            "target_agent": self.target_agent.state_dict(),
            "target_mixer": self.target_mixer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_steps": self.grad_steps,
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.mixer.load_state_dict(state["mixer"])
        self.target_agent.load_state_dict(state["target_agent"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        if self._graph is None:
            self.optimizer.load_state_dict(state["optimizer"])
            self._own_optimizer_flags()
        else:  # the captured graph holds the optimiser's state tensors: copy into them
            saved = state["optimizer"]["state"]
            with torch.no_grad():
                for i, p in enumerate(self.params):
                    for key, value in self.optimizer.state[p].items():
                        if isinstance(value, torch.Tensor):
                            value.copy_(saved[i][key])
        self.grad_steps = int(state["grad_steps"])
