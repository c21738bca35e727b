#!/usr/bin/env bash
# One run of the recipe study (issue 5) inside one device call, resumable across calls of a
# sweep: tokenizes the shared English corpus once (cached in .corpus/english-gpt2/), trains
# RECIPE at SEED on MODEL for TOKENS tokens with the study's fixed schedule, and copies back what
# a comparison needs (config.json, metrics.jsonl, final/trainer.json, loss.svg) into
# $OUT/runs/<recipe>-seed<seed>/. Checkpoints stay on the device (too large to bring back), so a
# run must finish within one call or within one warm machine; the small files are what gets
# committed (docs/study/) and compared across sessions with `nibble report`.
#
#   device run, carry [".deps", ".corpus/english.txt.xz"]:
#     bash scripts/study-run.sh nvfp4 1 60m 20000000
#   .corpus/english.txt.xz is ../shared/corpus/english.txt.xz (copy it once; git ignores .corpus/).
#   The data: the whole file tokenized with GPT-2 BPE, its last 1% the validation split
#   (29.7M train + 0.30M val tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:?recipe}; SEED=${2:?seed}; MODEL=${3:?model}; TOKENS=${4:?tokens}
BATCH=${BATCH:-16}; SEQ=${SEQ:-1024}
OUT=${OUT:-$PWD/study-out}
BUILD=${BUILD_DIR:-build-gpu}
export PATH=/usr/local/cuda/bin:$PATH
if [ ! -x "$BUILD/nibble" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNIBBLE_TESTS=OFF -DNIBBLE_BENCH=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target nibble_cli >/dev/null
fi
DATA=.corpus/english-gpt2
if [ ! -f "$DATA/meta.json" ]; then
  [ -f .corpus/english.txt ] || xz -dk .corpus/english.txt.xz
  # the last 1% of the file is the validation split (nibble data --val-fraction 0.01)
  "$BUILD/nibble" data --input .corpus/english.txt --tokenizer gpt2 --val-fraction 0.01 --out "$DATA"
fi
STEPS=$(( (TOKENS + BATCH * SEQ - 1) / (BATCH * SEQ) ))
RUN=runs/study/$MODEL/$RECIPE-seed$SEED
RESUME=""
[ -f "$RUN/latest" ] && RESUME="--resume $RUN"
"$BUILD/nibble" train --model "$MODEL" --recipe "$RECIPE" --seed "$SEED" --data "$DATA" --steps "$STEPS" \
  --batch "$BATCH" --seq "$SEQ" --lr "${LR:-6e-4}" --log-every 20 --eval-every "${EVAL_EVERY:-200}" \
  --eval-batches 16 --save-every "${SAVE_EVERY:-500}" --out "$RUN" --quiet $RESUME
DEST="$OUT/runs/$RECIPE-seed$SEED"
mkdir -p "$DEST/final"
cp "$RUN/config.json" "$RUN/metrics.jsonl" "$RUN/loss.svg" "$DEST/"
[ -f "$RUN/final/trainer.json" ] && cp "$RUN/final/trainer.json" "$DEST/final/"
tail -3 "$RUN/metrics.jsonl"
