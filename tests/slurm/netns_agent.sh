#!/bin/sh
# netns_agent.sh HOST COMMAND... — mpirun's launch agent (plm_rsh_agent) for the multi-host test:
# runs COMMAND in the network namespace "$TS_NETNS_PREFIX-HOST" instead of over ssh, with the
# host's own TMPDIR under $TS_NETNS_TMPDIR (the "hosts" share /tmp and the hostname, and Open MPI's
# session directories of two daemons must not meet there).
host=$1
shift
export TMPDIR="$TS_NETNS_TMPDIR/$host"
mkdir -p "$TMPDIR" || exit 1
exec ip netns exec "$TS_NETNS_PREFIX-$host" sh -c "$*"
