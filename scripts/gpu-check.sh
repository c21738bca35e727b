#!/usr/bin/env bash
# One call on a GPU machine: build (CUDA for sm_90a + PTX), run the GPU tests and the CPU
# tests, run the GPU benchmarks, print a short summary table last. Logs and JSON go to
# $OUT (the device tool's output folder) or ./gpu-check-out.
#   device run: bash scripts/gpu-check.sh      (carry .deps: GoogleTest sources)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${BUILD_DIR:-build-gpu}
JOBS=$(nproc)

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+uncommitted changes)')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null
  nvcc --version | tail -1
} | tee "$OUT/env.txt"

gen=""
command -v ninja >/dev/null && gen="-G Ninja"
t0=$(date +%s)
if ! cmake -S . -B "$BUILD" $gen -DCMAKE_BUILD_TYPE=Release >"$OUT/configure.log" 2>&1; then
  tail -30 "$OUT/configure.log"; exit 1
fi
if ! cmake --build "$BUILD" -j"$JOBS" >"$OUT/build.log" 2>&1; then
  grep -E "error" "$OUT/build.log" | head -30; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"

# The GPU test binary directly (one run: it also prints the engine tests' measured CPU/GPU
# differences); QUICK=1 skips the CPU tests (CI runs them) and the 350m benchmark.
"$BUILD/tests/nibble_gpu_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$OUT/gpu-tests.log" 2>&1
gpu_rc=$?
cpu_rc=0
if [ -z "${QUICK:-}" ]; then
  ctest --test-dir "$BUILD" -L cpu -j"$JOBS" >"$OUT/cpu-tests.log" 2>&1
  cpu_rc=$?
fi
echo "gpu tests: $(grep -E '^\[  PASSED  \]' "$OUT/gpu-tests.log") $(grep -E '^\[  FAILED  \] [0-9]+ test' "$OUT/gpu-tests.log")"
[ -f "$OUT/cpu-tests.log" ] && grep -E "tests passed|tests failed" "$OUT/cpu-tests.log" | sed 's/^/cpu tests: /'
[ $gpu_rc -eq 0 ] || grep -E "Failure|FAILED|Expected|Which is|actual|rror|differ" "$OUT/gpu-tests.log" | head -60

NIBBLE="$BUILD/nibble"
"$NIBBLE" bench --device cuda --only kernels --json "$OUT/bench-kernels.json" >"$OUT/bench-kernels.txt" 2>&1
"$NIBBLE" bench --device cuda --only train --models ${BENCH_MODELS:-124m} --batch 16 --seq 1024 --steps ${BENCH_STEPS:-8} \
  --recipes bf16,nvfp4,mxfp4,nvfp4-mean,ufp4,ufp4-mean,metis \
  --profile --json "$OUT/bench-train.json" >"$OUT/bench-train.txt" 2>&1
[ -z "${QUICK:-}" ] && "$NIBBLE" bench --device cuda --only train --models 350m --recipes bf16,nvfp4 --batch 8 --seq 1024 \
  --steps 4 --json "$OUT/bench-train-350m.json" >"$OUT/bench-train-350m.txt" 2>&1
echo
echo "=== summary ==="
cat "$OUT/env.txt"
echo "gpu tests rc=$gpu_rc, cpu tests rc=$cpu_rc"
grep -E "^  " "$OUT/gpu-tests.log" | grep -E "loss cpu|worst|->" | head -80
grep -E "^\[  FAILED" "$OUT/gpu-tests.log" | sort -u | head -20
grep -E "SM90_AttentionTc|tensor-core|ms" "$OUT/gpu-tests.log" | grep -iE "ms|TFLOP" | head -12
# the quantizer table and the fused-operand rows of the GEMM table; the full tables are in $OUT
sed -n '1,/^$/p;/quantizer op/,/^$/p' "$OUT/bench-kernels.txt" | grep -v "^$"
grep -E "ceiling|forward\+backward" "$OUT/bench-kernels.txt" | grep -E "gate_up|ceiling" | head -16
cat "$OUT/bench-train.txt" "$OUT/bench-train-350m.txt" 2>/dev/null
echo "gpu tests: $(grep -E '^\[  PASSED  \]' "$OUT/gpu-tests.log") $(grep -E '^\[  FAILED  \] [0-9]+ test' "$OUT/gpu-tests.log")"
[ -f "$OUT/cpu-tests.log" ] && grep -E "tests passed|tests failed" "$OUT/cpu-tests.log" | sed 's/^/cpu tests: /'
# the device tool returns few files: logs go in one archive
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls *.log *.txt 2>/dev/null) && (cd "$OUT" && rm -f *.log configure.log env.txt bench-*.txt)
exit $(( gpu_rc | cpu_rc ))
