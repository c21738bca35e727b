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
#   several sweeps in one call, their runs shared out over the GPUs together (each sweep's
#   results come back as study-MODEL-TOKENS.tgz):
#     bash scripts/study-sweep.sh 124m:100000000:nvfp4-mean,ufp4:2 60m:50000000:bf16,nvfp4:1,2
#   env: CALL_SECONDS (the device call's limit, default 560: a step that collects --stats-every or evaluates can run past the step boundary the time limit waits for),
#        MARGIN (seconds kept back at the end of a call for the last step, the checkpoint and the copy back; default 45), GPUS (default: all visible),
#        GTEST_FILTER (run these GPU tests first, building them), STATS_PROBE and STEP_PROBE (see below), BATCH, SEQ, LR, EVAL_EVERY,
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
# One sweep as MODEL TOKENS RECIPES [SEEDS], or several as MODEL:TOKENS:RECIPES[:SEEDS] each.
declare -a S_MODEL S_TOKENS S_RECIPES S_SEEDS S_DIR
if [ $# -ge 1 ] && [[ "$1" == *:* ]]; then
  for spec in "$@"; do
    IFS=: read -r m t r sd <<<"$spec"
    [ -n "$m" ] && [ -n "$t" ] && [ -n "$r" ] || { echo "bad sweep spec '$spec' (MODEL:TOKENS:RECIPES[:SEEDS])" >&2; exit 2; }
    S_MODEL+=("$m"); S_TOKENS+=("$t"); S_RECIPES+=("$r"); S_SEEDS+=("${sd:-1}")
  done
else
  S_MODEL=("${1:?model}"); S_TOKENS=("${2:?tokens}"); S_RECIPES=("${3:?recipes}"); S_SEEDS=("${4:-1}")
fi
NS=${#S_MODEL[@]}
# a sweep's name: its model (a preset, or a JSON file's base name) and tokens
sweep_name() { echo "$(basename "${S_MODEL[$1]}" .json)-${S_TOKENS[$1]}"; }
for ((i = 0; i < NS; ++i)); do S_DIR[$i]=/tmp/sweep-$(sweep_name "$i"); done
[ "$NS" -eq 1 ] && [ -n "${SWEEP_DIR:-}" ] && S_DIR[0]=$SWEEP_DIR
OUT=${OUT:-$PWD/study-out}
BUILD=${BUILD_DIR:-build-gpu}
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

# STATS_PROBE=MODEL[:RECIPE]: before the sweep, two steps of MODEL on GPU 0 collecting --stats-every
# at both, then `analyze stats`'s cost table (where a collection's seconds go: device and copies,
# host statistics). Its files stay on the device.
if [ -n "${STATS_PROBE:-}" ]; then
  IFS=: read -r pm pr <<<"$STATS_PROBE"
  rm -rf /tmp/stats-probe
  CUDA_VISIBLE_DEVICES=0 "$BUILD/nibble" train --model "$pm" --recipe "${pr:-nvfp4}" --data "$DATA" --steps 2 \
    --batch "${BATCH:-16}" --seq "${SEQ:-1024}" --stats-every 1 --eval-every 0 --device "${DEVICE:-cuda}" \
    --out /tmp/stats-probe --quiet >"$OUT/stats-probe.log" 2>&1 &&
    "$BUILD/nibble" analyze stats /tmp/stats-probe --out /tmp/stats-probe/stats >>"$OUT/stats-probe.log" 2>&1 ||
    { echo "stats probe failed:"; tail -5 "$OUT/stats-probe.log"; }
  # (the CPU engine logs no seconds: no table there)
  sed -n '/^## Cost of each collection/,/^## X per layer/p' /tmp/stats-probe/stats/results.md 2>/dev/null | grep '^|'
  echo "stats probe done: $(( $(date +%s) - T0 )) s"
fi

# STEP_PROBE=MODELS:RECIPES (lists with commas): before the sweep, `nibble bench` times a few
# training steps of each recipe on GPU 0, one after another on the same device: the step-time
# ratios (claim 2's cost of metis against centring) without mixing devices or sessions.
# PROBE_PROFILE=1 also times every op of two more steps (`bench --profile`); the per-op tables
# are in $OUT/step-probe.log.
if [ -n "${STEP_PROBE:-}" ]; then
  IFS=: read -r bm br <<<"$STEP_PROBE"
  CUDA_VISIBLE_DEVICES=0 "$BUILD/nibble" bench --device "${DEVICE:-cuda}" --only train --models "$bm" --recipes "$br" \
    --batch "${BATCH:-16}" --seq "${SEQ:-1024}" --steps "${PROBE_STEPS:-6}" ${PROBE_PROFILE:+--profile} >"$OUT/step-probe.log" 2>&1 ||
    echo "step probe failed: $(tail -3 "$OUT/step-probe.log")"
  sed -n '/^model/,$p' "$OUT/step-probe.log"
  echo "step probe done: $(( $(date +%s) - T0 )) s"
fi

# Relative cost of a run (docs/performance.md: a 124m step on an H100; 60m ≈ 0.6 of it), times
# its tokens: how runs are shared out.
cost() {
  local r=$1 model=$2 tokens=$3 c
  case "$r" in
    bf16) c=10 ;; nvfp4) c=18 ;; ufp4) c=20 ;; mxfp4) c=21 ;;
    nvfp4-mean) c=24 ;; ufp4-mean) c=25 ;; metis) c=100 ;; *) c=20 ;;
  esac
  awk -v c="$c" -v m="$model" -v t="$tokens" 'BEGIN { f = (m == "60m") ? 0.6 : 1; printf "%d", c * f * t / 1e7 + 1 }'
}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$GPUS" -ge 1 ] || GPUS=1
declare -a load queue
for ((g = 0; g < GPUS; ++g)); do load[$g]=0; queue[$g]=""; done
# sweep by sweep, seed-major within one (every recipe's first seed before any second seed), each
# run to the GPU with the least work so far; a job is SWEEP_INDEX:RECIPE:SEED
for ((i = 0; i < NS; ++i)); do
  for s in ${S_SEEDS[$i]//,/ }; do
    for r in ${S_RECIPES[$i]//,/ }; do
      best=0
      for ((g = 1; g < GPUS; ++g)); do [ "${load[$g]}" -lt "${load[$best]}" ] && best=$g; done
      load[$best]=$(( ${load[$best]} + $(cost "$r" "${S_MODEL[$i]}" "${S_TOKENS[$i]}") ))
      queue[$best]="${queue[$best]} $i:$r:$s"
    done
  done
done

# The options every run of sweep i shares (into the array `common`).
sweep_args() {
  local i=$1
  common=(--model "${S_MODEL[$i]}" --data "$DATA" --tokens "${S_TOKENS[$i]}" --batch "${BATCH:-16}" --seq "${SEQ:-1024}"
          --lr "${LR:-6e-4}" --log-every 20 --eval-every "${EVAL_EVERY:-500}" --eval-batches "${EVAL_BATCHES:-45}"
          --save-every "${SAVE_EVERY:-2000}" --device "${DEVICE:-cuda}" --out "${S_DIR[$i]}" --quiet)
  [ -n "${STATS_EVERY:-}" ] && common+=(--stats-every "$STATS_EVERY")  # keep it the same in every call
  return 0
}
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
# A run directory is named by the recipe's name: a preset's own, or a recipe file's "name" field
# (without one, Recipe::from_json's: BASE-custom, or custom).
run_name() {
  local r=$1 n b
  if [[ "$r" == */* || "$r" == *.json ]]; then
    n=$(sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$r" | head -1)
    b=$(sed -n 's/.*"base"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$r" | head -1)
    if [ -n "$n" ]; then echo "$n"; elif [ -n "$b" ]; then echo "$b-custom"; else echo custom; fi
  else
    echo "$r"
  fi
}
worker() {
  local g=$1 common
  for job in ${queue[$g]}; do
    local left=$(( CALL_SECONDS - MARGIN - ($(date +%s) - T0) ))
    [ "$left" -gt 20 ] || return 0
    local i=${job%%:*} rest=${job#*:}
    local r=${rest%%:*} s=${rest##*:}
    sweep_args "$i"
    CUDA_VISIBLE_DEVICES=$g "$BUILD/nibble" sweep "${common[@]}" --recipes "$r" --seeds "$s" \
      --time-limit "$(awk -v s="$left" 'BEGIN { printf "%.3f", s / 60 }')" >>"$OUT/gpu$g.log" 2>&1 ||
      echo "gpu $g: ${job} failed (see gpu$g.log)"
    # an analysis takes a minute or two on 124m and cannot stop half-way: only with time to spare
    [ $(( CALL_SECONDS - MARGIN - ($(date +%s) - T0) )) -gt 150 ] || continue
    case ",${ANALYZE:-}," in
      *",$r,"*) analyze_run "$g" "${S_DIR[$i]}/runs/$(run_name "$r")-seed$s" >>"$OUT/analyze$g.log" 2>&1 || echo "gpu $g: analysis of $job failed" ;;
    esac
  done
}
for ((g = 0; g < GPUS; ++g)); do
  echo "gpu $g:${queue[$g]}"
  worker "$g" &
done
wait

# Each sweep's report, written only when every run has finished (--stop-after 0 trains nothing);
# the one-run reports the workers' sweeps left are not it. Then back to this machine: the summary
# and each run's small files, in the sweep's own layout, as study.tgz (one sweep) or
# study-MODEL-TOKENS.tgz (several; the device returns few files); checkpoints stay.
for ((i = 0; i < NS; ++i)); do
  SWEEP=${S_DIR[$i]}
  mkdir -p "$SWEEP"
  sweep_args "$i"
  rm -f "$SWEEP"/results.* "$SWEEP"/*.svg
  "$BUILD/nibble" sweep "${common[@]}" --recipes "${S_RECIPES[$i]}" --seeds "${S_SEEDS[$i]}" --stop-after 0 >>"$OUT/summary.log" 2>&1
  files=()
  for f in "$SWEEP"/results.* "$SWEEP"/*.svg; do [ -f "$f" ] && files+=("${f#$SWEEP/}"); done
  echo "${S_MODEL[$i]}, ${S_TOKENS[$i]} tokens:"
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
    echo "  $n: $state"
  done
  tgz=study.tgz
  [ "$NS" -gt 1 ] && tgz=study-$(sweep_name "$i").tgz
  [ ${#files[@]} -gt 0 ] && tar czf "$OUT/$tgz" -C "$SWEEP" "${files[@]}"
  [ -f "$SWEEP/results.md" ] && sed -n '/^| recipe/,/^$/p' "$SWEEP/results.md"
done
(cd "$OUT" && tar czf logs.tgz *.log && rm -f *.log)
echo "call: $(( $(date +%s) - T0 )) s"
exit 0
