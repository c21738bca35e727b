#!/usr/bin/env bash
# The README's main job: set up and build, then train the tiny model on the embedded corpus
# with the default recipe (nvfp4) on the CPU — about five minutes on 2 cores. Extra
# arguments go to `nibble train` (e.g. bash scripts/run.sh --recipe ufp4-mean).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./build/nibble train "$@"
