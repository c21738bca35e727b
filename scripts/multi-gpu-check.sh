#!/usr/bin/env bash
# One call on a multi-GPU machine (nvidia-h200-x2 / -x4): build, run the data-parallel GPU
# tests, then measure weak scaling of the 124m preset (16 × 1024 tokens per GPU) on 1, 2, 4
# GPUs for bf16 and nvfp4 and print a table: tokens/s and efficiency = tokens/s(N) / (N ·
# tokens/s(1)). Logs go to $OUT (the device tool's output folder) or ./multi-gpu-out.
#   device run: bash scripts/multi-gpu-check.sh      (carry .deps: GoogleTest sources)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/multi-gpu-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on shared hosts (device KINDS.md)
BUILD=${BUILD_DIR:-build-gpu}
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  nvidia-smi topo -m 2>/dev/null | head -8
} | tee "$OUT/env.txt"
gen=""
command -v ninja >/dev/null && gen="-G Ninja"
t0=$(date +%s)
cmake -S . -B "$BUILD" $gen -DCMAKE_BUILD_TYPE=Release >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
grep -i "nccl" "$OUT/configure.log"
cmake --build "$BUILD" -j"$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

"$BUILD/tests/nibble_gpu_tests" --gtest_filter="${GTEST_FILTER:-SM90_DataParallel*}" >"$OUT/gpu-tests.log" 2>&1
rc=$?
grep -E "^  |^\[  PASSED|^\[  FAILED|Failure|Expected|actual" "$OUT/gpu-tests.log" | head -40

NIBBLE="$PWD/$BUILD/nibble"
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
STEPS=${STEPS:-25}
printf "\n%-7s %-5s %-12s %10s %9s %11s\n" recipe gpus "batch x seq" "tokens/s" "step ms" efficiency | tee "$OUT/scaling.txt"
for recipe in ${RECIPES:-bf16 nvfp4}; do
  base=""
  for n in 1 2 4; do
    [ "$n" -gt "$GPUS" ] && continue
    run="/tmp/scale-$recipe-$n"
    rm -rf "$run"
    "$NIBBLE" launch --nproc "$n" --master-port $((29800 + n)) -- "$NIBBLE" train --model 124m --device cuda \
      --recipe "$recipe" --batch $((16 * n)) --seq 1024 --steps "$STEPS" --log-every 5 --eval-every 0 --eval-batches 1 \
      --val-fraction 0.12 --save-every 0 \
      --out "$run" >"$OUT/scale-$recipe-$n.log" 2>&1 || { echo "$recipe on $n GPUs failed:"; tail -5 "$OUT/scale-$recipe-$n.log"; continue; }
    tps=$(tail -1 "$run/metrics.jsonl" | sed -E 's/.*"tokens_per_s":([0-9.e+]+).*/\1/')
    [ -z "$base" ] && base=$tps
    python3 - "$recipe" "$n" "$tps" "$base" <<'PY' | tee -a "$OUT/scaling.txt"
import sys
r, n, tps, base = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"{r:<7} {n:<5} {16*n:>4} x 1024  {tps:>10.0f} {16*n*1024/tps*1000:>9.1f} {100*tps/(n*base):>10.1f}%")
PY
  done
done
# the same 2-GPU bf16 run with the gradients reduced after the backward instead of during it
if [ "$GPUS" -ge 2 ]; then
  rm -rf /tmp/scale-flat
  NIBBLE_DP_OVERLAP=0 "$NIBBLE" launch --nproc 2 --master-port 29811 -- "$NIBBLE" train --model 124m --device cuda \
    --recipe bf16 --batch 32 --seq 1024 --steps "$STEPS" --log-every 5 --eval-every 0 --eval-batches 1 \
    --val-fraction 0.12 --save-every 0 --out /tmp/scale-flat >"$OUT/scale-flat.log" 2>&1 &&
    echo "bf16, 2 GPUs, all-reduce after the backward (no overlap): $(tail -1 /tmp/scale-flat/metrics.jsonl |
      sed -E 's/.*"tokens_per_s":([0-9.e+]+).*/\1/') tokens/s" | tee -a "$OUT/scaling.txt"
fi
# and with ZeRO-1 (the AdamW state sharded; one more all-gather of the weights per step)
if [ "$GPUS" -ge 2 ]; then
  rm -rf /tmp/scale-zero1
  "$NIBBLE" launch --nproc 2 --master-port 29813 -- "$NIBBLE" train --model 124m --device cuda --zero1 \
    --recipe bf16 --batch 32 --seq 1024 --steps "$STEPS" --log-every 5 --eval-every 0 --eval-batches 1 \
    --val-fraction 0.12 --save-every 0 --out /tmp/scale-zero1 >"$OUT/scale-zero1.log" 2>&1 &&
    echo "bf16, 2 GPUs, ZeRO-1: $(tail -1 /tmp/scale-zero1/metrics.jsonl |
      sed -E 's/.*"tokens_per_s":([0-9.e+]+).*/\1/') tokens/s" | tee -a "$OUT/scaling.txt"
fi
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls *.log *.txt 2>/dev/null) && (cd "$OUT" && rm -f *.log)
exit $rc
