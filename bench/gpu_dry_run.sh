#!/usr/bin/env bash
# A rehearsal, on this CPU machine, of what a GPU session does with its 15 minutes of device time:
# the wheels built as bench/gpu_wheels.sh builds them (for this Python), call 1 and call 2 of
# bench/gpu_setup.sh in a venv that holds only packages the lent machines' image has (torch,
# numpy, pytest, ...: nothing of this project's), with `bench/gpu_suite.sh learner` and `quick` on the CPU at
# tiny sizes. It checks the recipe (what is carried, installed and imported, every command's
# arguments), not figures. ~15 min on 2 cores, most of it compressing warp.so.
#   bash bench/gpu_dry_run.sh            # logs in /tmp/gpu_dry/out1 (call 1), out2 (call 2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=/tmp/gpu_dry
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
rm -rf "$root"
mkdir -p "$root/parts"
PYVER=$pyver WHL="$root/whl" bash bench/gpu_wheels.sh
# the image's packages that this project needs besides the carried ones (KINDS.md's list)
python3 -m venv "$root/venv"
"$root/venv/bin/pip" install -q torch==2.13.0 numpy pytest setuptools pyyaml absl-py etils fsspec \
    zipp typing-extensions importlib-resources matplotlib tensorboard packaging pygments
# call 1, then call 2, as the device tool runs them: python3 is the image's, cwd the repo root
export PATH="$root/venv/bin:$PATH" WHL="$root/whl" SITE="$root/site" PARTS="$root/parts" \
    RUNS="$root/runs" DEVICE=cpu SIZES=8 SMALL=4 MID=8 ITERS=3 WARP_CACHE_PATH="$PWD/.warp_cache"
cp "$root"/whl/a/* "$root/parts/" && OUT="$root/out1" bash bench/gpu_suite.sh learner
OUT="$root/out2" bash -c '. bench/gpu_setup.sh && bash bench/gpu_suite.sh quick'
ls -la "$root/out1" "$root/out2"
