#!/usr/bin/env bash
# quickstart.sh — the main job on a fresh machine: install what is missing, build, start a local
# cluster on the bundled model (stories260K: a coordinator and one node group of 2
# tensor-parallel ranks under mpirun; context 512, the length it was trained on), stream a
# completion from it over gRPC, stop the cluster.
# Extra arguments go to `tessera generate --server` (e.g. -p "The little dog" -n 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${TESSERA_BUILD_DIR:-build} # the build tree (default build/)
echo "quickstart: building ($build/)" >&2
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
if [ $# -eq 0 ]; then set -- -p "Once upon a time" -n 200; fi

workdir=$(mktemp -d)
cluster_pid=
stop_cluster() {
  if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
    kill -TERM "$cluster_pid" && wait "$cluster_pid" || true
  fi
  rm -rf "$workdir"
}
trap stop_cluster EXIT

# Open MPI refuses to run as root unless told; a root quickstart on a fresh VM is the common case.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1 # 2 ranks on however few cores this machine has

"$build"/bin/tessera up --tp 2 --groups 1 --ctx 512 --port 0 --endpoint-file "$workdir/endpoint" \
  2>"$workdir/up.log" &
cluster_pid=$!
tail -n +1 -f "$workdir/up.log" --pid "$cluster_pid" | sed 's/^/[cluster] /' >&2 &
for _ in $(seq 1 600); do # `tessera up` logs "serving" once every group has registered
  grep -q "tessera up: serving" "$workdir/up.log" && break
  kill -0 "$cluster_pid" 2>/dev/null || { echo "quickstart: the cluster did not start" >&2; exit 1; }
  sleep 0.2
done
grep -q "tessera up: serving" "$workdir/up.log" ||
  { echo "quickstart: the cluster did not start in 120 s" >&2; exit 1; }
endpoint=$(cat "$workdir/endpoint")
echo "quickstart: cluster serving on $endpoint; streaming a completion" >&2
"$build"/bin/tessera generate --server "$endpoint" "$@"
echo >&2
