# tessera-job.sh — shell functions shared by tessera.sbatch and tessera-disagg.sbatch (sourced,
# not run). They start the coordinator on the batch host, publish its endpoints in the job's
# working directory (the API's for clients, the Worker listener's for the nodes), launch node
# pools as job steps, and stop everything on scancel / time limit.
#
# Settings (environment; the sbatch scripts document them):
#   TESSERA_BIN_DIR  TESSERA_MODEL  TESSERA_PORT  TESSERA_THREADS  TESSERA_LAUNCHER  TESSERA_MPI
#   TESSERA_ENDPOINT_FILE  TESSERA_WORKER_ENDPOINT_FILE  TESSERA_WORKER_LISTEN
#   TESSERA_ADVERTISE_HOST  TESSERA_BOOTSTRAP  TESSERA_GRACE_S
#   TESSERA_PIN  TESSERA_DEVICES  TESSERA_ALLOW_CROSS_HOST_TP  TESSERA_NODE_ARGS
#   TESSERA_COORDINATOR_ARGS

ts_log() { echo "tessera-job[$SLURM_JOB_ID]: $*"; }
ts_die() { echo "tessera-job[${SLURM_JOB_ID:-?}]: error: $1" >&2; exit "${2:-1}"; }

TS_PIDS=()      # background children: coordinator first, then one launcher per pool
TS_NAMES=()
TS_STOPPING=0

# Binaries, model and defaults; checks what can be checked before anything starts.
ts_setup() {
    : "${SLURM_JOB_ID:?not inside a Slurm job: submit this script with sbatch}"
    if [ -z "${TESSERA_BIN_DIR:-}" ]; then
        local c
        c=$(command -v tessera-coordinator) || ts_die "tessera-coordinator not on PATH: set TESSERA_BIN_DIR to the directory holding tessera, tessera-coordinator and tessera-node" 2
        TESSERA_BIN_DIR=$(dirname "$c")
    fi
    for b in tessera tessera-coordinator tessera-node; do
        [ -x "$TESSERA_BIN_DIR/$b" ] || ts_die "$TESSERA_BIN_DIR/$b is missing: set TESSERA_BIN_DIR to a Tessera build's bin directory" 2
    done
    TS_MODEL_ARGS=()
    if [ -n "${TESSERA_MODEL:-}" ]; then
        [ -r "$TESSERA_MODEL" ] || ts_die "TESSERA_MODEL=$TESSERA_MODEL is not a readable file" 2
        TS_MODEL_ARGS=(-m "$TESSERA_MODEL")
    fi
    TESSERA_PORT=${TESSERA_PORT:-50051}
    TESSERA_THREADS=${TESSERA_THREADS:-${SLURM_CPUS_PER_TASK:-0}}
    TESSERA_GRACE_S=${TESSERA_GRACE_S:-20}
    TESSERA_ENDPOINT_FILE=${TESSERA_ENDPOINT_FILE:-$PWD/tessera-$SLURM_JOB_ID.endpoint}
    TESSERA_WORKER_ENDPOINT_FILE=${TESSERA_WORKER_ENDPOINT_FILE:-$PWD/tessera-$SLURM_JOB_ID.worker}
    TESSERA_ADVERTISE_HOST=${TESSERA_ADVERTISE_HOST:-${SLURMD_NODENAME:-$(hostname -s)}}
    export TESSERA_BIN_DIR TESSERA_PIN # read by tessera-bind.sh in every task
    TESSERA_PIN=${TESSERA_PIN:-0}
    TS_LIB_DIR=${lib_dir:-$(dirname "${BASH_SOURCE[0]}")}
    TS_RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tessera-job-$SLURM_JOB_ID.XXXXXX")
    ts_make_secret
    ts_pick_launcher
    trap 'ts_on_signal TERM' TERM
    trap 'ts_on_signal INT' INT
    trap 'ts_cleanup' EXIT
}

