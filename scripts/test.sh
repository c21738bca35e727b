#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds, and runs every CPU test. GPU tests are built when
# nvcc is present and show as skipped without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" "$@"
