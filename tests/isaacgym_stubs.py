"""Write type stubs of Isaac Gym that mypy can read, for checking qmix_isaac/sim/isaacgym_engine.py.

    python tests/isaacgym_stubs.py build/isaacgym-stubs     # then: mypy (mypy.ini reads that folder)

Isaac Gym itself is not on PyPI; its Python API is described by the PyPI package ``isaacgym-stubs``
(Preview 4 signatures of ``isaacgym.gymapi``, generated from the bindings). That package cannot be
used by mypy as it is: its ``gymapi.pyi`` defines two properties named ``lambda`` (a keyword, so
the file does not parse) and it has no ``gymtorch``. This script copies the installed
``gymapi.pyi`` with those two names changed (``lambda_``, on RigidContact / SoftContact, which this
project never reads), and writes a ``gymtorch.pyi`` for the two functions the engine uses, with
their signatures in Isaac Gym's ``gymtorch.py``. Everything else is the PyPI package's text.
"""
from __future__ import annotations

import os
import re
import sys

GYMTORCH_PYI = '''"""isaacgym.gymtorch: torch views of Isaac Gym tensors (written by tests/isaacgym_stubs.py)."""
from typing import Optional, Sequence

import torch

from .gymapi import Tensor

def wrap_tensor(gym_tensor: Tensor, offsets: Optional[Sequence[int]] = ...,
                counts: Optional[Sequence[int]] = ...) -> torch.Tensor: ...
def unwrap_tensor(torch_tensor: torch.Tensor) -> Tensor: ...
'''


def installed_gymapi_stub() -> str:
    """Path of ``gymapi.pyi`` of the installed ``isaacgym-stubs`` distribution."""
    from importlib import metadata

    try:
        dist = metadata.distribution("isaacgym-stubs")
    except metadata.PackageNotFoundError:
        raise SystemExit("isaacgym-stubs is not installed: pip install -e '.[dev]'")
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith("isaacgym-stubs/gymapi.pyi"):
            return str(dist.locate_file(f))
    raise SystemExit("isaacgym-stubs has no gymapi.pyi")


def write_stubs(out_dir: str) -> str:
    """Write ``<out_dir>/isaacgym/{__init__,gymapi,gymtorch}.pyi``; returns ``out_dir``."""
    with open(installed_gymapi_stub()) as f:
        text = f.read()
    text, n = re.subn(r"\bdef lambda\(", "def lambda_(", text)
    pkg = os.path.join(out_dir, "isaacgym")
    os.makedirs(pkg, exist_ok=True)
    for name, body in (("__init__.pyi", ""), ("gymapi.pyi", text), ("gymtorch.pyi", GYMTORCH_PYI)):
        with open(os.path.join(pkg, name), "w") as f:
            f.write(body)
    return out_dir


if __name__ == "__main__":
    print(write_stubs(sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "isaacgym-stubs")))
