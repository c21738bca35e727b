#!/usr/bin/env bash
# The README's main job (for now): set up, build, then quantize an LLM-like activation
# matrix with every format and transform and compare the reconstruction error.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
N=${NIBBLE:-./build/nibble}
DIR=${DEMO_DIR:-demo-out}
mkdir -p "$DIR"
$N synth --dist activations --rows 4096 --cols 4096 --seed 1 --output "$DIR/x.npy"
echo
echo "Quantizing $DIR/x.npy [4096 x 4096]: a per-channel mean bias, outlier channels, Laplace noise."
echo "Reconstruction error of Y against X (higher SNR is better; negative shrinkage = magnitudes shrink):"
q() { $N quant --input "$DIR/x.npy" --output "$DIR/y.npy" --brief "$@"; }
q --format nvfp4
q --format nvfp4 --center
q --format nvfp4 --rht 16 --seed 1
q --format mxfp4
q --format mxfp4 --scale-rule rceil
q --format mxfp4 --center
q --format int4
q --format int4 --rht 16 --seed 1
q --format int4 --rht 16 --seed 1 --center
q --format nvfp4 --spectral-rank 32
echo
echo "Full statistics of one run (nvfp4 with mean-bias removal), packed output in $DIR/:"
$N quant --input "$DIR/x.npy" --format nvfp4 --center --output "$DIR/y.npy" \
  --packed "$DIR/y.safetensors" --stats-json "$DIR/stats.json"
