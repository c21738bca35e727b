#!/usr/bin/env bash
# The QAT experiment of issue 6 in device calls: pretrain a bf16 model on the study corpus, then
# QAT it at BITS with and without WinQ for the same step budget and SEEDS, spread over the GPUs;
# the Hessian spectrum (top eigenvalues, trace, SLQ density) of the 2-bit runs of the first seed
# at the start, along and at the end of QAT; one `nibble report --baseline` per (bits, seed)
# (steps for WinQ to reach the baseline's final validation loss). Brings back $OUT/qat.tgz: every
# run's config.json and metrics.jsonl, the reports and the Hessian results; checkpoints stay.
# Re-running the call while the machine is warm skips what is done (finished runs, spectra).
#
#   device run, carry [".deps", ".corpus/english.txt.xz", ".corpus/code-c.txt.xz"]:
#     bash scripts/qat-experiment.sh
#   env: MODEL (60m), PRE_TOKENS (pretraining, 50M), STEPS (QAT steps, 1000), BITS ("2 3 4"),
#        VARIANTS ("base=;winq=--winq": NAME=qat flags per run, ';'-separated), SPECTRA (1; 0 skips them),
#        HESSIAN_FLAGS ("--top 2 --power-iters 20 --probes 3 --lanczos-steps 20"),
#        SEEDS ("1 2"), LR (QAT peak lr, 1e-4), HESSIAN_AT (QAT steps of the spectra, "250 500"
#        plus the start and the end; HESSIAN_SAVE, 250, the checkpoint interval of those runs), CALL_SECONDS (590), GTEST_FILTER (GPU tests first), BATCH,
#        SEQ (16 × 1024), DEVICE (cuda; cpu with a tiny MODEL, e.g. a model .json, is a dry run
#        of the pipeline).
# Data: as the recipe study (scripts/study-sweep.sh): both shared corpora, GPT-2 BPE, the last 1%
# of each file held out.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
MODEL=${MODEL:-60m}; PRE_TOKENS=${PRE_TOKENS:-50000000}; STEPS=${STEPS:-1000}
BITS=${BITS:-2 3 4}; SEEDS=${SEEDS:-1 2}; LR=${LR:-1e-4}; HESSIAN_AT=${HESSIAN_AT:-250 500}
# the runs per (bits, seed): NAME=extra qat flags, ';'-separated; "base" is the reference of the
# reports and the spectra compare "base" with "winq"
VARIANTS=${VARIANTS:-base=;winq=--winq}
CALL_SECONDS=${CALL_SECONDS:-590}
BATCH=${BATCH:-16}; SEQ=${SEQ:-1024}; DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$PWD/qat-out}
BUILD=${BUILD_DIR:-build-gpu}
WORK=${WORK_DIR:-/tmp/qat-$MODEL}
DATA=/tmp/study-data
mkdir -p "$OUT" "$WORK/runs" "$WORK/hessian" "$WORK/reports"
left() { echo $(( CALL_SECONDS - 40 - ($(date +%s) - T0) )); }

source scripts/device-build.sh
device_build
NIBBLE="$PWD/$BUILD/nibble"
if [ ! -f "$DATA/meta.json" ]; then
  for f in english code-c; do [ -f ".corpus/$f.txt" ] || xz -dk ".corpus/$f.txt.xz" || exit 1; done
  "$NIBBLE" data --input .corpus/english.txt .corpus/code-c.txt --tokenizer gpt2 --val-fraction 0.01 --out "$DATA" | tail -1
fi

# 1. the bf16 model QAT starts from (resumable: a time limit stops it with a checkpoint)
PRE="$WORK/pretrain"
if [ ! -f "$PRE/final/trainer.json" ] && [ "$(left)" -gt 30 ]; then
  resume=()
  [ -f "$PRE/latest" ] && resume=(--resume "$PRE")
  "$NIBBLE" train "${resume[@]}" --model "$MODEL" --recipe bf16 --data "$DATA" --steps $(( PRE_TOKENS / (BATCH * SEQ) )) \
    --batch "$BATCH" --seq "$SEQ" --lr 6e-4 --log-every 50 --eval-every 500 --eval-batches 20 --save-every 0 --device "$DEVICE" \
    --out "$PRE" --quiet --time-limit "$(awk -v s="$(left)" 'BEGIN { printf "%.3f", s / 60 }')" >"$OUT/pretrain.log" 2>&1 ||
    { tail -5 "$OUT/pretrain.log"; exit 1; }
  tail -1 "$PRE/metrics.jsonl"
fi

