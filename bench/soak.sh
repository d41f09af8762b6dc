#!/usr/bin/env bash
# soak.sh — the soak under faults of tests/fault/test_soak.py, for longer than the test suite's
# 40 s: gRPC and HTTP traffic (6 clients, greedy and seeded requests, priorities -1..1) against a
# coordinator and three groups of the bundled model while a chaos loop SIGKILLs a random group
# every ~2.5 s and restarts it. Prints the soak's table (requests by kind, kills, failovers,
# completed, wrong, failed by status, lost, p50/p99 TTFT and ITL quiet against chaos, coordinator
# descriptors and memory before and after) for docs/benchmarks.md; exit 1 if any check failed.
# Usage: bench/soak.sh [--minutes N] [BUILD_DIR]   (default 5 minutes, build/; Debian's python3, which
#   has python3-grpcio)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5
if [ "${1:-}" = "--minutes" ]; then
  minutes=$2
  shift 2
fi
build=${1:-build}
pydir=$build/rpc/ts_proto/python
[ -d "$pydir/tessera" ] || { echo "soak.sh: no generated Python protos under $build/rpc (build first)" >&2; exit 2; }
seconds=$(python3 -c "print(int(float('$minutes') * 60))")
exec /usr/bin/python3 tests/fault/test_soak.py --bin-dir "$build/bin" --pydir "$pydir" \
     --seconds "$seconds" --quiet-seconds 30
