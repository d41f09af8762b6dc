#!/usr/bin/env bash
# gpu-check.sh — everything the CUDA backend needs a GPU for, in one command (docs/cuda.md).
#   1. build with CUDA for this GPU's architecture (build-gpu/, or --build DIR); where the image
#      lacks MPI/gRPC, only the kernels and their tests (the rest is reported NOT RUN)
#   2. every gpu-labelled test (kernels vs the CPU reference, NCCL one rank, greedy parity, the
#      KV transfer's device checksum; the NCCL KV transfer itself when there are 2 GPUs);
#      a test that skips here is a failure: on a GPU nothing may skip
#   3. compute-sanitizer memcheck on the kernel test (when the toolkit has compute-sanitizer)
#   4. benchmarks: tessera-bench-cuda (kernels against the measured HBM bandwidth and the bf16
#      peak), bench-engine on the bundled model, and unless --quick bench-engine on a synthetic
#      Llama-3-8B-shaped bf16 model (16 GB file in $TMPDIR, 2048-token prefill, decode), and
#      bench/filler.py on the GPU (batch work beside interactive load; at most 3 minutes)
# Usage: scripts/gpu-check.sh [--quick] [--build DIR] [--peak-tflops N]
# Writes the logs and summary.txt to DIR/gpu-check/ (GPU_CHECK_OUT overrides). Exit code 0 only
# if the build, every test and the memcheck passed (benchmarks report, they do not fail).
set -uo pipefail
cd "$(dirname "$0")/.."
build=build-gpu quick=0 peak=989
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --build) build=$2; shift ;;
    --peak-tflops) peak=$2; shift ;;
    *) echo "usage: $0 [--quick] [--build DIR] [--peak-tflops N]" >&2; exit 2 ;;
  esac
  shift
