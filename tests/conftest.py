"""Shared test settings: a stable Warp kernel cache so Newton compiles once per machine."""
import os

os.environ.setdefault("WARP_CACHE_PATH", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".warp_cache"))


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def one_thread():
    """Small networks run faster (and steadier under load) on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
