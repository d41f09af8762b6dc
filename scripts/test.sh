#!/usr/bin/env bash
# test.sh — the whole test suite, as CI runs it (.ci/run calls this script).
#   1. installs missing Debian packages (scripts/setup.sh),
#   2. release build with warnings as errors → every ctest test (unit, integration, fault, fuzz
#      corpus replay, slurm; gpu tests skip with a message where there is no GPU),
#   3. ASan + UBSan build → the unit and integration tests again,
#   4. the libFuzzer builds of the fuzzers (GGUF, tokenizer, safetensors, chat templates), each
#      run for a bounded time.
# Build trees: build-ci/, build-asan/, build-fuzz/. Exit code 0 only if everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)
start=$(date +%s)
status=0

step() { printf '\n==== %s\n' "$*"; }

step "release build (warnings are errors)"
cmake -S . -B build-ci -DCMAKE_BUILD_TYPE=Release -DTESSERA_WERROR=ON >/dev/null
cmake --build build-ci -j"$jobs"
step "tests (release)"
(cd build-ci && ctest --output-on-failure --timeout 600) || status=1

step "ASan + UBSan build"
# CUDA is compiled (and its tests listed) by the release build; sanitizers do not reach device
# code, so the sanitizer and fuzz builds leave it out and stay fast.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_SANITIZE=ON \
      -DTESSERA_WERROR=ON -DTESSERA_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs"
step "tests (ASan + UBSan: unit, integration)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -L 'unit|integration' --timeout 900) || status=1
unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS

if command -v clang >/dev/null; then
  step "libFuzzer build and bounded fuzzing"
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_FUZZ=ON \
        -DTESSERA_CUDA=OFF >/dev/null
  # every program of the tests labelled fuzz: the fuzzers and their corpus replays
  cmake --build build-fuzz -j"$jobs" --target fuzz_gguf fuzz_gguf_replay fuzz_tokenizer \
        fuzz_tokenizer_replay fuzz_safetensors fuzz_safetensors_replay fuzz_chat_template \
        fuzz_chat_template_replay fuzz_http_request fuzz_http_request_replay
  (cd build-fuzz && ctest --output-on-failure -L fuzz) || status=1
fi

printf '\n==== test.sh: %s in %d s\n' "$([ $status -eq 0 ] && echo PASSED || echo FAILED)" \
       $(( $(date +%s) - start ))
exit $status
