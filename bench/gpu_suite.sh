#!/usr/bin/env bash
# The GPU measurements still owed by issues 2 and 3, in stages that each fit one 10-minute call
# of a lent GPU machine (30 minutes of device time per session):
#
#   bash bench/gpu_suite.sh check      # CUDA tests: graphed env.step == eager, no host syncs (~3 min)
#   bash bench/gpu_suite.sh sim        # sim_throughput, newton, 1024..16384, eager vs env.cudaGraph
#   bash bench/gpu_suite.sh train      # train_throughput sweep (train/sim at 4096: goal < 0.5), both modes
#   bash bench/gpu_suite.sh ball       # MultiBallPush QMIX learning curve, 4096 envs, sync_debug
#   bash bench/gpu_suite.sh ant        # MultiAntPush QMIX learning curve, 4096 envs, sync_debug
#   bash bench/gpu_suite.sh ant2       # the same at the old 50 policy steps/s (controlFrequencyInv 2),
#                                      # where QMIX only stood on the CPU: does a GPU budget change that?
#
# Needs python3 with CUDA torch, mujoco, newton[sim], hydra-core and pytest importable (the lent
# machines have torch only: carry wheels, see bench/gpu_setup.sh). Logs go to $OUT (the
# device tool brings them back) or bench/results/gpu; the last lines of each are echoed.
set -u
stage=${1:?usage: bash bench/gpu_suite.sh check|sim|train|ball|ant|ant2}
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
export WANDB_MODE=offline

run() {  # run NAME SECONDS CMD...: log to $out/NAME.log, echo rc and the tail
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%H:%M:%S)): $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "rc=$? $name"
    tail -n 12 "$out/$name.log"
}

case $stage in
check)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    run cuda_tests 560 "$py" -m pytest -q -rs tests/test_tasks.py tests/test_engines.py tests/test_qmix_cuda.py -k "cuda"
    ;;
sim)
    run sim_throughput 560 "$py" bench/sim_throughput.py --device cuda:0 --engines newton \
        --num-envs 1024 4096 8192 16384 --cuda-graph
    ;;
train)
    run train_throughput 280 "$py" bench/train_throughput.py --device cuda:0 --num-envs 1024 4096 8192 16384
    run train_throughput_graph 280 "$py" bench/train_throughput.py --device cuda:0 \
        --num-envs 1024 4096 8192 16384 --cuda-graph
    ;;
ball)
    run ball_train 570 "$py" train.py task=MultiBallPush max_iterations=400 sync_debug=True \
        experiment=gpu_ball train_dir="$out/runs"
    ;;
ant)
    run ant_train 570 "$py" train.py task=MultiAntPush max_iterations=300 sync_debug=True \
        experiment=gpu_ant train_dir="$out/runs"
    ;;
ant2)
    run ant2_train 570 "$py" train.py task=MultiAntPush max_iterations=700 sync_debug=True \
        task.env.controlFrequencyInv=2 task.env.episodeLength=750 experiment=gpu_ant2 train_dir="$out/runs"
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
