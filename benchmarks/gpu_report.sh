#!/usr/bin/env bash
# Every GPU check and measurement of the README in one go, for a lent GPU machine with CuPy
# and PyTorch (CUDA): the GPU tests, minicaps against PyTorch on the same GPU, a stage
# profile, a timed MNIST epoch and the sweep table. Each part's log lands in $OUT (default
# gpu-report/) and its tail is printed; a part that fails does not stop the others.
#
#     MNIST=path/to/mnist OUT=gpu-report bash benchmarks/gpu_report.sh [part ...]
#
# Parts: env tests compare portable host memory profile epoch sweep suite (all, in that
# order, if none named).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-gpu-report}
mkdir -p "$out"
py=${PYTHON:-python3}

part() {  # part NAME SECONDS COMMAND...: run it with a time limit, log it, print its tail
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name: $*"
    timeout "$limit" bash -c '"$@"' bash "$@" >"$out/$name.log" 2>&1  # functions too
    echo "-- $name: exit $?, $((SECONDS - start)) s"
    tail -n "${TAIL:-12}" "$out/$name.log"
}

env_info() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $py -c "import sys, numpy, cupy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__,
'cupy', cupy.__version__, 'torch', torch.__version__, 'cudnn tf32', torch.backends.cudnn.allow_tf32,
'matmul tf32', torch.backends.cuda.matmul.allow_tf32)"
}

host_profile() {  # where the host's time goes in GPU steps at batch 32 (launch-bound there)
    $py - <<'PY'
import cProfile, pstats, numpy as np, cupy
from minicaps import Adam, CapsNet, CapsNetConfig
net = CapsNet.from_config(CapsNetConfig(), device="gpu")
opt = Adam(net.params, lr=1e-4)
x = cupy.asarray(np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32))
y = cupy.arange(32) % 10
def step():
    opt.step(net.loss_and_grads(x, y)[1])
for _ in range(3):
    step()
cupy.cuda.Device().synchronize()
profiler = cProfile.Profile()
profiler.enable()
for _ in range(10):
    step()
cupy.cuda.Device().synchronize()
profiler.disable()
pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
PY
}

portable() {  # the fast paths (fused kernels) against the reference ops, alternated, three rounds
    for round in 1 2 3; do
        for reference in 0 1; do
            for batch in 32 128; do
                MINICAPS_REFERENCE=$reference $py -m minicaps bench --gpu --batch-size $batch \
                    --steps 20 --json | tail -n 1 | sed "s/^/reference=$reference /"
            done
        done
    done
}

epoch() {  # two 60,000-image MNIST epochs (no validation split) at batch 128
    rm -rf /tmp/mnist-gpu
    $py -m minicaps train --gpu --data "${MNIST:?set MNIST to the MNIST idx folder}" \
        --epochs 2 --val-fraction 0 --batch-size 128 --out /tmp/mnist-gpu
    cat /tmp/mnist-gpu/metrics.jsonl
}

export -f env_info host_profile portable epoch
export py out
for name in "${@:-env tests compare portable host memory profile epoch sweep suite}"; do
    for name in $name; do
        case $name in
        env) part env 60 env_info ;;
        tests) part tests 400 $py -m pytest -q -x -p no:cacheprovider tests/test_gpu.py \
                   tests/test_kernels.py ;;
        compare) part compare 300 $py benchmarks/compare_torch.py --gpu --memory \
                     --batch-sizes 32,128,256 --steps 30
                 part compare-again 300 $py benchmarks/compare_torch.py --gpu \
                     --batch-sizes 32,128,256 --steps 30
                 part compare-tf32 300 $py benchmarks/compare_torch.py --gpu --tf32 \
                     --batch-sizes 32,128,256 --steps 30 ;;
        portable) part portable 300 portable ;;
        host) part host 120 host_profile ;;
        memory) part memory 200 bash -c "$py benchmarks/memory_stages.py --gpu --batch-size 32 &&
                    $py benchmarks/memory_stages.py --gpu --batch-size 128" ;;
        profile) part profile 200 $py benchmarks/profile_step.py --gpu --batch-size 128 \
                     --steps 10
                 part conv-parts 200 $py benchmarks/profile_step.py --gpu --conv-parts \
                     --batch-size 128 --steps 10 ;;
        epoch) part epoch 300 epoch ;;
        sweep) part sweep 400 $py benchmarks/sweep.py --gpu --steps 10 ;;
        suite) part suite 400 $py -m pytest -q -p no:cacheprovider tests ;;
        *) echo "unknown part $name" >&2; exit 2 ;;
        esac
    done
done
