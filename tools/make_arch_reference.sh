#!/usr/bin/env bash
# make_arch_reference.sh — llama.cpp's greedy output on synthetic models of each architecture
# feature Tessera implements (qwen2: biases + NEOX RoPE; llama: Llama 3.1 rope_freqs; linear
# RoPE scaling), written to tests/data/arch_reference.jsonl. The test test_arch_reference
# (tests/model.cmake) rebuilds the same files with `tessera model synth` (same seed: same
# bytes, checked by SHA-256) and compares Tessera's greedy text with these lines.
#
#   tools/make_arch_reference.sh BUILD_DIR     # BUILD_DIR has bin/tessera
#
# llama.cpp comes from bench/llama-cpp.sh (built once, cached). Rerun this script when the
# synthesizer's output changes (the test says so when the digests differ).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: tools/make_arch_reference.sh BUILD_DIR}
tessera=$build/bin/tessera
llama_bin=$(bench/llama-cpp.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=tests/data/arch_reference.jsonl
n_predict=32

# name | synth flags
cases=(
  "qwen2-tiny|--shape qwen2-tiny --type f32 --std 0.3 --seed 11"
  "llama-rope-freqs|--shape tiny --type f32 --std 0.3 --seed 12 --rope-freqs --ctx 256"
  "llama-rope-linear|--shape tiny --type f32 --std 0.3 --seed 13 --rope-linear 4"
  "qwen2-gqa|--shape qwen2-tiny --dim 128 --heads 8 --kv-heads 2 --ff 256 --layers 3 --type f32 --std 0.3 --seed 14"
)
prompts=("Once upon a time" "The little dog ran to the park and")

: > "$out.tmp"
for c in "${cases[@]}"; do
  name=${c%%|*}
  flags=${c#*|}
  # shellcheck disable=SC2086
  "$tessera" model synth $flags -o "$work/$name.gguf" >/dev/null
  digest=$(sha256sum "$work/$name.gguf" | cut -d' ' -f1)
  for p in "${prompts[@]}"; do
    # llama-simple prints the prompt and the continuation on stdout (greedy sampler)
    text=$("$llama_bin/llama-simple" -m "$work/$name.gguf" -n "$n_predict" "$p" 2>/dev/null)
    python3 - "$name" "$flags" "$digest" "$p" "$n_predict" "$text" >> "$out.tmp" <<'EOF'
import json, sys
name, flags, digest, prompt, n, text = sys.argv[1:7]
# llama-simple writes token bytes as they are; a lone byte of a multi-byte character is shown
# as U+FFFD, as Tessera's detokenizer (and Python's "replace") does.
text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
print(json.dumps({"model": name, "synth": flags, "sha256": digest, "prompt": prompt,
                  "n_predict": int(n), "greedy_text": text}))
EOF
  done
done
mv "$out.tmp" "$out"
echo "wrote $out ($(wc -l < "$out") cases)"
