/*
 * hostlist.h — Slurm hostlist expressions: "gpu[01-04,07],cpu-a[1-2]" → gpu01 … gpu07, cpu-a1,
 * cpu-a2.
 *
 * Grammar (what SLURM_JOB_NODELIST and `scontrol show hostnames` use):
 *   list  := item (',' item)*
 *   item  := (text | group)+          text: letters, digits, '-', '.', '_'
 *   group := '[' range (',' range)* ']'
 *   range := N | N '-' M              (N <= M; decimal)
 * Commas inside brackets separate ranges, outside they separate items. A number is written with
 * the width of its range's low bound, so "[01-10]" gives 01 … 10 and "[8-10]" gives 8, 9, 10.
 * Several groups in one item expand as a product with the last group varying fastest:
 * "r[1-2]n[01-02]" → r1n01, r1n02, r2n01, r2n02 (Slurm's order). Order and duplicates are kept
 * as written, because Slurm's rank order follows the list's order.
 *
 * Errors: TS_E_INVALID with the position (1-based character) of the problem, e.g.
 *   hostlist "gpu[01-": position 8: expected ']' to close the '[' at position 4
 * Lists that would expand to more than TS_HOSTLIST_MAX_HOSTS names are refused before anything is
 * allocated, so "n[0-999999999]" cannot exhaust memory.
 */
#ifndef TS_TOPOLOGY_HOSTLIST_H
#define TS_TOPOLOGY_HOSTLIST_H

enum {
    TS_HOSTLIST_MAX_HOSTS = 65536,
    TS_HOSTNAME_MAX = 255, /* bytes of one expanded name, as a DNS name */
};

typedef struct ts_hostlist {
    char **names; /* n entries, each owned */
    int n;
} ts_hostlist;

/* Expands `expr` into `out` (which the caller zero-initialises or has freed). On error `out` is
 * left empty. */
int ts_hostlist_parse(const char *expr, ts_hostlist *out);

void ts_hostlist_free(ts_hostlist *hl); /* frees the names and empties hl; safe on a zeroed hl */

/* Index of the first entry equal to `name`, or -1. */
int ts_hostlist_find(const ts_hostlist *hl, const char *name);

/* Slurm's task-count lists such as SLURM_TASKS_PER_NODE or SLURM_JOB_CPUS_PER_NODE:
 * "2(x3),1" → 2, 2, 2, 1. Fills `counts` (malloc'd, *n entries). TS_E_INVALID with the position on
 * malformed input; more than TS_HOSTLIST_MAX_HOSTS entries are refused. */
int ts_count_list_parse(const char *text, int **counts, int *n);

#endif
