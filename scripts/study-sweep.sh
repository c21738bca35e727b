#!/usr/bin/env bash
# The recipe study (issue 5) in device calls: builds nibble, tokenizes the study corpus, spreads
# the RECIPES × SEEDS runs of `nibble sweep` over the machine's GPUs (one run per GPU at a time,
# every run one GPU), stops them at a step boundary with a checkpoint before the call's time is
# up, and brings back $OUT/study.tgz: every finished or started run's config.json, metrics.jsonl
# (and stats.jsonl, final/trainer.json) plus, once all runs are done, the sweep's results.md /
# results.json / plots, in the sweep's layout. scripts/study-collect.sh merges such tarballs (from
# several calls or sessions) into one sweep directory and writes its report on this machine.
#
# Run the same call again while the machine is warm and the sweep continues: finished runs are
# kept, stopped ones resume from their checkpoint (checkpoints never leave the device; only the
# latest one of each run is kept on disk). Each GPU works through its own fixed list of runs, so
# a repeated call resumes the same runs on the same GPUs.
#
#   device run, carry [".deps", ".corpus/english.txt.xz", ".corpus/code-c.txt.xz"]:
#     bash scripts/study-sweep.sh 124m 100000000 bf16,nvfp4,nvfp4-mean,ufp4 1,2
#   env: CALL_SECONDS (the device call's limit, default 560: a step that collects --stats-every or evaluates can run past the step boundary the time limit waits for), GPUS (default: all visible),
#        GTEST_FILTER (run these GPU tests first, building them), BATCH, SEQ, LR, EVAL_EVERY,
#        EVAL_BATCHES, SAVE_EVERY, STATS_EVERY (the runs' --stats-every), ANALYZE (recipes whose
#        finished runs `nibble analyze` studies on their GPU: checkpoint, formats, stats), DATA_FILES (default "english code-c": ../shared/corpus files
#        copied to .corpus/, the last 1% of each held out for validation).
# Data: both shared corpora, GPT-2 BPE, the last 1% of each file held out: 74.0M training and
# 0.75M validation tokens (45 validation batches of 16 × 1024 read 737K of them).
# Costs per run (H100, 16 × 1024 tokens a step, docs/performance.md): 124m 100M tokens ≈ 4 min
# in bf16, 7–10 min in 4-bit, metis ≈ 40 min; 60m ≈ 0.6× of that.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
MODEL=${1:?model}; TOKENS=${2:?tokens}; RECIPES=${3:?recipes}; SEEDS=${4:-1}
OUT=${OUT:-$PWD/study-out}
BUILD=${BUILD_DIR:-build-gpu}
SWEEP=${SWEEP_DIR:-/tmp/sweep-$MODEL-$TOKENS}
CALL_SECONDS=${CALL_SECONDS:-560}
mkdir -p "$OUT"

source scripts/device-build.sh
device_build

DATA=/tmp/study-data
if [ ! -f "$DATA/meta.json" ]; then
  inputs=""
  for f in ${DATA_FILES:-english code-c}; do
    [ -f ".corpus/$f.txt" ] || xz -dk ".corpus/$f.txt.xz" || exit 1
    inputs="$inputs .corpus/$f.txt"
  done
  "$BUILD/nibble" data --input $inputs --tokenizer gpt2 --val-fraction 0.01 --out "$DATA" | tail -2
fi

