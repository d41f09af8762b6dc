/*
 * node_command.h — the tessera-node command line of a placed group or pool, built in one place.
 *
 * Two launchers start node ranks: `tessera up` (one launch per group: the plan's group, with its
 * devices) and the Slurm job scripts (one srun/mpirun step per pool, through `tessera topology
 * --plan P --pool K --node-command`, which prints this module's argv). Both take the node's
 * settings through the same flag table (ts_node_settings_flags), so a setting reaches every node
 * the same way and the shell scripts spell no node flag.
 *
 * The command line, in this order:
 *   NODE_BIN (--coordinator HOST:PORT | --coordinator-file FILE) [--cluster-secret-file F]
 *   --name NAME --role ROLE --tp TP
 *   --threads N [-m MODEL] [--log-level L] [every engine flag given, as given]
 *   [--no-prefix-cache] [--device D [--device-per-rank]] [--kv-transport T] [--die-with-parent]
 * Engine flags are passed as text: the node checks them with the messages `tessera generate`
 * gives (a refused value stops the launch with the node's message).
 *
 * Names: a group launch is named "group-K" (mixed) or "prefill-K" / "decode-K", K the group's
 * index in its pool; a pool launch is named by `name` (default the role) and the node appends
 * "-gK" to each group of the pool.
 *
 * Threads: settings.threads > 0 is used as given; 0 gives a group launch the plan's cores per
 * rank (at least 1) and a pool launch 0 (the node then uses the cores its launcher gave it).
 *
 * Devices: in a GPU plan a group launch gets --device cuda:D (D = device_base + the plan's device
 * of its first rank) and, with TP > 1, --device-per-rank — which needs the group's devices to be
 * consecutive (ts_node_group_devices_consecutive); otherwise launch it rank by rank (rank >= 0
 * gives that rank alone its device, with the group's --tp: an MPMD launch of the group's ranks
 * still forms one group). A pool launch gets no --device: the per-rank launcher
 * (slurm/tessera-bind.sh) adds each rank's device from the plan's bindings. A CPU plan passes
 * settings.device as given (NULL: none).
 *
 * Errors: TS_E_INVALID naming the pool/group; TS_E_NOMEM when the argv overflows its storage.
 */
#ifndef TS_TOPOLOGY_NODE_COMMAND_H
#define TS_TOPOLOGY_NODE_COMMAND_H

#include "common/flags.h"
#include "topology/placement.h"

#include <stdbool.h>
#include <stddef.h>

/* Flags every node of a cluster gets the same, passed through as text. */
enum {
    TS_NODE_PASS_CTX,
    TS_NODE_PASS_KV_MEMORY,
    TS_NODE_PASS_ISA,
    TS_NODE_PASS_DEVICE_MEMORY,
    TS_NODE_PASS_KV_TYPE,
    TS_NODE_PASS_BLOCK_SIZE,
    TS_NODE_PASS_BATCH_TOKENS,
    TS_NODE_PASS_BATCH_SEQS,
    TS_NODE_PASS_PREFILL_CHUNK,
    TS_NODE_PASS_COMM_TIMEOUT_MS,
    TS_NODE_PASS_CONNECT_TIMEOUT_MS,
    TS_NODE_PASS_DRAIN_MS,
    TS_NODE_PASS_KV_HOST_MEMORY,
    TS_NODE_PASS_KV_DISK,
    TS_NODE_PASS_KV_DISK_SIZE,
    TS_NODE_PASS_FILLER_SLACK,
    TS_NODE_PASS_DECODE_SLACK,
    TS_NODE_PASS_COUNT
};

/* How many flags ts_node_settings_flags adds. */
enum { TS_NODE_SETTINGS_FLAGS = TS_NODE_PASS_COUNT + 2 };

typedef struct ts_node_settings {
    const char *node_bin;            /* the tessera-node executable */
    const char *coordinator;         /* HOST:PORT, or NULL to use coordinator_file */
    const char *coordinator_file;    /* a file holding HOST:PORT (the node waits for it) */
    const char *cluster_secret_file; /* --cluster-secret-file (a path: never the secret), or
                                      * NULL (the node may take it from its environment) */
    const char *model;               /* NULL: the node's default (the bundled model) */
    const char *log_level;           /* NULL: the node's default */
    const char *name;                /* pool launches: the name (NULL: the role); group launches:
                                      * ignored */
    int threads;                     /* kernel threads per rank; 0: see the header comment */
    int device_base;                 /* GPU plans: added to the plan's device numbers */
    const char *device;              /* CPU plans: --device as given, or NULL */
    const char *kv_transport;        /* --kv-transport, or NULL */
    const char *pass[TS_NODE_PASS_COUNT]; /* as given on the command line, NULL where not */
    bool no_prefix_cache;
    bool die_with_parent; /* --die-with-parent: tessera up, whose mpiruns' ranks must go with
                           * their mpirun at once */
} ts_node_settings;

/* Writes the shared flags (the pass-through engine flags, --no-prefix-cache, --kv-transport)
 * into flags[0 .. TS_NODE_SETTINGS_FLAGS), pointing at `s`. Returns the count. */
int ts_node_settings_flags(ts_node_settings *s, ts_flag *flags);

enum { TS_NODE_ARGV_MAX = 64 };

typedef struct ts_node_argv {
    char *argv[TS_NODE_ARGV_MAX + 1]; /* NULL-terminated; strings point into `store` or at the
                                       * settings' strings */
    int argc;
    char store[512];
    size_t used;
} ts_node_argv;

/* The command line of a launch of pool `pool`: group < 0 launches all its ranks (Slurm), group
 * >= 0 that group of the pool (tessera up); rank >= 0 (with group >= 0) that rank of the group
 * alone. */
int ts_node_command(const ts_node_settings *s, const ts_plan *plan, int pool, int group, int rank,
                    ts_node_argv *out);

/* True when group `group` (an index into plan->groups) is on GPUs numbered consecutively in
 * rank order, or on CPUs. */
bool ts_node_group_devices_consecutive(const ts_plan *plan, int group);

#endif
