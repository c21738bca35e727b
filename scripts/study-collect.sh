#!/usr/bin/env bash
# Merges the study.tgz tarballs that scripts/study-sweep.sh brings back from device calls (several
# calls or sessions of one sweep) into one sweep directory DEST and writes its report there with
# `nibble sweep --summarize` (which trains nothing: it reads the runs' metrics.jsonl; runs of
# RECIPES x SEEDS that are missing, e.g. a second seed only some recipes have, leave the report
# marked incomplete, with the finished runs in the table).
# Tarballs are applied in the order given, so list them oldest first: a later call's copy of a run
# has more of it. Unfinished runs are skipped (and named).
#
#   bash scripts/study-collect.sh DEST MODEL TOKENS RECIPES SEEDS study.tgz...
#   e.g. bash scripts/study-collect.sh docs/study/124m-100M 124m 100000000 bf16,nvfp4 1,2 /work/.device/*/study.tgz
# The sweep options (batch, seq, lr) must be those of the device calls: BATCH, SEQ, LR as there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:?dest}; MODEL=${2:?model}; TOKENS=${3:?tokens}; RECIPES=${4:?recipes}; SEEDS=${5:?seeds}
shift 5
[ $# -ge 1 ] || { echo "give at least one study.tgz" >&2; exit 2; }
NIBBLE=${NIBBLE:-build-main/nibble}
[ -x "$NIBBLE" ] || { echo "no $NIBBLE: build nibble first (or set NIBBLE)" >&2; exit 2; }
mkdir -p "$DEST"
# Only finished runs (with final/trainer.json) are merged: a run a call stopped half-way restarts
# from step 0 on the next machine (its checkpoint stays behind), so its partial log is not kept.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
for t in "$@"; do
  rm -rf "${STAGE:?}"/*
  tar xzf "$t" -C "$STAGE"
  for r in "$STAGE"/runs/*; do
    [ -d "$r" ] || continue
    if [ -f "$r/final/trainer.json" ]; then
      mkdir -p "$DEST/runs" && rm -rf "$DEST/runs/$(basename "$r")" && cp -r "$r" "$DEST/runs/"
    else
      echo "skipped unfinished run $(basename "$r") from $t"
    fi
  done
done
# the sweep's own summary is rewritten below from all the runs (the runs' analyses stay)
rm -f "$DEST"/results.* "$DEST"/*.svg
"$NIBBLE" sweep --model "$MODEL" --data /tmp/study-data --tokens "$TOKENS" --batch "${BATCH:-16}" --seq "${SEQ:-1024}" \
  --lr "${LR:-6e-4}" --recipes "$RECIPES" --seeds "$SEEDS" --summarize --device cpu --out "$DEST" --quiet
sed -n '/^| recipe/,/^$/p' "$DEST/results.md"