# Relative cost of a step (docs/performance.md, 124m on an H100): how runs are shared out.
cost() {
  case "$1" in
    bf16) echo 10 ;; nvfp4) echo 18 ;; ufp4) echo 20 ;; mxfp4) echo 21 ;;
    nvfp4-mean) echo 24 ;; ufp4-mean) echo 25 ;; metis) echo 100 ;; *) echo 20 ;;
  esac
}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$GPUS" -ge 1 ] || GPUS=1
declare -a load queue
for ((g = 0; g < GPUS; ++g)); do load[$g]=0; queue[$g]=""; done
# seed-major order (every recipe's first seed before any second seed), each run to the GPU with
# the least work so far
for s in ${SEEDS//,/ }; do
  for r in ${RECIPES//,/ }; do
    best=0
    for ((g = 1; g < GPUS; ++g)); do [ "${load[$g]}" -lt "${load[$best]}" ] && best=$g; done
    load[$best]=$(( ${load[$best]} + $(cost "$r") ))
    queue[$best]="${queue[$best]} $r:$s"
  done
done

common=(--model "$MODEL" --data "$DATA" --tokens "$TOKENS" --batch "${BATCH:-16}" --seq "${SEQ:-1024}"
        --lr "${LR:-6e-4}" --log-every 20 --eval-every "${EVAL_EVERY:-500}" --eval-batches "${EVAL_BATCHES:-45}"
        --save-every "${SAVE_EVERY:-2000}" --device "${DEVICE:-cuda}" --out "$SWEEP" --quiet)
[ -n "${STATS_EVERY:-}" ] && common+=(--stats-every "$STATS_EVERY")  # keep it the same in every call
MARGIN=${MARGIN:-45}  # the last step, the checkpoint and copying the logs back
# The analyses of a finished run (recipes in ANALYZE): its operands' statistics under every format
# and transform (analysis/), the formats and depth effect on its weights (formats/), and the
# heatmaps of its --stats-every log (stats/). Not resumable: each is redone if it did not finish.
analyze_run() {
  local g=$1 run=$2
  local ck="$run/final"
  [ -d "$ck" ] || return 0
  [ -f "$run/analysis/results.md" ] ||
    CUDA_VISIBLE_DEVICES=$g "$BUILD/nibble" analyze --checkpoint "$ck" --data "$DATA" --device "${DEVICE:-cuda}" --out "$run/analysis"
  [ -f "$run/formats/results.md" ] ||
    CUDA_VISIBLE_DEVICES=$g "$BUILD/nibble" analyze formats --checkpoint "$ck" --out "$run/formats"
  if [ -f "$run/stats.jsonl" ] && [ ! -f "$run/stats/results.md" ]; then
    "$BUILD/nibble" analyze stats "$run" --out "$run/stats"
  fi
}
worker() {
  local g=$1
  for job in ${queue[$g]}; do
    local left=$(( CALL_SECONDS - MARGIN - ($(date +%s) - T0) ))
    [ "$left" -gt 20 ] || return 0
    local r=${job%%:*} s=${job##*:}
    CUDA_VISIBLE_DEVICES=$g "$BUILD/nibble" sweep "${common[@]}" --recipes "$r" --seeds "$s" \
      --time-limit "$(awk -v s="$left" 'BEGIN { printf "%.3f", s / 60 }')" >>"$OUT/gpu$g.log" 2>&1 ||
      echo "gpu $g: ${job} failed (see gpu$g.log)"
    # an analysis takes a minute or two on 124m and cannot stop half-way: only with time to spare
    [ $(( CALL_SECONDS - MARGIN - ($(date +%s) - T0) )) -gt 150 ] || continue
    case ",${ANALYZE:-}," in
      *",$r,"*) analyze_run "$g" "$SWEEP/runs/$r-seed$s" >>"$OUT/analyze$g.log" 2>&1 || echo "gpu $g: analysis of $job failed" ;;
    esac
  done
}
for ((g = 0; g < GPUS; ++g)); do
  echo "gpu $g:${queue[$g]}"
  worker "$g" &
done
wait

# The whole sweep's report, written only when every run has finished (--stop-after 0 trains
# nothing); the one-run reports the workers' sweeps left are not it.
rm -f "$SWEEP"/results.* "$SWEEP"/*.svg
"$BUILD/nibble" sweep "${common[@]}" --recipes "$RECIPES" --seeds "$SEEDS" --stop-after 0 >>"$OUT/summary.log" 2>&1
# Back to this machine: the summary and each run's small files, in the sweep's own layout (a
# tarball: the device returns few files); checkpoints stay.
files=()
for f in "$SWEEP"/results.* "$SWEEP"/*.svg; do [ -f "$f" ] && files+=("${f#$SWEEP/}"); done
for r in "$SWEEP"/runs/*; do
  [ -d "$r" ] || continue
  n=$(basename "$r")
  for f in config.json metrics.jsonl stats.jsonl final/trainer.json; do
    [ -f "$r/$f" ] && files+=("runs/$n/$f")
  done
  for a in analysis formats stats; do [ -d "$r/$a" ] && files+=("runs/$n/$a"); done
  if [ -f "$r/final/trainer.json" ]; then
    state=finished
  else
    state="at $(tail -1 "$r/metrics.jsonl" 2>/dev/null | sed -E 's/.*"step":([0-9]+).*/step \1/')"
  fi
  # keep only the checkpoint a resume needs
  latest=$(cat "$r/latest" 2>/dev/null)
  for c in "$r"/step_*; do [ -d "$c" ] && [ "$(basename "$c")" != "$latest" ] && rm -rf "$c"; done
  echo "$n: $state"
done
[ ${#files[@]} -gt 0 ] && tar czf "$OUT/study.tgz" -C "$SWEEP" "${files[@]}"
(cd "$OUT" && tar czf logs.tgz *.log && rm -f *.log)
[ -f "$SWEEP/results.md" ] && sed -n '/^| recipe/,/^$/p' "$SWEEP/results.md"
echo "call: $(( $(date +%s) - T0 )) s"
exit 0
