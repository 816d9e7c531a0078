# Two commands set up a fresh machine (Python 3.8+ with venv) and do the work:
#   make test                       # creates .venv, installs, checks 3.8 syntax, runs pytest
#   make train ARGS="task=MultiAntPush"
# torch==2.13.0 is the CPU build on a machine without CUDA and the CUDA build on one with it.
PY := .venv/bin/python
export WARP_CACHE_PATH ?= $(CURDIR)/.warp_cache

.PHONY: test train bench setup
setup: .venv/.installed

.venv/.installed: setup.py
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: .venv/.installed
	.venv/bin/vermin -q -t=3.8- --no-tips --violations --backport dataclasses qmix_isaac tasks
	$(PY) -m pytest -q tests

train: .venv/.installed
	$(PY) train.py $(ARGS)

bench: .venv/.installed
	$(PY) bench/sim_throughput.py
