#!/usr/bin/env bash
# setup.sh — installs the Debian packages Tessera builds, runs and tests with.
# As root it runs apt-get; otherwise it prints the exact command to run and stops (exit 1).
# The CUDA toolkit (/usr/local/cuda) is optional and never installed here.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config git
  # gRPC C core and protobuf-c
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
  # the coordinator's HTTP API and the durable state of its batches
  libmicrohttpd-dev libsqlite3-dev
  # MPI bootstrap and CPU collectives; CPU topology
  libopenmpi-dev openmpi-bin libhwloc-dev
  # Python client tests
  python3 python3-grpcio python3-protobuf protobuf-compiler
  # libFuzzer for the fuzz tests
  clang libclang-rt-14-dev
  # the local Slurm of the Slurm tests; network namespaces, unshare, pgrep
  slurm-wlm munge iproute2 util-linux procps
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "Tessera needs these Debian packages: ${missing[*]}" >&2
  echo "Install them as root with:" >&2
  echo "  sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}" >&2
sh -c "$cmd" >&2
