#!/bin/sh
# bench_disagg.sh — the disaggregation benchmark of docs/benchmarks.md (issue 5): streams decoding
# while ~1000-token prompts keep arriving, on one mixed group with 2 cores (prompt chunks of
# --prefill-chunk, then sized by --decode-slack ${DECODE_SLACK:-1}) versus one prefill group
# (core 0) + one decode group (core 1).
#
#   bench/bench_disagg.sh BIN_DIR MODEL [BENCH FLAGS...]
#
# Each configuration gets a fresh coordinator and fresh nodes (the decode node's debug log: per
# request, how long it waited for the KV); `taskset` pins the groups as `tessera up --cpus-per-group 1` would. The default
# workload: 8 client streams, 48 requests of 32 prompt tokens and 64 generated tokens, every 6th
# of them a 1000-token prompt generating 8 tokens.
set -eu
BIN=${1:?BIN_DIR}
MODEL=${2:?MODEL}
shift 2
WORKLOAD=${*:-"--concurrency 8 --requests 48 --prompt-tokens 32 --max-tokens 64 --long-prompt-every 6 --long-prompt-tokens 1000 --long-max-tokens 8"}
TMP=$(mktemp -d /tmp/bench-disagg.XXXXXX)
PIDS=""

stop() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
    PIDS=""
}
trap 'stop; rm -rf "$TMP"' EXIT INT TERM

start_coordinator() {
    rm -f "$TMP/ep" "$TMP/worker-ep"
    "$BIN/tessera-coordinator" -m "$MODEL" --listen 127.0.0.1:0 --endpoint-file "$TMP/ep" \
        --worker-listen 127.0.0.1:0 --worker-endpoint-file "$TMP/worker-ep" \
        --heartbeat-timeout-ms 60000 --log-level debug >"$TMP/coordinator-$1.log" 2>&1 &
    PIDS="$PIDS $!"
    while [ ! -s "$TMP/ep" ]; do sleep 0.1; done
}

wait_groups() {
    n=0
    while [ "$(grep -c 'attached from' "$TMP/coordinator-$1.log")" -lt "$2" ]; do
        sleep 0.2
        n=$((n + 1))
        [ $n -lt 600 ] || { echo "groups did not register" >&2; exit 1; }
    done
}

run() { # name
    echo "== $1: tessera bench --server EP $WORKLOAD"
    # shellcheck disable=SC2086
    "$BIN/tessera" bench --server "$(cat "$TMP/ep")" $WORKLOAD --json
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"

start_coordinator mixed
"$BIN/tessera-node" -m "$MODEL" --threads 2 --role mixed --coordinator-file "$TMP/worker-ep" \
    --name mixed-0 >"$TMP/node-mixed.log" 2>&1 &
PIDS="$PIDS $!"
wait_groups mixed 1
run "mixed, 1 group x 2 threads"
stop

# the same mixed group with prompt chunks sized from the step cost (--decode-slack, issue 19)
start_coordinator smooth
"$BIN/tessera-node" -m "$MODEL" --threads 2 --role mixed --coordinator-file "$TMP/worker-ep" \
    --name mixed-0 --decode-slack "${DECODE_SLACK:-1}" >"$TMP/node-smooth.log" 2>&1 &
PIDS="$PIDS $!"
wait_groups smooth 1
run "mixed, 1 group x 2 threads, --decode-slack ${DECODE_SLACK:-1}"
stop

start_coordinator disagg
taskset -c 0 "$BIN/tessera-node" -m "$MODEL" --threads 1 --role prefill \
    --coordinator-file "$TMP/worker-ep" --name prefill-0 >"$TMP/node-prefill.log" 2>&1 &
PIDS="$PIDS $!"
taskset -c 1 "$BIN/tessera-node" -m "$MODEL" --threads 1 --role decode \
    --coordinator-file "$TMP/worker-ep" --name decode-0 --log-level debug >"$TMP/node-decode.log" 2>&1 &
PIDS="$PIDS $!"
wait_groups disagg 2
run "disaggregated, prefill group on core 0 + decode group on core 1"
echo "KV transfer per request: the decode group's wait from its Submit (sent when the first"
echo "token reached the coordinator) until the KV was complete and installed, ms:"
sed -n 's/.*KV claimed ([0-9]* blocks, \([0-9]*\) prompt tokens) \([0-9.]*\) ms after.*/\1 \2/p' \
    "$TMP/node-decode.log" | sort -n | awk '
    { n[$1]++; s[$1] += $2; if ($2 > m[$1]) m[$1] = $2 }
    END { for (k in n) printf "  %5d-token prompts: %d transfers, mean %.2f ms, max %.2f ms\n", k, n[k], s[k] / n[k], m[k] }'
stop
