#!/usr/bin/env bash
# The GPU measurements still owed by issues 2 and 3. A task that draws a GPU gets 15 minutes of
# device time in all (the machine's start, each call's transfers and idle time counted), one
# command at most 10 minutes, and the wheels travel in two calls (bench/gpu_setup.sh). So the owed
# checks are two stages, one per call, ~11 minutes of device time with the start:
#
#   call 1 (torch only):  bash bench/gpu_suite.sh learner   # ~1 min: the learner's CUDA tests (no
#                                     # host sync, graphed update == eager), bench/learner_throughput
#   call 2 (wheels in):   bash bench/gpu_suite.sh quick     # ~8.5 min: the task's CUDA tests
#                                     # (graphed env.step == eager, Newton CUDA == CPU),
#                                     # train_throughput 1024/4096/16384 (+ env.cudaGraph at 4096),
#                                     # sim_throughput 256..16384 eager vs env.cudaGraph, MultiAntPush
#                                     # through train.py under sync_debug with the graphed env
#
# Larger stages, one call each, for a session lent more time:
#   bash bench/gpu_suite.sh check      # CUDA tests: graphed env.step == eager, no host syncs (~3 min)
#   bash bench/gpu_suite.sh sim        # sim_throughput, newton, 1024..16384, eager vs env.cudaGraph
#   bash bench/gpu_suite.sh train      # train_throughput sweep (train/sim at 4096: goal < 0.5), both modes
#   bash bench/gpu_suite.sh ball       # MultiBallPush QMIX learning curve, 4096 envs, sync_debug
#   bash bench/gpu_suite.sh ant        # MultiAntPush QMIX learning curve, 4096 envs, sync_debug
#   bash bench/gpu_suite.sh ant2       # the same at the old 50 policy steps/s (controlFrequencyInv 2),
#                                      # where QMIX only stood on the CPU: does a GPU budget change that?
#
# Needs python3 with CUDA torch, mujoco, newton[sim], hydra-core and pytest importable (the lent
# machines have torch and pytest: carry wheels, see bench/gpu_setup.sh; `learner` needs nothing
# carried). Logs go to $OUT (the device tool brings back at most 8 files, no run folders: those
# stay in /tmp and only their curves come back) or bench/results/gpu; the last lines of each are
# echoed. A dry run of the recipe on a CPU, figures aside: bash bench/gpu_dry_run.sh
set -u
stage=${1:?usage: bash bench/gpu_suite.sh learner|quick|check|sim|train|ball|ant|ant2}
out=${OUT:-bench/results/gpu}
runs=${RUNS:-/tmp/gpu_runs}
dev=${DEVICE:-cuda:0}
sizes=${SIZES:-1024 4096 16384}   # train_throughput and sim_throughput sizes in `quick`
small=${SMALL:-256}               # sim_throughput's extra small size (issue 2's goal: 256+ worlds)
mid=${MID:-4096}                  # the size of the graphed train_throughput and of the train.py run
iters=${ITERS:-40}                # the train.py run's iterations in `quick` (40 x 4096 x 32 = 5.2M env steps: at
                                  # 8 physics steps per policy step, ~100-150k env-steps/s, inside 90 s)
mkdir -p "$out" "$runs"
py=${PYTHON:-python3}
# the tests use no pytest plugins; the lent image's (xdist, cov, ...) may not load beside the
# pytest that bench/gpu_setup.sh carries
export WANDB_MODE=offline PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
export PYTHONPATH=${PYTHONPATH:-$PWD}  # a source checkout, as bench/gpu_setup.sh leaves it

run() {  # run NAME SECONDS CMD...: log to $out/NAME.log, echo rc and the tail
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%H:%M:%S)): $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "rc=$? $name ($(date +%H:%M:%S))"
    grep -v "^Module " "$out/$name.log" | tail -n 12  # not Warp's kernel-load lines
}

train_run() {  # train_run NAME SECONDS ARGS...: train.py into $runs, its curves.png back to $out
    local name=$1 limit=$2
    shift 2
    run "$name" "$limit" "$py" train.py "$@" sim_device="$dev" rl_device="$dev" \
        experiment="gpu_$name" train_dir="$runs"
    local png
    png=$(ls -t "$runs"/gpu_"$name"_*/curves.png 2>/dev/null | head -n 1)
    if [ -n "$png" ]; then cp "$png" "$out/$name.png"; fi
}

case $stage in
learner)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    run learner_tests 45 "$py" -m pytest -q -rs tests/test_qmix_cuda.py
    run learner_tp 25 "$py" bench/learner_throughput.py --device "$dev" --num-envs "$mid" --cuda-graph --repeats 3
    ;;
quick)
    # 5 logs + 1 png: within the 8 files a call brings back; limits sum to 510 s (timeout_s=560)
    "$py" -c "import torch, warp, newton, mujoco; print('torch', torch.__version__, 'warp', warp.__version__, 'newton', newton.__version__, 'mujoco', mujoco.__version__)"
    # the first Newton build compiles Warp's kernels (cold cache): it lands in the tests' window
    run cuda_tests 150 "$py" -m pytest -q -rs tests/test_tasks.py tests/test_engines.py -k "cuda"
    # shellcheck disable=SC2086
    run train_tp 110 "$py" bench/train_throughput.py --device "$dev" --engine newton --seconds 0.5 \
        --num-envs $sizes
    run train_tp_graph 50 "$py" bench/train_throughput.py --device "$dev" --engine newton \
        --seconds 0.5 --num-envs "$mid" --cuda-graph
    # shellcheck disable=SC2086
    run sim_tp 110 "$py" bench/sim_throughput.py --device "$dev" --engines newton \
        --num-envs "$small" $sizes --seconds 0.5 --cuda-graph
    train_run ant_sync 90 task=MultiAntPush num_envs="$mid" max_iterations="$iters" sync_debug=True \
        task.env.cudaGraph=True physics_engine=newton
    ;;
check)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    run cuda_tests 560 "$py" -m pytest -q -rs tests/test_tasks.py tests/test_engines.py tests/test_qmix_cuda.py -k "cuda"
    ;;
sim)
    run sim_throughput 560 "$py" bench/sim_throughput.py --device "$dev" --engines newton \
        --num-envs 1024 4096 8192 16384 --cuda-graph
    ;;
train)
    run train_throughput 280 "$py" bench/train_throughput.py --device "$dev" --num-envs 1024 4096 8192 16384
    run train_throughput_graph 280 "$py" bench/train_throughput.py --device "$dev" \
        --num-envs 1024 4096 8192 16384 --cuda-graph
    ;;
ball)
    train_run ball_train 570 task=MultiBallPush max_iterations=400 sync_debug=True
    ;;
ant)
    train_run ant_train 570 task=MultiAntPush max_iterations=300 sync_debug=True
    ;;
ant2)
    train_run ant2_train 570 task=MultiAntPush max_iterations=700 sync_debug=True \
        task.env.controlFrequencyInv=2 task.env.episodeLength=750
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