# A fresh cluster secret (256 random bits) in TS_RUN_DIR (mode 0700 from mktemp), mode 0600: the
# coordinator reads the file; the pools get it in their environment (srun passes the job's
# environment to its tasks; mpirun gets -x), never on a command line.
ts_make_secret() {
    TS_SECRET_FILE="$TS_RUN_DIR/cluster.secret"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$TS_SECRET_FILE" &&
        echo >> "$TS_SECRET_FILE") || ts_die "cannot write the cluster secret to $TS_SECRET_FILE"
    [ "$(wc -c < "$TS_SECRET_FILE")" -eq 65 ] || ts_die "cannot read 32 random bytes from /dev/urandom"
    TESSERA_CLUSTER_SECRET=$(cat "$TS_SECRET_FILE")
    export TESSERA_CLUSTER_SECRET
}

# srun with the MPI plugin Open MPI works with (pmix, else pmi2), or mpirun inside the allocation.
ts_pick_launcher() {
    TESSERA_LAUNCHER=${TESSERA_LAUNCHER:-auto}
    if [ "$TESSERA_LAUNCHER" = auto ] || [ "$TESSERA_LAUNCHER" = srun ]; then
        local plugins
        plugins=$(srun --mpi=list 2>&1 || true)
        if [ -z "${TESSERA_MPI:-}" ]; then
            if echo "$plugins" | grep -qw pmix; then TESSERA_MPI=pmix
            elif echo "$plugins" | grep -qw pmi2; then TESSERA_MPI=pmi2
            fi
        fi
        if [ -n "${TESSERA_MPI:-}" ]; then
            TESSERA_LAUNCHER=srun
        elif [ "$TESSERA_LAUNCHER" = srun ]; then
            ts_die "srun offers neither pmix nor pmi2 (srun --mpi=list: $plugins): set TESSERA_LAUNCHER=mpirun" 2
        else
            TESSERA_LAUNCHER=mpirun
        fi
    fi
    case "$TESSERA_LAUNCHER" in
        srun) ts_log "launcher: srun --mpi=$TESSERA_MPI" ;;
        mpirun) command -v mpirun >/dev/null || ts_die "TESSERA_LAUNCHER=mpirun but mpirun is not on PATH" 2
                ts_log "launcher: mpirun inside the allocation" ;;
        *) ts_die "TESSERA_LAUNCHER must be auto, srun or mpirun, not '$TESSERA_LAUNCHER'" 2 ;;
    esac
}

# Refuses impossible plans before anything starts (the message says what to change).
ts_check_plan() {
    TS_PLAN=$1
    TS_TOPO_ARGS=(--devices "${TESSERA_DEVICES:-auto}")
    [ "${TESSERA_ALLOW_CROSS_HOST_TP:-0}" = 1 ] && TS_TOPO_ARGS+=(--allow-cross-host-tp)
    "$TESSERA_BIN_DIR/tessera" topology --plan "$1" "${TS_TOPO_ARGS[@]}" "${TS_MODEL_ARGS[@]}" ||
        ts_die "the requested plan '$1' does not fit this job (see the line above)" 2
    # The node settings too (the same for every pool), before the coordinator starts.
    # shellcheck disable=SC2086 # TESSERA_NODE_ARGS is split into words on purpose
    "$TESSERA_BIN_DIR/tessera" topology --plan "$1" "${TS_TOPO_ARGS[@]}" --pool 0 --node-command \
        --coordinator-file "$TESSERA_ENDPOINT_FILE" ${TESSERA_NODE_ARGS:-} > /dev/null ||
        ts_die "TESSERA_NODE_ARGS='${TESSERA_NODE_ARGS:-}' refused (see the line above)" 2
}

ts_spawn() { # name, command...
    local name=$1
    shift
    "$@" &
    TS_PIDS+=($!)
    TS_NAMES+=("$name")
}

# The hosts of the whole job (every component of a heterogeneous one), one per line.
ts_job_hosts() {
    local v
    for v in "${!SLURM_JOB_NODELIST@}"; do scontrol show hostnames "${!v}"; done | sort -u
}

# Writes a line to a file atomically (rename), or dies.
ts_publish() { # file, line
    { echo "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"; } || ts_die "cannot write $1"
}

