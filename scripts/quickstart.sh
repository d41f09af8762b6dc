#!/usr/bin/env bash
# quickstart.sh — the main job on a fresh machine: install what is missing, build, and stream a
# completion from the bundled model (stories260K) to the terminal.
# Extra arguments go to `tessera generate` (e.g. -p "The little dog" -n 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
if [ $# -eq 0 ]; then set -- -p "Once upon a time" -n 200; fi
exec build/bin/tessera generate "$@"