done
out=${GPU_CHECK_OUT:-$build/gpu-check}
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
status=0
note() { printf '%s\n' "$*" | tee -a "$summary"; }
step() { printf '\n==== %s\n' "$*"; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  note "no GPU: nvidia-smi finds none; nothing to check here"
  exit 77
fi
nvidia-smi -L | tee -a "$summary"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
export PATH=/usr/local/cuda/bin:$PATH

step "build (CUDA architecture $cap)"
# The whole project needs MPI, gRPC and protobuf-c; a GPU image without them still builds the
# kernels and their tests (TESSERA_KERNELS_ONLY), and the checks that need the rest are reported
# as not run.
full=1
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_WERROR=ON -DTESSERA_CUDA=ON \
       -DTESSERA_KERNELS_ONLY=OFF -DCMAKE_CUDA_ARCHITECTURES="$cap" >"$out/configure.log" 2>&1; then
  full=0
  note "full configure failed (missing MPI/gRPC/NCCL?): kernels only; see $out/configure.log"
  grep -m 5 "Could NOT\|not found\|Error" "$out/configure.log"
  rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles" # a fresh configure, logs kept
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_WERROR=ON -DTESSERA_CUDA=ON \
    -DTESSERA_KERNELS_ONLY=ON -DCMAKE_CUDA_ARCHITECTURES="$cap" >>"$out/configure.log" 2>&1 ||
    { note "configure: FAILED (see $out/configure.log)"; tail -30 "$out/configure.log"; exit 1; }
  status=1 # the NCCL test, greedy parity and bench-engine cannot run
fi
if cmake --build "$build" -j"$(nproc)" >"$out/build.log" 2>&1; then
  note "build: ok ($([ $full -eq 1 ] && echo full || echo kernels only))"
else
  note "build: FAILED (see $out/build.log)"
  grep -m 20 "error" "$out/build.log"
  exit 1
fi

step "gpu tests"
(cd "$build" && ctest -L gpu --output-on-failure --timeout 900) >"$out/ctest-gpu.log" 2>&1
rc=$?
tail -15 "$out/ctest-gpu.log"
[ $full -eq 1 ] || note "NOT RUN (kernels-only build): test_comm_nccl, test_kv_checksum_cuda, test_kv_transfer_nccl, cuda_greedy_matches_reference"
# The NCCL KV transfer needs two GPUs (one 2-rank communicator per link; NCCL puts no two ranks
# on one GPU); its device checksum (test_kv_checksum_cuda) runs on one.
grep -q "test_kv_transfer_nccl .*Skipped" "$out/ctest-gpu.log" && note "NOT RUN (needs 2 GPUs): test_kv_transfer_nccl"
if [ $rc -ne 0 ]; then
  note "gpu tests: FAILED (see $out/ctest-gpu.log)"; status=1
elif grep "Skipped\|Not Run" "$out/ctest-gpu.log" | grep -qv "test_kv_transfer_nccl "; then
  note "gpu tests: some SKIPPED on a GPU machine (see $out/ctest-gpu.log)"; status=1
else
  note "gpu tests: all passed"
fi

step "compute-sanitizer memcheck (kernel test)"
sanitizer=$(command -v compute-sanitizer || true)
if [ -z "$sanitizer" ]; then
  note "memcheck: NOT RUN (compute-sanitizer not installed)"; status=1
elif "$sanitizer" --tool memcheck --error-exitcode 1 --leak-check full \
       "$build/tests/test_kernels_cuda" >"$out/memcheck.log" 2>&1; then
  note "memcheck: clean ($(grep -c '^ok ' "$out/memcheck.log") tests)"
else
  note "memcheck: ERRORS (see $out/memcheck.log)"; status=1
  grep -m 20 "=========" "$out/memcheck.log"
fi

step "benchmarks"
"$build/bin/tessera-bench-cuda" --peak-tflops "$peak" 2>&1 | tee "$out/bench-cuda.log" | tee -a "$summary"
if [ $full -eq 0 ]; then
  note "NOT RUN (kernels-only build): bench-engine"
  quick=1
else
  if "$build/bin/tessera" bench-engine --device cuda --no-probe --json \
       >"$out/bench-engine-stories.json" 2>&1; then
    note "bench-engine stories260K: $(cat "$out/bench-engine-stories.json")"
  else
    note "bench-engine stories260K: FAILED: $(tail -1 "$out/bench-engine-stories.json")"
  fi
fi
if [ $quick -eq 0 ]; then
  model=${TMPDIR:-/tmp}/llama3-8b-synth-bf16.gguf
  [ -f "$model" ] || "$build/bin/tessera" model synth --shape llama3-8b --type bf16 -o "$model" \
    >"$out/synth.log" 2>&1 || note "model synth: FAILED (see $out/synth.log)"
  if [ -f "$model" ]; then
    if "$build/bin/tessera" bench-engine -m "$model" --device cuda --no-probe --ctx 4096 \
         --kv-memory 8G --batch-tokens 2048 --prompt-tokens 2048 --decode-tokens 64 --json \
         >"$out/bench-engine-llama3-8b.json" 2>&1; then
      note "bench-engine llama3-8b bf16: $(cat "$out/bench-engine-llama3-8b.json")"
    else
      note "bench-engine llama3-8b: FAILED: $(tail -1 "$out/bench-engine-llama3-8b.json")"
    fi
  fi
fi

if [ $full -eq 1 ] && [ $quick -eq 0 ]; then
  # batch work as filler where a step's fixed cost is large (docs/benchmarks.md, issue 16): the
  # 110M shape on the GPU, interactive load alone and beside a batch job
  if timeout 180 python3 bench/filler.py --build "$build" --up-flag=--device=cuda \
       --interactive-s 20 --batch-requests 3000 --saturated-requests 256 \
       >"$out/filler.txt" 2>"$out/filler.err"; then
    note "filler (bench/filler.py, GPU):"
    tee -a "$summary" <"$out/filler.txt"
  else
    note "filler: FAILED (see $out/filler.err): $(tail -1 "$out/filler.err")"
  fi
fi

step "summary ($summary)"
cat "$summary"
exit $status