# The coordinator on this (the first) host. Its API endpoint, with a host the clients can reach,
# goes to TESSERA_ENDPOINT_FILE and to the job output; the Worker listener's, where the node
# groups attach, to TESSERA_WORKER_ENDPOINT_FILE. The Worker listener binds loopback when the
# job has one host, else every interface (TESSERA_WORKER_LISTEN overrides, e.g. the address of
# the cluster network).
ts_start_coordinator() {
    local own="$TS_RUN_DIR/coordinator.endpoint" own_worker="$TS_RUN_DIR/worker.endpoint"
    local worker_listen=${TESSERA_WORKER_LISTEN:-}
    if [ -z "$worker_listen" ]; then
        if [ "$(ts_job_hosts | wc -l)" -le 1 ]; then worker_listen=127.0.0.1:0
        else worker_listen=0.0.0.0:0
        fi
    fi
    # shellcheck disable=SC2086 # extra flags are split into words on purpose
    ts_spawn coordinator "$TESSERA_BIN_DIR/tessera-coordinator" --listen "0.0.0.0:$TESSERA_PORT" \
        --endpoint-file "$own" --worker-listen "$worker_listen" --worker-endpoint-file "$own_worker" \
        --cluster-secret-file "$TS_SECRET_FILE" \
        "${TS_MODEL_ARGS[@]}" ${TESSERA_COORDINATOR_ARGS:-}
    local i
    for ((i = 0; i < 600; i++)); do
        [ -s "$own" ] && break
        kill -0 "${TS_PIDS[0]}" 2>/dev/null || ts_die "tessera-coordinator exited before listening"
        sleep 0.1
    done
    [ -s "$own" ] || ts_die "tessera-coordinator did not listen within 60 s"
    local ep port whost
    ep=$(head -n1 "$own")
    port=${ep##*:}
    TS_ENDPOINT="$TESSERA_ADVERTISE_HOST:$port"
    ep=$(head -n1 "$own_worker")
    case "$worker_listen" in # the host the nodes dial: what it binds, or this host's name
        0.0.0.0:* | \[::\]:*) whost=$TESSERA_ADVERTISE_HOST ;;
        *) whost=${worker_listen%:*} ;;
    esac
    TS_WORKER_ENDPOINT="$whost:${ep##*:}"
    ts_publish "$TESSERA_WORKER_ENDPOINT_FILE" "$TS_WORKER_ENDPOINT"
    ts_publish "$TESSERA_ENDPOINT_FILE" "$TS_ENDPOINT"
    ts_log "coordinator endpoint $TS_ENDPOINT (written to $TESSERA_ENDPOINT_FILE); node groups attach on $TS_WORKER_ENDPOINT"
}

