#!/usr/bin/env bash
# llama-cpp.sh — builds llama.cpp, the reference and speed baseline, from the PyPI sdist of
# llama-cpp-python (pinned version and digest), once, into a cache outside the clone.
#
#   bench/llama-cpp.sh            # build if missing; print the bin directory
#   bench/llama-cpp.sh --check    # print the bin directory if built, exit 1 otherwise
#
# Cache: $TESSERA_CACHE (default ~/.cache/tessera)/llama.cpp-<version>/{src,build}; the tools
# (llama-simple, llama-cli, llama-bench, llama-perplexity, llama-server, llama-tokenize) are in
# build/bin. About 7 minutes on 2 cores. Built for this machine (-DGGML_NATIVE=ON) but without
# AMX: some VMs list AMX and fault on it (NOTES.md). Exit 3 when PyPI cannot be reached.
set -euo pipefail
VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache=${TESSERA_CACHE:-$HOME/.cache/tessera}/llama.cpp-$VERSION
bin=$cache/build/bin

if [ "${1:-}" = "--check" ]; then
  [ -x "$bin/llama-simple" ] && { echo "$bin"; exit 0; }
  exit 1
fi
if [ -x "$bin/llama-simple" ] && [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-perplexity" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
if [ ! -f "$cache/src/CMakeLists.txt" ]; then
  tmp=$(mktemp -d "$cache/.dl-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  if ! python3 -m pip download --quiet --no-deps --no-binary :all: \
         "llama-cpp-python==$VERSION" -d "$tmp" >&2; then
    echo "llama-cpp.sh: could not download llama-cpp-python==$VERSION from PyPI" >&2
    exit 3
  fi
  sdist=$(ls "$tmp"/llama_cpp_python-$VERSION.tar.gz)
  if [ -n "$SDIST_SHA256" ]; then
    echo "$SDIST_SHA256  $sdist" | sha256sum -c --quiet - >&2 ||
      { echo "llama-cpp.sh: $sdist: wrong SHA-256" >&2; exit 1; }
  fi
  tar -xzf "$sdist" -C "$tmp"
  rm -rf "$cache/src"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$cache/src"
fi

noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DGGML_OPENMP=ON >&2
cmake --build "$cache/build" -j"$(nproc)" --target llama-simple llama-cli llama-bench \
      llama-perplexity llama-server llama-tokenize >&2
echo "$bin"
