#!/usr/bin/env bash
# One prepared GPU check (a few minutes on an H100/H200): the CUDA tests, then the benchmark on
# CUDA (backend auto's choice, forced fp16, CUDA graphs) with the fp32 eager comparison, the batch-64
# throughput and the multi-camera batch. The rows of docs/benchmarks.md "GPU" come from its output.
# Everything it prints and its JSON files go to ${OUT:-gpu_check_out}/.
#
# On a machine without this package's Python dependencies (e.g. the lent GPU machine, which has
# torch but no open_clip and no ROS wheels), carry them as wheels in .whl/ first, made on a
# machine with internet access (Python 3.12 shown; match the target's Python):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       open_clip_torch ftfy wcwidth ros-rclpy ros-sensor-msgs ros-std-msgs ros-builtin-interfaces ...
# and this script installs them into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee -a "$OUT/gpu.txt"

status=0
echo "== CUDA tests"
timeout 240 $PY -m pytest test/test_inference_fast.py test/test_predictor.py -q -k "cuda or gpu or device" \
    -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.txt" || status=1

# Backend auto (the default) measures this GPU's candidate paths first (fp16/bf16 eager, CUDA graphs,
# torch.compile, TensorRT if importable) and keeps its choice in $OUT/auto_paths.json.
echo "== benchmark: backend auto, batch 1 and 64, depth 704x352, fp32 eager comparison"
timeout 420 $PY -m space_clip_ros.cli.benchmark --device cuda --compare --output-size 704x352 --batch-sizes 1,64 \
    --sizes 640x480 --auto-cache "$OUT/auto_paths.json" \
    --json "$OUT/benchmark_cuda.json" 2>&1 | tee "$OUT/benchmark_cuda.txt" || status=1

echo "== benchmark: forced torch fp16 (no CUDA graphs), depth 704x352"
timeout 120 $PY -m space_clip_ros.cli.benchmark --device cuda --backend torch --precision fp16 --compare \
    --output-size 704x352 --batch-sizes 1 --sizes 640x480 \
    --json "$OUT/benchmark_cuda_fp16.json" 2>&1 | tee "$OUT/benchmark_cuda_fp16.txt" || status=1

echo "== benchmark: CUDA graphs, depth 704x352"
timeout 120 $PY -m space_clip_ros.cli.benchmark --device cuda --backend torch --cuda-graphs --output-size 704x352 \
    --batch-sizes 1 --sizes 640x480 \
    --json "$OUT/benchmark_cuda_graphs.json" 2>&1 | tee "$OUT/benchmark_cuda_graphs.txt" || status=1

if $PY -m space_clip_ros.cli.benchmark --help | grep -q -- "--cameras"; then
    echo "== benchmark: 4 cameras batched vs one by one"
    timeout 120 $PY -m space_clip_ros.cli.benchmark --device cuda --cameras 4 \
        --json "$OUT/benchmark_cameras.json" 2>&1 | tee "$OUT/benchmark_cameras.txt" || status=1
fi
exit $status
