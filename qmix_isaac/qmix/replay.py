"""On-device replay of fixed-length sequences, and the writer that cuts them from a vectorised env.

Step t of one env is recorded as: obs_t, state_t, avail_t (what the agents saw), the action a_t
they took, and what ``env.step(a_t)`` answered: reward r_t, done_t (the env's ``reset`` flag: the
episode ended at t), time_out_t. Plus two flags the runner derives:

    boundary_t = done_{t-1}   IsaacGymEnvs semantics: the step after an episode's last one resets the
                              env. obs_t is then the *final* observation of the old episode, a_t is
                              ignored by the env, r_t is junk, and obs_{t+1} is the first observation
                              of the new episode. Such a transition is never trained on. obs_t is
                              still needed: it is what transition t-1 bootstraps from at a time-out,
                              so the GRU state runs through it with the old episode's memory.
    filled_t                  the slot holds data (False only in the burn-in head of an env's first
                              sequence, before any step was taken).

Derived when learning (``episode_starts`` / ``loss_mask``):

    start_t = boundary_{t-1} or not filled_{t-1} (and t = 0)
              obs_t is an episode's first: the GRU state restarts at zero and the last-action input
              is zero there.
    train_t = filled_t and not boundary_t and burn_in <= t < L - 1
              the transitions that enter the loss; position L - 1 only provides the bootstrap value.

Sequences have L = burn_in + T + 1 steps. Every T env steps the writer hands one sequence per env
to the replay, then keeps its last burn_in + 1 steps as the head of the next one, so consecutive
sequences of an env overlap by burn_in + 1 steps and each transition is trained in exactly one.
Sequences start with a zero GRU state; ``burn_in`` steps (no gradient) warm it up (R2D2).

Storage is a ring of ``capacity`` sequences (a multiple of num_envs), written E at a time with
slice copies; sampling draws uniform indices below a host-side count. No host copies, no syncs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch

__all__ = ["SequenceBatch", "episode_starts", "loss_mask", "SequenceWriter", "SequenceReplay"]


@dataclass
class SequenceBatch:
    """N sequences of L steps (N = capacity in the replay, num_envs in the writer, B when sampled)."""

    obs: torch.Tensor  # float[N, L, A, O]       per-agent observation (obs_dtype)
    state: torch.Tensor  # float[N, L, S]        global state (obs_dtype)
    avail: torch.Tensor  # bool[N, L, A, nb, K]  available action bins
    action: torch.Tensor  # uint8/int16/long[N, L, A, nb]  action taken (bin per branch)
    reward: torch.Tensor  # float[N, L]          team reward of the step
    done: torch.Tensor  # bool[N, L]             the episode ended at this step (env's reset flag)
    time_out: torch.Tensor  # bool[N, L]         ... because of the time limit (bootstrap from obs_{t+1})
    boundary: torch.Tensor  # bool[N, L]         this step's transition crosses an episode boundary
    filled: torch.Tensor  # bool[N, L]           slot holds data

    @classmethod
    def empty(
        cls,
        n: int,
        seq_len: int,
        *,
        n_agents: int,
        obs_dim: int,
        state_dim: int,
        n_branches: int,
        max_bins: int,
        device,
        obs_dtype: torch.dtype = torch.float32,
    ) -> "SequenceBatch":
        """Zero-filled storage (``filled`` all False)."""
        action_dtype = torch.uint8 if max_bins <= 256 else (torch.int16 if max_bins <= 32768 else torch.long)
        z = dict(device=device)
        return cls(
            obs=torch.zeros(n, seq_len, n_agents, obs_dim, dtype=obs_dtype, **z),
            state=torch.zeros(n, seq_len, state_dim, dtype=obs_dtype, **z),
            avail=torch.zeros(n, seq_len, n_agents, n_branches, max_bins, dtype=torch.bool, **z),
            action=torch.zeros(n, seq_len, n_agents, n_branches, dtype=action_dtype, **z),
            reward=torch.zeros(n, seq_len, dtype=torch.float32, **z),
            done=torch.zeros(n, seq_len, dtype=torch.bool, **z),
            time_out=torch.zeros(n, seq_len, dtype=torch.bool, **z),
            boundary=torch.zeros(n, seq_len, dtype=torch.bool, **z),
            filled=torch.zeros(n, seq_len, dtype=torch.bool, **z),
        )

    def items(self) -> Iterator[Tuple[str, torch.Tensor]]:
        for f in dataclasses.fields(self):
            yield f.name, getattr(self, f.name)

    def index_select(self, index: torch.Tensor) -> "SequenceBatch":
        return SequenceBatch(**{k: v.index_select(0, index) for k, v in self.items()})

    def bytes_per_step(self) -> int:
        """Bytes that one stored step (one env, one position of one sequence) occupies."""
        return sum(v[0, 0].numel() * v.element_size() for _, v in self.items())


def episode_starts(boundary: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """bool[B, L]: obs_t begins an episode (GRU state and last action restart). See module doc."""
    prev_break = boundary[:, :-1] | ~filled[:, :-1]
    first = torch.ones_like(boundary[:, :1])
    return torch.cat([first, prev_break], dim=1)


def loss_mask(boundary: torch.Tensor, filled: torch.Tensor, burn_in: int) -> torch.Tensor:
    """bool[B, L - 1]: which transitions t = 0 .. L-2 enter the loss. See module doc."""
    mask = filled[:, :-1] & ~boundary[:, :-1]
    if burn_in > 0:
        mask = torch.cat([torch.zeros_like(mask[:, :burn_in]), mask[:, burn_in:]], dim=1)
    return mask


class SequenceWriter:
    """Cuts per-env step records into sequences of length burn_in + T + 1 (see module doc).

    ``add`` writes one step of all envs at the current position (a host int); ``full`` says a
    sequence per env is complete; ``roll`` keeps the overlap for the next one.
    """

    def __init__(self, buffer: SequenceBatch, *, burn_in: int) -> None:
        self.buf = buffer  # [E, L, ...]
        self.burn_in = burn_in
        self.seq_len = buffer.reward.shape[1]
        self.pos = burn_in  # first sequence: the burn-in head stays unfilled

    @property
    def full(self) -> bool:
        return self.pos == self.seq_len

    def add(
        self,
        *,
        obs: torch.Tensor,
        state: torch.Tensor,
        avail: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        time_out: torch.Tensor,
        boundary: torch.Tensor,
    ) -> None:
        p, b = self.pos, self.buf
        b.obs[:, p] = obs
        b.state[:, p] = state
        b.avail[:, p] = avail
        b.action[:, p] = action
        b.reward[:, p] = reward
        b.done[:, p] = done
        b.time_out[:, p] = time_out
        b.boundary[:, p] = boundary
        b.filled[:, p] = True
        self.pos = p + 1

    def restart(self) -> None:
        """Forget the partial sequence (after the env was reset out of protocol, e.g. by evaluation)."""
        self.buf.filled.zero_()
        self.pos = self.burn_in

    def roll(self) -> None:
        """Move the last burn_in + 1 steps to the front; the next sequence continues after them."""
        keep = self.burn_in + 1
        for _, v in self.buf.items():
            v[:, :keep] = v[:, self.seq_len - keep :].clone()
        self.pos = keep


class SequenceReplay:
    """Ring buffer of ``capacity`` sequences on ``device`` (capacity is rounded up to a multiple of num_envs).

    Args:
        capacity: number of sequences kept.
        num_envs: E; sequences arrive E at a time.
        seq_len: T, new env steps per sequence (transitions trained per sequence).
        burn_in: steps replayed before the trained ones, to warm the GRU state.
        n_agents, obs_dim, state_dim, n_branches, max_bins: layout sizes.
        device: where everything lives.
        obs_dtype: storage dtype of obs and state (float16 halves their memory).
    """

    def __init__(
        self,
        *,
        capacity: int,
        num_envs: int,
        seq_len: int,
        burn_in: int = 0,
        n_agents: int,
        obs_dim: int,
        state_dim: int,
        n_branches: int,
        max_bins: int,
        device,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if seq_len < 1 or burn_in < 0:
            raise ValueError("seq_len must be >= 1 and burn_in >= 0")
        self.num_envs = num_envs
        self.seq_len = seq_len
        self.burn_in = burn_in
        self.length = burn_in + seq_len + 1  # L
        self.capacity = -(-capacity // num_envs) * num_envs
        self.device = torch.device(device)
        self._layout = dict(
            n_agents=n_agents, obs_dim=obs_dim, state_dim=state_dim, n_branches=n_branches,
            max_bins=max_bins, device=self.device, obs_dtype=obs_dtype,
        )  # fmt: skip
        self.storage = SequenceBatch.empty(self.capacity, self.length, **self._layout)
        self.ptr = 0  # next row written (host int)
        self.num_stored = 0  # rows holding a sequence (host int, known without a sync)

    def make_writer(self) -> SequenceWriter:
        """A writer whose sequences fit this replay (one per env)."""
        return SequenceWriter(SequenceBatch.empty(self.num_envs, self.length, **self._layout), burn_in=self.burn_in)

    def insert(self, seqs: SequenceBatch) -> None:
        """Store E sequences [E, L] at the ring pointer (slice copies, no sync)."""
        rows = slice(self.ptr, self.ptr + self.num_envs)
        for name, dst in self.storage.items():
            dst[rows] = getattr(seqs, name)
        self.ptr = (self.ptr + self.num_envs) % self.capacity
        self.num_stored = min(self.num_stored + self.num_envs, self.capacity)

    def sample(self, batch_size: int, generator=None) -> SequenceBatch:
        """Uniformly sampled sequences [B, L] (with replacement)."""
        if self.num_stored == 0:
            raise RuntimeError("cannot sample from an empty replay")
        idx = torch.randint(0, self.num_stored, (batch_size,), device=self.device, generator=generator)
        return self.storage.index_select(idx)

    def bytes_per_env_step(self) -> float:
        """Device bytes per env step collected: one stored step times the overlap overhead L / T."""
        return self.storage.bytes_per_step() * self.length / self.seq_len

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for _, v in self.storage.items())
