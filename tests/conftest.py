"""Shared test settings: a stable Warp kernel cache so Newton compiles once per machine."""
import os

os.environ.setdefault("WARP_CACHE_PATH", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".warp_cache"))
