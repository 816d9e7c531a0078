"""Checkpoints: written atomically, read with ``weights_only=True``, checked against the run.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

    {"format": 1, "task": "MultiBallPush", "task_cfg": {...}, "train_cfg": {...},
     "shapes": {"num_agents":.., "num_obs":.., "num_states":.., "action_shape": [..]},
     "runner": runner.state_dict(), "rng": {...}, "history": {...}}

``save_checkpoint`` writes to a temporary file in the same folder and renames it over the
target, so a reader sees the old file or the new one, never half of one. The file gets the mode
any new file gets (``0o666`` less the umask), not the temporary file's private ``0o600``.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Mapping

import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "check_compatible",
           "task_shapes", "restore_task_state", "rng_state", "set_rng_state", "atomic_write_text"]

FORMAT = 1
REQUIRED = ("task", "task_cfg", "train_cfg", "shapes", "runner", "iteration", "rng")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or belongs to another task or shape (one line)."""


def _umask() -> int:
    try:  # Linux: read it without touching it (another thread may be creating files)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0o600 is for the name's privacy only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str, ckpt: Mapping[str, Any]) -> None:
    import io
    buf = io.BytesIO()
    torch.save(dict(ckpt, format=FORMAT), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read and check a checkpoint from a local path or a URL (``s3://…``, see ``storage``)."""
    from .storage import StorageError, open_bytes_io
    try:
        source = open_bytes_io(path)
    except FileNotFoundError:
        source = None
    except StorageError as exc:
        raise CheckpointError("cannot read checkpoint %s" % exc)
    if source is None and not os.path.isfile(path):
        raise CheckpointError("checkpoint not found: %s" % path)
    try:
        ckpt = torch.load(source if source is not None else path, map_location="cpu",
                          weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, foreign objects
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError("%s is not a qmix-isaac checkpoint (torch.load failed: %s%s)"
                              % (path, type(exc).__name__, ": " + detail if detail else ""))
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError("%s is not a qmix-isaac checkpoint (expected a dict with format=%d)"
                              % (path, FORMAT))
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError("%s is not a qmix-isaac checkpoint (no %s)" % (path, ", ".join(missing)))
    return ckpt


def task_shapes(env) -> Dict[str, Any]:
    """The sizes a checkpoint's networks depend on."""
    return {"num_agents": int(env.num_agents), "num_obs": int(env.num_obs),
            "num_states": int(env.num_states),
            "action_shape": [int(v) for v in getattr(env, "action_shape", (env.num_actions,))]}


def check_compatible(ckpt: Mapping[str, Any], task: str, env) -> None:
    if ckpt["task"] != task:
        raise CheckpointError("checkpoint is for task %s, not %s" % (ckpt["task"], task))
    want, have = ckpt["shapes"], task_shapes(env)
    for key in ("num_agents", "num_obs", "num_states", "action_shape"):
        if want[key] != have[key]:
            raise CheckpointError("checkpoint %s=%s does not match the task's %s=%s (task config "
                                  "differs from the one trained)" % (key, want[key], key, have[key]))


def restore_task_state(env, ckpt: Mapping[str, Any], say, with_rng: bool = True) -> None:
    """The checkpoint's task state (its generator unless ``with_rng`` is False, per-world state
    such as curriculum levels) into ``env``; what does not fit is said in one line."""
    state = dict(ckpt.get("task_state") or {})
    if not with_rng:
        state.pop("rng", None)
    skipped = env.load_state_dict(state)
    if skipped:
        say("[qmix-isaac] the checkpoint's task state %s does not fit this task (device or "
            "num_envs differs): drawn afresh" % ", ".join(skipped), flush=True)


def rng_state() -> Dict[str, Any]:
    """The CPU generator's state and the current CUDA device's (the one this process uses: a
    checkpoint of an 8-GPU job resumes on a machine with one)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, (list, tuple)):  # older checkpoints: every visible device's state
        device = torch.cuda.current_device()
        if device >= len(cuda):
            return
        cuda = cuda[device]
    torch.cuda.set_rng_state(cuda)
