#!/usr/bin/env bash
# real_models.sh — Tessera against llama.cpp on the real models, one run, same machine:
#   llama-bench (built from the PyPI sdist by bench/llama-cpp.sh) pp512 and tg64 with 2 threads,
#   and `tessera bench-engine` (a 512-token prompt, then 128 decode steps at batch 1) with 2
#   threads, REPS times each, interleaved so that a change in the machine's load hits both.
# Usage: bench/real_models.sh [BUILD_DIR] [OUT_DIR] [MODEL ...]
#   MODEL: names of scripts/fetch-models.py (default: smollm2-135m qwen2.5-coder-0.5b
#   qwen2.5-coder-1.5b). Raw results: OUT_DIR/real_models.jsonl; a markdown table on stdout
#   (best of the runs, and the ratio Tessera / llama.cpp), for docs/benchmarks.md.
# Run it on a quiet machine: both engines split work statically over 2 threads, so one busy core
# halves either.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-bench-results}
shift $(( $# > 2 ? 2 : $# )) || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b)
reps=${REPS:-3}
mkdir -p "$out"
tessera="$build/bin/tessera"
llama_bin=$(bench/llama-cpp.sh)
results="$out/real_models.jsonl"
: > "$results"
for name in "${models[@]}"; do
  model=$(python3 scripts/fetch-models.py --print-path "$name" | tail -1)
  for rep in $(seq "$reps"); do
    "$llama_bin/llama-bench" -m "$model" -t 2 -p 512 -n 64 -r 1 -o jsonl 2>/dev/null |
      python3 -c 'import json,sys
for line in sys.stdin:
    d = json.loads(line)
    kind = "prefill" if d["n_prompt"] else "decode"
    print(json.dumps({"engine": "llama.cpp", "model": sys.argv[1], "rep": int(sys.argv[2]),
                      kind + "_tokens_per_s": d["avg_ts"]}))' "$name" "$rep" >> "$results"
    "$tessera" bench-engine -m "$model" --threads 2 --json 2>/dev/null | tail -1 |
      python3 -c 'import json,sys
d = json.load(sys.stdin)
d.update(engine="tessera", model=sys.argv[1], rep=int(sys.argv[2]))
print(json.dumps(d))' "$name" "$rep" >> "$results"
  done
done
python3 - "$results" <<'EOF'
import collections, json, sys
best = collections.defaultdict(float)
for line in open(sys.argv[1]):
    d = json.loads(line)
    for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        if k in d:
            best[(d["model"], d["engine"], k)] = max(best[(d["model"], d["engine"], k)], d[k])
print("| model | prefill pp512 tessera / llama.cpp (tokens/s) | ratio | decode tessera / llama.cpp | ratio |")
print("| --- | --- | --- | --- | --- |")
for m in dict.fromkeys(k[0] for k in best):
    row = [m]
    for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        t, l = best[(m, "tessera", k)], best[(m, "llama.cpp", k)]
        row += ["%.1f / %.1f" % (t, l), "%.2fx" % (t / l) if l else "-"]
    print("| " + " | ".join(row) + " |")
EOF
