#!/bin/bash
# local_slurm.sh up|down DIR — a real Slurm on this machine for the tests (root, no systemd):
# munged on a private socket, slurmctld, and SLURM_TEST_NODES slurmd "nodes" n1..nN, each in its
# own UTS and mount namespace (own hostname, own spool/TmpFS for PMIx, own /dev/shm for Open
# MPI's shared memory), all on 127.0.0.1 with their own ports. Nothing outside DIR is touched.
# Partitions: all (default), prefill = n1, decode = n2..nN. Ports: SLURM_TEST_PORT (controller),
# then one per node above it. After `up`: export SLURM_CONF=DIR/slurm.conf.
# Follows the checked recipe in NOTES.md (cgroup-free plugins, bf_interval=1 so heterogeneous
# jobs start in about a second).
# Hosts on a network: with SLURM_TEST_NETNS=PREFIX and SLURM_TEST_ADDRS="A1 A2 ...", node ni runs
# in the existing network namespace PREFIX-ni with address Ai, and slurmctld in PREFIX-n1 at A1;
# Slurm's own traffic then crosses those namespaces' interfaces (clients: nsenter into one).
set -euo pipefail
cmd=$1 B=$2
NN=${SLURM_TEST_NODES:-2} PORT=${SLURM_TEST_PORT:-16817} CPUS=$(nproc)
export SLURM_CONF=$B/slurm.conf
read -r -a ADDRS <<< "${SLURM_TEST_ADDRS:-}"
addr() { if [ -n "${SLURM_TEST_NETNS:-}" ]; then echo "${ADDRS[$(($1 - 1))]}"; else echo 127.0.0.1; fi; }
# Runs a command in node i's network namespace (nsenter, not `ip netns exec`, which remounts /sys).
in_net() {
  local i=$1
  shift
  if [ -n "${SLURM_TEST_NETNS:-}" ]; then nsenter --net="/run/netns/$SLURM_TEST_NETNS-n$i" "$@"
  else "$@"; fi
}
up() {
  mkdir -p "$B"/{munge,log,run,ctld,nodelocal}; chmod 711 "$B/munge"
  mungekey -c -f -k "$B/munge/munge.key" >/dev/null; chmod 400 "$B/munge/munge.key"
  munged --force --socket="$B/munge/sock" --key-file="$B/munge/munge.key" \
    --pid-file="$B/run/munged.pid" --log-file="$B/log/munged.log" --seed-file="$B/munge/seed"
  cat > "$SLURM_CONF" <<CONF
ClusterName=tessera-test
SlurmctldHost=localhost($(addr 1))
SlurmctldPort=$PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$B/munge/sock
StateSaveLocation=$B/ctld
SlurmdSpoolDir=$B/nodelocal/spool
TmpFS=$B/nodelocal/tmp
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd-%n.log
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerParameters=bf_interval=1
KillWait=15
CONF
  for i in $(seq 1 "$NN"); do
    echo "NodeName=n$i NodeHostname=n$i NodeAddr=$(addr "$i") Port=$((PORT + i)) CPUs=$CPUS RealMemory=1000" >> "$SLURM_CONF"
    mkdir -p "$B/node-n$i/spool" "$B/node-n$i/tmp"; chmod 1777 "$B/node-n$i/tmp"
  done
  cat >> "$SLURM_CONF" <<CONF
PartitionName=all Nodes=n[1-$NN] Default=YES MaxTime=INFINITE State=UP
PartitionName=prefill Nodes=n1 MaxTime=INFINITE State=UP
PartitionName=decode Nodes=n[2-$NN] MaxTime=INFINITE State=UP
CONF
  in_net 1 setsid slurmctld -D -i >"$B/log/slurmctld.out" 2>&1 </dev/null & echo $! >"$B/run/ctld.bg"
  for i in $(seq 1 "$NN"); do
    in_net "$i" setsid unshare -u -m --propagation private sh -c "hostname n$i && \
      mount --bind '$B/node-n$i' '$B/nodelocal' && mount -t tmpfs -o size=1g tmpfs /dev/shm && \
      exec slurmd -D -N n$i" >"$B/log/slurmd-n$i.out" 2>&1 </dev/null & echo $! >"$B/run/slurmd-n$i.bg"
  done
  for _ in $(seq 150); do
    [ "$(in_net 1 sinfo -h -p all -t idle -o %D 2>/dev/null)" = "$NN" ] && return 0; sleep 0.2
  done
  echo "local Slurm not ready in 30 s" >&2; tail -n 20 "$B"/log/*.out >&2; return 1
}
down() {
  # Let Slurm end the jobs first (their scripts see SIGTERM), then stop the daemons, then end
  # whatever still carries this cluster's SLURM_CONF in its environment (stepd, srun, tasks of a
  # job the daemons could not reach): only this cluster's processes, found by that marker.
  if [ -f "$SLURM_CONF" ] && [ -f "$B/run/ctld.bg" ]; then
    in_net 1 scancel --user=root 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(in_net 1 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2
    done
  fi
  for f in "$B"/run/slurmd-n*.bg "$B/run/ctld.bg" "$B/run/munged.pid"; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  for sig in TERM TERM TERM KILL; do
    left=$(grep -lsF "SLURM_CONF=$SLURM_CONF" /proc/[0-9]*/environ 2>/dev/null |
           cut -d/ -f3 | grep -vx "$$" || true)
    [ -z "$left" ] && break
    # shellcheck disable=SC2086 # one pid per word
    kill -s $sig $left 2>/dev/null || true
    sleep 1
  done
}
"$cmd"
