# Sourced on a lent GPU machine (python3 3.12 with CUDA torch, nothing else, no network) before
# bench/gpu_suite.sh: installs the carried wheels into /tmp/site. The device tool carries at most
# 64 MiB per call, working tree included, so the git-ignored .whl/ holds two halves, built on this
# machine (it lives only on its disk: a fresh checkout must rebuild it) with
#   bash bench/gpu_wheels.sh
# which also checks each half plus the working tree against the limit. Then:
#   call 1, carry .whl/a:  cp .whl/a/* /tmp/            (mujoco wheel, first part of warp.so.xz)
#   call 2, carry .whl/b:  . bench/gpu_setup.sh && bash bench/gpu_suite.sh check
# A machine stays warm 30 s after a call: make call 2 right after call 1, or /tmp is gone.
set -e
mkdir -p /tmp/site
if [ ! -f /tmp/site/warp/bin/warp.so ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/b/*.whl /tmp/mujoco-*.whl
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .whl/b/antlr4-python3-runtime-4.9.3.tar.gz
  tar -xJf .whl/b/warp_py.tar.xz -C /tmp/site
  mkdir -p /tmp/site/warp/bin
  cat /tmp/warp.so.xz.part1 .whl/b/warp.so.xz.part2 | xz -d > /tmp/site/warp/bin/warp.so
fi
export PYTHONPATH=/tmp/site:$PWD WARP_CACHE_PATH=/tmp/warpcache
set +e
