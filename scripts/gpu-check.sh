#!/usr/bin/env bash
# On the GPU machine: builds loom with the CUDA backend (sm_90) and runs the `gpu`-labelled tests;
# with --bench also the benchmarks against the PyTorch peer (bench/README.md). Output lands in
# $LOOM_GPU_BUILD (default build-gpu); the last lines are a summary.
#   usage: scripts/gpu-check.sh [--bench] [ctest -R regex]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .deps/use-deps.sh ]; then source .deps/use-deps.sh; fi
source scripts/cudnn-env.sh
build=${LOOM_GPU_BUILD:-build-gpu}
bench=0
if [ "${1:-}" = "--bench" ]; then bench=1; shift; fi
cmake -S . -B "$build" -G Ninja -DLOOM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDNN_ROOT="${LOOM_CUDNN_ROOT:-}" > "$build.configure.log" 2>&1 || { tail -30 "$build.configure.log"; exit 1; }
# Keep going past a failing target so the rest still builds; the errors are printed, and the
# script fails at the end if any target did not build.
build_status=0
cmake --build "$build" -j"$(nproc)" -- -k 0 > "$build.build.log" 2>&1 || build_status=$?
grep -E "error|FAILED" -A3 "$build.build.log" | head -40 || true
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
ctest --test-dir "$build" -L gpu --output-on-failure ${1:+-R "$1"} || status=$?
if [ "$bench" = 1 ] && [ -x scripts/bench-gpu.sh ]; then scripts/bench-gpu.sh "$build"; fi
[ "$build_status" = 0 ] || echo "gpu-check: the build failed (see $build.build.log)"
exit "${status:-$build_status}"
