#!/usr/bin/env bash
# engine_benchmarks.sh — the engine figures of docs/benchmarks.md (issues 2 and 3), one run:
#   1. bench-engine on the 110M-shape synthetic model in f16, f32 and q8_0 with 2 threads
#      (prefill of a 512-token prompt, decode at batch 1, with the machine's FMA peak and read
#      bandwidth probed in the same run);
#   2. tensor parallelism on the same 2 cores: N = 1 with 2 threads versus N = 2 ranks with
#      1 thread each (mpirun), plus the time of one all-reduce of a hidden vector and of a
#      512-token activation.
# Usage: bench/engine_benchmarks.sh [BUILD_DIR] [OUT_DIR]   (one JSON object per line in OUT_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-bench-results}
mkdir -p "$out" "$out/models"
tessera="$build/bin/tessera"
for type in f16 f32 q8_0; do
  model="$out/models/110m-$type.gguf"
  [ -f "$model" ] || "$tessera" model synth --shape 110m --type "$type" -o "$model" >&2
  "$tessera" bench-engine -m "$model" --threads 2 --json | tee -a "$out/engine.jsonl"
done
# The MPI settings below are for a root CI machine and oversubscribed cores; drop them elsewhere.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
model="$out/models/110m-f16.gguf"
for rep in 1 2 3; do
  "$tessera" bench-engine -m "$model" --threads 2 --json | tee -a "$out/tp.jsonl"
  mpirun --oversubscribe --bind-to none -np 2 "$tessera" bench-engine -m "$model" --threads 1 \
         --json | tee -a "$out/tp.jsonl"
done