# One pool: name, role, groups, tp, index in the plan, [het group]. Each rank starts through
# tessera-bind.sh with the plan's bindings computed here once, so every task gets the device
# (and, with TESSERA_PIN=1, the cores) the plan gives its rank. The tessera-node command line is
# the one `tessera up` builds (`tessera topology --node-command`, topology/node_command.h): this
# script spells no node flag; TESSERA_NODE_ARGS are that command's node settings, checked there.
ts_start_pool() {
    local name=$1 role=$2 groups=$3 tp=$4 index=$5 het=${6:-}
    local n=$((groups * tp))
    # Ranks find the coordinator's Worker listener through its endpoint file (on a filesystem the
    # nodes share), or, with TESSERA_BOOTSTRAP=address, through the address on their command line.
    local where=(--coordinator-file "$TESSERA_WORKER_ENDPOINT_FILE")
    [ "${TESSERA_BOOTSTRAP:-file}" = address ] && where=(--coordinator "$TS_WORKER_ENDPOINT")
    local bindings
    bindings=$("$TESSERA_BIN_DIR/tessera" topology --plan "$TS_PLAN" "${TS_TOPO_ARGS[@]}" \
        --pool "$index" --bindings) ||
        ts_die "no bindings for pool $name (see above)"
    local argv_file="$TS_RUN_DIR/$name.argv" cmd
    # shellcheck disable=SC2086 # TESSERA_NODE_ARGS is split into words on purpose
    "$TESSERA_BIN_DIR/tessera" topology --plan "$TS_PLAN" "${TS_TOPO_ARGS[@]}" --pool "$index" \
        --node-command --node-bin "$TESSERA_BIN_DIR/tessera-node" "${where[@]}" --name "$name" \
        --threads "$TESSERA_THREADS" "${TS_MODEL_ARGS[@]}" ${TESSERA_NODE_ARGS:-} > "$argv_file" ||
        ts_die "no node command line for pool $name (TESSERA_NODE_ARGS='${TESSERA_NODE_ARGS:-}'; see above)" 2
    mapfile -d '' -t cmd < "$argv_file"
    local node=("$TS_LIB_DIR/tessera-bind.sh" "$bindings" "${cmd[@]}")
    ts_log "pool $name: $groups group(s) x TP $tp, role $role${het:+, component $het}"
    if [ "$TESSERA_LAUNCHER" = srun ]; then
        ts_spawn "$name" srun --mpi="$TESSERA_MPI" ${het:+--het-group=$het} --ntasks="$n" \
            --kill-on-bad-exit=1 --job-name="tessera-$name" "${node[@]}"
    else
        local hosts=()
        if [ -n "$het" ]; then
            local var="SLURM_JOB_NODELIST_HET_GROUP_$het"
            mapfile -t hosts < <(scontrol show hostnames "${!var}")
        fi
        ts_spawn "$name" mpirun -np "$n" -x TESSERA_CLUSTER_SECRET \
            ${het:+--host "$(IFS=,; echo "${hosts[*]}")"} "${node[@]}"
    fi
}

# Stops in order: the coordinator first (it stops admitting, lets running streams finish for
# its grace period and tells the nodes to shut down), then the pools; whatever is still there
# after TESSERA_GRACE_S gets SIGKILL.
ts_stop_all() {
    [ "$TS_STOPPING" = 1 ] && return
    TS_STOPPING=1
    local i
    for ((i = 0; i < ${#TS_PIDS[@]}; i++)); do
        kill -TERM "${TS_PIDS[$i]}" 2>/dev/null
        [ "$i" = 0 ] && ts_wait_pids "$TESSERA_GRACE_S" "${TS_PIDS[0]}"
    done
    ts_wait_pids "$TESSERA_GRACE_S" "${TS_PIDS[@]}" || {
        ts_log "still running after ${TESSERA_GRACE_S} s: killing"
        for i in "${TS_PIDS[@]}"; do kill -KILL "$i" 2>/dev/null; done
    }
}

ts_wait_pids() { # seconds, pids... ; 0 when all are gone
    local deadline=$((SECONDS + $1)) p alive
    shift
    while :; do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

ts_on_signal() {
    ts_log "SIG$1 received (scancel or time limit): stopping"
    ts_stop_all
    ts_log "stopped"
    exit 0
}

ts_cleanup() {
    ts_stop_all
    rm -f "$TESSERA_ENDPOINT_FILE" "$TESSERA_WORKER_ENDPOINT_FILE"
    [ -n "${TS_RUN_DIR:-}" ] && rm -rf "$TS_RUN_DIR"
}

# Serves until scancel/time limit (exit 0) or until a child ends on its own (exit 1: one part of
# the cluster is gone, so the job stops rather than serve half a cluster).
ts_serve() {
    local i
    while :; do
        wait -n "${TS_PIDS[@]}" 2>/dev/null
        [ "$TS_STOPPING" = 1 ] && return 0
        for ((i = 0; i < ${#TS_PIDS[@]}; i++)); do
            if ! kill -0 "${TS_PIDS[$i]}" 2>/dev/null; then
                wait "${TS_PIDS[$i]}"
                ts_log "${TS_NAMES[$i]} exited with status $? on its own: stopping the rest"
                ts_stop_all
                exit 1
            fi
        done
    done
}
