#!/usr/bin/env bash
# Builds the git-ignored .whl/a and .whl/b that bench/gpu_setup.sh installs on a lent GPU machine
# (python3 3.12 with CUDA torch and nothing else, no network). The device tool carries at most
# 64 MiB per call, working tree included, so the wheels travel in two calls; warp's ~100 MB
# warp.so is xz-compressed and split between them. Run here, where PyPI is reachable:
#   bash bench/gpu_wheels.sh
# then call 1 with carry [".whl/a"]: `cp .whl/a/* /tmp/ && bash bench/gpu_suite.sh learner`, call 2 at
# once with carry [".whl/b"]:
# `. bench/gpu_setup.sh && bash bench/gpu_suite.sh quick`.
# Versions: constraints.txt's engine stack (what `make setup` installs), the rest pinned here.
# PYVER (default 3.12, the lent machines' python3) and WHL (default .whl) serve a dry run of the
# recipe on this machine: PYVER=3.11 WHL=/tmp/whl311 bash bench/gpu_wheels.sh (bench/gpu_dry_run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${PYVER:-3.12}
whl=${WHL:-.whl}
limit=$((64 * 1024 * 1024))
tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp/w" \
    $(grep -E '^[a-z-]+==' constraints.txt) glfw==2.11.0 pyopengl==3.1.10 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 \
    packaging pygments
pip download -q --no-deps --no-binary=:all: -d "$tmp/w" antlr4-python3-runtime==4.9.3
mkdir -p "$tmp/warp"
python3 -m zipfile -e "$tmp"/w/warp_lang-*.whl "$tmp/warp"
# one thread, x86 filter and a dictionary as large as the file: 61 MB (-T0 at -6: 81 MB)
xz -T1 --x86 --lzma2=preset=9e,dict=300MiB <"$tmp/warp/warp/bin/warp.so" >"$tmp/warp.so.xz"
want=$(sha256sum <"$tmp/warp/warp/bin/warp.so")
rm -r "$tmp/warp/warp/bin/warp.so" "$tmp/warp/warp/examples" "$tmp"/w/warp_lang-*.whl
rm -rf "$whl"/a "$whl"/b
mkdir -p "$whl"/a "$whl"/b
mv "$tmp"/w/mujoco-3*.whl "$whl"/a/
(cd "$tmp/warp" && tar -cf - warp warp_lang-*.dist-info | xz -T1 --x86 --lzma2=preset=9e,dict=96MiB) \
    >"$whl"/b/warp_py.tar.xz
mv "$tmp"/w/* "$whl"/b/
# warp.so.xz split so that both halves leave the same room under the limit
bytes() { du -cb "$@" | tail -1 | cut -f1; }
total=$(( $(bytes "$whl"/a/* "$whl"/b/*) + $(bytes "$tmp/warp.so.xz") ))
head1=$(( total / 2 - $(bytes "$whl"/a/*) ))
head -c "$head1" "$tmp/warp.so.xz" >"$whl"/a/warp.so.xz.part1
tail -c +"$((head1 + 1))" "$tmp/warp.so.xz" >"$whl"/b/warp.so.xz.part2
got=$(cat "$whl"/a/warp.so.xz.part1 "$whl"/b/warp.so.xz.part2 | xz -d | sha256sum)
[ "$got" = "$want" ] || { echo "error: the two halves do not make warp.so again" >&2; exit 1; }
for d in a b; do
    size=$(du -cb "$whl"/$d/* | tail -1 | cut -f1)
    echo "$whl/$d: $size bytes + working tree $tree = $((size + tree)) (limit $limit)"
    [ $((size + tree)) -lt "$limit" ] || { echo "error: $whl/$d is over the carry limit" >&2; exit 1; }
done
