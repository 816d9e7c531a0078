# Sourced on a lent GPU machine (python3 3.12 with CUDA torch, nothing else, no network) before
# bench/gpu_suite.sh: installs the carried wheels into /tmp/site. The device tool carries at most
# 64 MiB per call, working tree included, so the git-ignored .whl/ holds two halves, built on this
# machine (it lives only on its disk: a fresh checkout must rebuild it) with
#   bash bench/gpu_wheels.sh
# which also checks each half plus the working tree against the limit. Then (15 minutes of device
# time in all: no call to spare):
#   call 1, carry [".whl/a"], timeout_s 120:   (mujoco wheel, first part of warp.so.xz; torch only)
#       cp .whl/a/* /tmp/ && bash bench/gpu_suite.sh learner
#   call 2 at once, carry [".whl/b"], timeout_s 560 (at most status's budget_left_s less a minute):
#       . bench/gpu_setup.sh && bash bench/gpu_suite.sh quick
# A machine stays warm 30 s after a call: make call 2 right after call 1, or /tmp is gone.
# WHL (default .whl), SITE (default /tmp/site) and PARTS (default /tmp, where call 1 put its
# files) serve the dry run of this recipe on a CPU machine (bench/gpu_dry_run.sh).
set -e
whl_b=${WHL:-.whl}/b
site=${SITE:-/tmp/site}
parts=${PARTS:-/tmp}
mkdir -p "$site"
if [ ! -f "$site/warp/bin/warp.so" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$whl_b"/*.whl "$parts"/mujoco-*.whl
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$site" "$whl_b"/antlr4-python3-runtime-4.9.3.tar.gz
  tar -xJf "$whl_b"/warp_py.tar.xz -C "$site"
  mkdir -p "$site/warp/bin"
  cat "$parts"/warp.so.xz.part1 "$whl_b"/warp.so.xz.part2 | xz -d > "$site/warp/bin/warp.so"
fi
export PYTHONPATH=$site:$PWD WARP_CACHE_PATH=${WARP_CACHE_PATH:-/tmp/warpcache}
set +e
