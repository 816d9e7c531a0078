# Two commands set up a fresh machine (Python 3.8+ with venv) and do the work:
#   make test                       # creates .venv, installs (+ Debian GL libs), checks 3.8 syntax and
#                                   # the Isaac Gym engine's API use (mypy), runs pytest
#   make train ARGS="task=MultiAntPush"
# torch==2.13.0 comes from pip's index: PyPI's Linux wheel is the CUDA build; on a CPU-only
# machine TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU build instead.
PY := .venv/bin/python
TORCH_INDEX ?=
export WARP_CACHE_PATH ?= $(CURDIR)/.warp_cache

SYSDEPS := libosmesa6 xvfb libgl1 libglx-mesa0 libxtst6

.PHONY: test train bench setup sysdeps
setup: .venv/.installed

# Debian libraries the tests use: OSMesa (offscreen video), Xvfb + GL + XTest (viewer window).
# Installed when missing and we are root; otherwise those tests skip or fail with a clear reason.
sysdeps:
	@need=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; \
	  else echo "note: missing system packages:$$need (video/viewer tests need them)"; fi; fi

.venv/.installed: setup.py constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"  # the tested engine stack
	touch $@

test: .venv/.installed sysdeps
	.venv/bin/vermin -q -t=3.8- --no-tips --violations --backport dataclasses qmix_isaac tasks
	$(PY) tests/isaacgym_stubs.py build/isaacgym-stubs  # PyPI isaacgym-stubs, made readable by mypy
	.venv/bin/mypy --config-file mypy.ini qmix_isaac/sim/isaacgym_engine.py  # Isaac Gym API, Python 3.8
	$(PY) -m pytest -q tests

train: .venv/.installed
	$(PY) train.py $(ARGS)

bench: .venv/.installed
	$(PY) bench/sim_throughput.py
