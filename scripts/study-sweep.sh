#!/usr/bin/env bash
# Several runs of the recipe study (issue 5) in one device call: builds nibble, tokenizes the
# shared English corpus (GPT-2, last 1% held out), runs `nibble sweep` over RECIPES × SEEDS on
# MODEL for TOKENS tokens each, and brings back the sweep's results.md / results.json / plots and
# every run's config.json and metrics.jsonl (flattened: the device returns shallow folders only)
# into $OUT/sweep/. This is the command of the 60m pilot (docs/study/pilot-60m-20M), as a script.
# A sweep is resumable while the machine stays warm (run the same call again: finished runs are
# kept, a stopped one continues from its checkpoint); checkpoints never leave the device.
#
#   device run, carry [".deps", ".corpus/english.txt.xz"]:
#     bash scripts/study-sweep.sh 60m 20000000 bf16,nvfp4,mxfp4,nvfp4-mean,ufp4,ufp4-mean 1
#   Budget per call (H100, 16 × 1024 tokens a step): 60m ≈ 690K tokens/s in bf16 and 275–380K in
#   4-bit, so six recipes × 20M tokens ≈ 6 minutes; 124m 100M tokens ≈ 4 (bf16) – 8 (4-bit)
#   minutes per run: one or two runs a call (STOP_AFTER caps the steps of a call).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?model}; TOKENS=${2:?tokens}; RECIPES=${3:?recipes}; SEEDS=${4:-1}
OUT=${OUT:-$PWD/study-out}
BUILD=${BUILD_DIR:-build-gpu}
SWEEP=${SWEEP_DIR:-/tmp/sweep-$MODEL}
export PATH=/usr/local/cuda/bin:$PATH
gen=""
command -v ninja >/dev/null && gen="-G Ninja"
if [ ! -x "$BUILD/nibble" ]; then
  cmake -S . -B "$BUILD" $gen -DCMAKE_BUILD_TYPE=Release -DNIBBLE_TESTS=OFF -DNIBBLE_BENCH=OFF >/dev/null
  cmake --build "$BUILD" --target nibble_cli -j"$(nproc)" >/dev/null
fi
DATA=/tmp/english-gpt2
if [ ! -f "$DATA/meta.json" ]; then
  [ -f .corpus/english.txt ] || xz -dk .corpus/english.txt.xz
  "$BUILD/nibble" data --input .corpus/english.txt --tokenizer gpt2 --val-fraction 0.01 --out "$DATA" | tail -1
fi
extra=""
[ -n "${STOP_AFTER:-}" ] && extra="--stop-after $STOP_AFTER"
"$BUILD/nibble" sweep --recipes "$RECIPES" --seeds "$SEEDS" --model "$MODEL" --data "$DATA" --tokens "$TOKENS" \
  --batch "${BATCH:-16}" --seq "${SEQ:-1024}" --lr "${LR:-6e-4}" --log-every 20 --eval-every "${EVAL_EVERY:-200}" \
  --eval-batches 16 --save-every "${SAVE_EVERY:-500}" --device cuda --out "$SWEEP" --quiet $extra || true
mkdir -p "$OUT/sweep"
cp "$SWEEP"/results.* "$SWEEP"/*.svg "$OUT/sweep/" 2>/dev/null || echo "no summary yet (the sweep is not finished)"
for r in "$SWEEP"/runs/*; do
  [ -d "$r" ] || continue
  n=$(basename "$r")
  cp "$r/config.json" "$OUT/sweep/$n.config.json" 2>/dev/null || true
  cp "$r/metrics.jsonl" "$OUT/sweep/$n.metrics.jsonl" 2>/dev/null || true
done
ls "$OUT/sweep"
[ -f "$OUT/sweep/results.md" ] && cat "$OUT/sweep/results.md" | head -20
