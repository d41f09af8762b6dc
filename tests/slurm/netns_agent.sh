#!/bin/sh
# netns_agent.sh HOST COMMAND... — mpirun's launch agent (plm_rsh_agent) for the multi-host test:
# runs COMMAND in the network namespace "$TS_NETNS_PREFIX-HOST" instead of over ssh.
host=$1
shift
exec ip netns exec "$TS_NETNS_PREFIX-$host" sh -c "$*"
