"""Seeing what the hot path asks of torch, on any device (the hot-path rules: tests/test_hot_path.py).

``TorchCalls`` is a context manager that watches every torch call made from Python and every
ATen operator they run, and attributes them to the innermost function of this package::

    from qmix_isaac.debug import TorchCalls
    with TorchCalls() as calls:
        env.step(actions)
    calls.reads        # Counter {(method, "file:line"): n} of tensors read back into Python
    calls.kernels      # Counter {"file:function": n} of ATen operators that compute (not views)
    calls.undeviced    # Counter {(function, "file:line"): n} of tensors made without device=

A read-back (``.item()``, ``.tolist()``, ``.numpy()``, ``.cpu()``, ``bool(t)`` as in a
tensor-valued ``if``, ``int(t)``...) is a host sync on a GPU; on the CPU it costs nothing, which is
why it goes unnoticed there: this names it on either. ``calls.python_calls`` counts torch calls
from Python; with a Python loop over worlds it grows with ``num_envs``. ``kernels`` is what a GPU
would launch one by one in eager mode (a CUDA graph replays them in one launch): the count that
sets the task layer's fixed cost per step. ``undeviced`` names factory calls (``torch.zeros``,
``arange``, ``tensor``...) that give no ``device=``: on a GPU run they land on the CPU, a device
mismatch or a host-to-device copy per call, which a CPU run cannot show since there both are the
CPU. Slow (a stack walk per operator): for tests and
benchmarks, never for training.
"""
from __future__ import annotations

import collections
import os
import traceback
from typing import List, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# Tensor methods that hand a value, or a host copy, to Python.
READ_BACK = frozenset({"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__",
                       "__index__", "__len__", "__iter__"})

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_PACKAGE)
_OURS = (_PACKAGE + os.sep, os.path.join(_ROOT, "tasks") + os.sep)


# Factory functions that place their result on the default device unless given ``device=``
# (torch.utils._device's list, less the exotic ones). ``tensor`` / ``as_tensor`` / ``asarray`` of
# a tensor keep its device and are not reported.
FACTORIES = frozenset({"empty", "empty_strided", "zeros", "ones", "full", "arange", "range",
                       "linspace", "logspace", "eye", "rand", "randn", "randint", "randperm",
                       "tensor", "as_tensor", "asarray", "scalar_tensor", "tril_indices",
                       "triu_indices"})
_FROM_DATA = frozenset({"tensor", "as_tensor", "asarray"})

_OPTIM = os.sep + os.path.join("torch", "optim") + os.sep


def _site(stack: List[traceback.FrameSummary]) -> Optional[traceback.FrameSummary]:
    """Innermost frame of ``stack`` in this package (or tasks/)."""
    for frame in reversed(stack):
        if frame.filename.startswith(_OURS) and frame.filename != __file__:
            return frame
    return None


def _line(frame: Optional[traceback.FrameSummary]) -> str:
    if frame is None:
        return "?"
    return "%s:%d" % (os.path.relpath(frame.filename, _ROOT), frame.lineno)


def _name(frame: Optional[traceback.FrameSummary]) -> str:
    if frame is None:
        return "(outside qmix_isaac)"
    return "%s:%s" % (os.path.relpath(frame.filename, _ROOT), frame.name)


class _Kernels(TorchDispatchMode):
    def __init__(self, owner: "TorchCalls"):
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frame = _site(traceback.extract_stack())
        bucket = self.owner.views if func.is_view else self.owner.kernels
        bucket[_name(frame)] += 1
        return func(*args, **(kwargs or {}))


class TorchCalls(TorchFunctionMode):
    """Counts torch calls, ATen operators (by function) and read-backs inside a ``with`` block.

    torch.optim's own read of Adam's step count is not reported: torch keeps that counter on the
    host unless the optimizer is capturable (the learner's CUDA-graph update makes it so), so it
    is no device sync on a GPU either."""

    def __init__(self):
        super().__init__()
        self.python_calls = 0
        self.reads: collections.Counter = collections.Counter()
        self.kernels: collections.Counter = collections.Counter()
        self.views: collections.Counter = collections.Counter()
        self.undeviced: collections.Counter = collections.Counter()
        self._dispatch = _Kernels(self)

    def __enter__(self):
        self._dispatch.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self._dispatch.__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.python_calls += 1
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        if name in READ_BACK:
            stack = traceback.extract_stack()
            if not any(_OPTIM in f.filename for f in stack):
                self.reads[(name, _line(_site(stack)))] += 1
        elif (name in FACTORIES and kwargs.get("device") is None
              and getattr(func, "__module__", None) in ("torch", "torch._C._VariableFunctions")
              and not (name in _FROM_DATA and args and isinstance(args[0], torch.Tensor))):
            self.undeviced[(name, _line(_site(traceback.extract_stack())))] += 1
        return func(*args, **kwargs)
