# Sourced by the device scripts (study-sweep.sh, qat-experiment.sh): builds the nibble CLI in
# $BUILD (Release, Ninja when present; configured once, then incremental) and, with
# GTEST_FILTER set, also the GPU tests, which it then runs and summarizes. Logs go to $OUT.
# Needs BUILD, OUT and T0 (the call's start, date +%s); exits on a failed configure or build.
device_build() {
  export PATH=/usr/local/cuda/bin:$PATH
  local gen="" targets="nibble_cli"
  command -v ninja >/dev/null && gen="-G Ninja"
  [ -n "${GTEST_FILTER:-}" ] && targets="nibble_cli nibble_gpu_tests"
  # configured once; again when the tests are wanted (a folder configured without them keeps
  # NIBBLE_TESTS=OFF in its cache)
  if [ -n "${GTEST_FILTER:-}" ] || { [ ! -f "$BUILD/build.ninja" ] && [ ! -f "$BUILD/Makefile" ]; }; then
    [ -f "$BUILD/CMakeCache.txt" ] && gen=""  # the generator is fixed at the first configure
    cmake -S . -B "$BUILD" $gen -DCMAKE_BUILD_TYPE=Release -DNIBBLE_BENCH=OFF -DNIBBLE_TESTS="$([ -n "${GTEST_FILTER:-}" ] && echo ON || echo OFF)" \
      >"$OUT/configure.log" 2>&1 || { tail -20 "$OUT/configure.log"; exit 1; }
  fi
  cmake --build "$BUILD" --target $targets -j"$(nproc)" >"$OUT/build.log" 2>&1 ||
    { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
  echo "build: $(( $(date +%s) - T0 )) s"
  if [ -n "${GTEST_FILTER:-}" ]; then
    "$BUILD/tests/nibble_gpu_tests" --gtest_filter="$GTEST_FILTER" >"$OUT/gpu-tests.log" 2>&1
    grep -E "^  |^\[       OK|^\[  PASSED|^\[  FAILED|^\[  SKIPPED|Failure|Expected|actual" "$OUT/gpu-tests.log" | head -40
  fi
}