# 2. QAT runs: bits × {baseline, winq} × seeds, round-robin over the GPUs
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$GPUS" -ge 1 ] || GPUS=1
IFS=';' read -r -a variants <<<"$VARIANTS"
names=()
declare -A flags
for v in "${variants[@]}"; do names+=("${v%%=*}"); flags[${v%%=*}]="${v#*=}"; done
jobs=()
for s in $SEEDS; do for b in $BITS; do for w in "${names[@]}"; do jobs+=("$b:$w:$s"); done; done; done
qat_run() {
  local g=$1 b=$2 w=$3 s=$4
  local run="$WORK/runs/qat-${b}bit-$w-seed$s"
  [ -f "$run/final/trainer.json" ] && return 0
  local save=0 winq
  read -r -a winq <<<"${flags[$w]}"

  # the spectra's runs keep checkpoints along the way
  [ "$b" = 2 ] && [ "$s" = "${SEEDS%% *}" ] && { [ "$w" = base ] || [ "$w" = winq ]; } && save=${HESSIAN_SAVE:-250}
  # a run stopped by the last call's time limit continues from its checkpoint
  local resume=()
  if [ -f "$run/latest" ]; then resume=(--resume "$run"); else rm -rf "$run"; fi
  local lr=(--lr "$LR")  # a variant may give its own
  [[ " ${winq[*]} " == *" --lr "* ]] && lr=()
  CUDA_VISIBLE_DEVICES=$g "$NIBBLE" qat "${resume[@]}" --checkpoint "$PRE" --bits "$b" "${winq[@]}" --data "$DATA" --steps "$STEPS" \
    --batch "$BATCH" --seq "$SEQ" "${lr[@]}" --log-every 25 --eval-every 50 --eval-batches 8 --seed "$s" \
    --save-every "$save" --device "$DEVICE" --out "$run" --quiet \
    --time-limit "$(awk -v s="$(left)" 'BEGIN { printf "%.3f", s / 60 }')" >>"$OUT/qat-gpu$g.log" 2>&1 ||
    echo "gpu $g: qat $b bit $w seed $s failed"
  # keep the checkpoint a resume needs and those the spectra read
  local latest keep c
  latest=$(cat "$run/latest" 2>/dev/null)
  for c in "$run"/step_*; do
    [ -d "$c" ] || continue
    keep=$([ "$(basename "$c")" = "$latest" ] && echo 1)
    for st in $HESSIAN_AT; do [ "$(basename "$c")" = "$(printf 'step_%06d' "$st")" ] && keep=1; done
    [ -n "$keep" ] || rm -rf "$c"
  done
}
worker() {
  local g=$1 i=0
  for job in "${jobs[@]}"; do
    if [ $(( i % GPUS )) -eq "$g" ] && [ "$(left)" -gt 30 ]; then  # runs stop with a checkpoint in time
      IFS=: read -r b w s <<<"$job"
      qat_run "$g" "$b" "$w" "$s"
    fi
    i=$(( i + 1 ))
  done
}
if [ -f "$PRE/final/trainer.json" ]; then
  for ((g = 0; g < GPUS; ++g)); do worker "$g" & done
  wait
fi

# 3. Hessian spectra of the 2-bit runs of the first seed: at the start (the pretrained model at
#    the quantized point), along QAT and at the end; two at a time
s1=${SEEDS%% *}
spectra=("start:$PRE/final:--bits 2")
for w in base winq; do
  for st in $HESSIAN_AT; do spectra+=("$w-step$st:$WORK/runs/qat-2bit-$w-seed$s1/$(printf 'step_%06d' "$st"):"); done
  spectra+=("$w-final:$WORK/runs/qat-2bit-$w-seed$s1/final:")
done
n=0
[ "${SPECTRA:-1}" = 1 ] || spectra=()
for sp in "${spectra[@]}"; do
  IFS=: read -r name ck extra <<<"$sp"
  dest="$WORK/hessian/$name"
  [ -f "$dest/results.json" ] && continue
  [ -d "$ck" ] || continue
  [ "$(left)" -gt 120 ] || break
  # the call's time limit stops a spectrum that would overrun it (it is redone by the next call)
  CUDA_VISIBLE_DEVICES=$(( n % GPUS )) timeout "$(( $(left) - 10 ))" "$NIBBLE" hessian --checkpoint "$ck" $extra --data "$DATA" ${HESSIAN_FLAGS:---top 2 --power-iters 20 --probes 3 --lanczos-steps 20} --density --device "$DEVICE" --out "$dest" >"$OUT/hessian-$name.log" 2>&1 &
  n=$(( n + 1 ))
  [ $(( n % 2 )) -eq 0 ] && wait
done
wait

# 4. reports: each seed and bit width, WinQ against its baseline
for s in $SEEDS; do for b in $BITS; do
  base="$WORK/runs/qat-${b}bit-base-seed$s" runs=()
  for w in "${names[@]}"; do
    [ -f "$WORK/runs/qat-${b}bit-$w-seed$s/final/trainer.json" ] && runs+=("$WORK/runs/qat-${b}bit-$w-seed$s")
  done
  [ -f "$base/final/trainer.json" ] && [ "${#runs[@]}" -ge 2 ] || continue
  "$NIBBLE" report "${runs[@]}" --baseline "$base" --out "$WORK/reports/${b}bit-seed$s" >/dev/null
done; done

# back to this machine
files=(pretrain/config.json pretrain/metrics.jsonl)
for r in "$WORK"/runs/*; do
  [ -d "$r" ] || continue
  n=$(basename "$r")
  for f in config.json metrics.jsonl loss.svg; do [ -f "$r/$f" ] && files+=("runs/$n/$f"); done
  echo "$n: $([ -f "$r/final/trainer.json" ] && echo finished || echo "not finished")"
done
for d in hessian reports; do [ -d "$WORK/$d" ] && files+=("$d"); done
tar czf "$OUT/qat.tgz" -C "$WORK" "${files[@]}" 2>/dev/null
(cd "$OUT" && tar czf logs.tgz *.log && rm -f *.log)
for r in "$WORK"/reports/*/report.md; do [ -f "$r" ] && { echo "$r"; sed -n '/^| run/,/^$/p' "$r"; }; done
for h in "$WORK"/hessian/*/results.json; do
  [ -f "$h" ] && echo "$(basename "$(dirname "$h")"): $(tr -d '\n ' <"$h" | grep -o '"top_eigenvalues":\[[^]]*\]\|"negative_mass":[^,}]*' | tr '\n' ' ')"
done
echo "call: $(( $(date +%s) - T0 )) s"
exit 0
