"""Scale-out with torchrun (IsaacGymEnvs' ``multi_gpu`` convention): one process per device.

    torchrun --nproc_per_node=2 train.py multi_gpu=True task=MultiBallPush
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        --rdzv-id=run1 train.py multi_gpu=True task=MultiAntPush

Each rank takes its device from ``LOCAL_RANK`` (CUDA) or runs on the CPU (gloo), simulates its own
worlds with its own seed and keeps its own replay. Parameters start equal (rank 0's are
broadcast) and stay equal: every gradient step all-reduces the mean gradient over ranks before
clipping and the optimiser step, which then run identically on every rank. Statistics are summed
over ranks at the logging interval only; rank 0 alone logs and writes checkpoints.

A rank that dies makes the others' next collective fail (gloo: the connection closes; NCCL: the
collective times out after ``dist_timeout_s``), and torchrun stops the job; train.py turns both
into one line per job instead of a hang.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "GradAllReduce", "broadcast_parameters", "digest", "init_distributed",
           "sum_over_ranks"]

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistInfo:
    """This process's place in the job (``world_size == 1``: no process group)."""

    def __init__(self, rank: int = 0, local_rank: int = 0, world_size: int = 1,
                 device: str = "cpu") -> None:
        self.rank, self.local_rank, self.world_size, self.device = rank, local_rank, world_size, device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def init_distributed(sim_device: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the torchrun job: NCCL on CUDA (device ``cuda:LOCAL_RANK``), gloo on the CPU.

    ``sim_device`` is the configured one (``auto``, ``cpu``, ``cuda``, ``cuda:0``…): on CUDA every
    rank replaces the index by its ``LOCAL_RANK``. Raises ValueError (one line) when the process was
    not started by torchrun or CUDA is asked for and absent.
    """
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ValueError("multi_gpu=True needs torchrun (no %s in the environment): torchrun "
                         "--nproc_per_node=N train.py multi_gpu=True ..." % ", ".join(missing))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    want = str(sim_device or "auto")
    cuda = torch.cuda.is_available() if want == "auto" else want.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ValueError("multi_gpu=True with sim_device=%s but CUDA is not available "
                         "(sim_device=cpu runs the ranks on the CPU with gloo)" % want)
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError("LOCAL_RANK %d but only %d CUDA devices: --nproc_per_node must not "
                             "exceed the GPUs of a node" % (local_rank, torch.cuda.device_count()))
        device = "cuda:%d" % local_rank
        torch.cuda.set_device(local_rank)  # one GPU per process: NCCL collectives can be graphed
    else:
        device = "cpu"
    dist.init_process_group("nccl" if cuda else "gloo",
                            timeout=datetime.timedelta(seconds=float(timeout_s)))
    return DistInfo(rank, local_rank, world_size, device)


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class GradAllReduce:
    """Replace the gradients of ``params`` by their mean over ranks: one flat all-reduce per step.

    The flat buffer is allocated once, so the reduction is capturable in a CUDA graph (NCCL
    collectives can be captured) and costs one collective per gradient step whatever the number
    of parameter tensors.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], world_size: int) -> None:
        self.params: List[torch.nn.Parameter] = list(params)
        self.world_size = int(world_size)
        n = sum(p.numel() for p in self.params)
        self.flat = torch.zeros(n, dtype=self.params[0].dtype, device=self.params[0].device)

    def __call__(self) -> None:
        views, offset = [], 0
        for p in self.params:
            view = self.flat[offset:offset + p.numel()]
            if p.grad is None:
                view.zero_()
            else:
                view.copy_(p.grad.reshape(-1))
            views.append(view)
            offset += p.numel()
        dist.all_reduce(self.flat, op=dist.ReduceOp.SUM)
        self.flat.div_(self.world_size)
        for p, view in zip(self.params, views):
            if p.grad is None:
                p.grad = view.view_as(p).clone()
            else:
                p.grad.copy_(view.view_as(p))


@torch.no_grad()
def broadcast_parameters(modules: Iterable[torch.nn.Module], src: int = 0) -> None:
    """Make every rank's parameters and buffers rank ``src``'s."""
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def sum_over_ranks(values: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Sum 0-d tensors over ranks in one collective (keys must be the same on every rank)."""
    keys = sorted(values)
    if not keys:
        return {}
    stacked = torch.stack([values[k].to(torch.float64) for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return {k: stacked[i] for i, k in enumerate(keys)}


def tensor_digest(named: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """sha256 (first 16 hex digits) of named tensors' bytes, to compare ranks bit for bit."""
    h = hashlib.sha256()
    for name, t in named:
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def digest(modules: Iterable[torch.nn.Module]) -> str:
    """``tensor_digest`` of the modules' parameters and buffers."""
    return tensor_digest(item for module in modules for item in module.state_dict().items())


def gather_strings(value: str, info: DistInfo) -> List[str]:
    """Every rank's ``value``, in rank order (on every rank)."""
    if not info.active:
        return [value]
    out: List[Optional[str]] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return [str(v) for v in out]


ReduceFn = Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]
