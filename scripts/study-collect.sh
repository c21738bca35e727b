#!/usr/bin/env bash
# Merges the study.tgz tarballs that scripts/study-sweep.sh brings back from device calls (several
# calls or sessions of one sweep) into one sweep directory DEST and writes its report there with
# `nibble sweep --summarize` (which trains nothing: it reads the runs' metrics.jsonl; runs of
# RECIPES x SEEDS that are missing, e.g. a second seed only some recipes have, leave the report
# marked incomplete, with the finished runs in the table).
# Tarballs are applied in the order given, so list them oldest first: a later call's copy of a run
# has more of it. An unfinished run is kept only while DEST has no finished copy and no longer
# log of it; the report compares it with the other runs of its seed at the evaluations it reached
# ("Unfinished runs"), outside the table of finished runs.
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
# A run a call stopped half-way restarts from step 0 on the next machine (its checkpoint stays
# behind), so a later tarball may hold a shorter log of it than an earlier one: an unfinished
# run replaces DEST's copy only when DEST's is unfinished too and has fewer log rows. (A seed's
# run is bit-identical from machine to machine, docs/gpu-runs.md run 57, so the longer log is
# the same run, further on.)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
rows() { [ -f "$1/metrics.jsonl" ] && wc -l <"$1/metrics.jsonl" || echo 0; }
for t in "$@"; do
  rm -rf "${STAGE:?}"/*
  tar xzf "$t" -C "$STAGE"
  for r in "$STAGE"/runs/*; do
    [ -d "$r" ] || continue
    name=$(basename "$r"); have="$DEST/runs/$name"
    if [ -f "$r/final/trainer.json" ]; then
      mkdir -p "$DEST/runs" && rm -rf "$have" && cp -r "$r" "$DEST/runs/"
    elif [ -f "$have/final/trainer.json" ]; then
      echo "kept the finished $name over the unfinished one from $t"
    elif [ "$(rows "$r")" -gt "$(rows "$have")" ]; then
      mkdir -p "$DEST/runs" && rm -rf "$have" && cp -r "$r" "$DEST/runs/"
      echo "unfinished run $name from $t: $(rows "$r") log rows (compared at its evaluations)"
    else
      echo "kept the unfinished $name already there (as long or longer) over the one from $t"
    fi
  done
done
# the sweep's own summary is rewritten below from all the runs (the runs' analyses stay)
rm -f "$DEST"/results.* "$DEST"/*.svg
"$NIBBLE" sweep --model "$MODEL" --data /tmp/study-data --tokens "$TOKENS" --batch "${BATCH:-16}" --seq "${SEQ:-1024}" \
  --lr "${LR:-6e-4}" --recipes "$RECIPES" --seeds "$SEEDS" --summarize --device cpu --out "$DEST" --quiet
sed -n '/^| recipe/,/^$/p' "$DEST/results.md"
