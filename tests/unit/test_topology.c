/*
 * test_topology.c — hostlists, Slurm's count lists and environment, cluster files, this machine's
 * discovery, and the placement of pools onto hosts (topology/).
 */
#include "common/error.h"
#include "test.h"
#include "topology/cluster.h"
#include "topology/hostlist.h"
#include "topology/node_command.h"
#include "topology/placement.h"
#include "topology/slurm_env.h"

#include <stdbool.h>
#include <string.h>

/* ---- hostlists ---- */

static bool expands_to(const char *expr, const char *joined) {
    ts_hostlist hl = {0};
    if (ts_hostlist_parse(expr, &hl) != 0) {
        fprintf(stderr, "  '%s' failed: %s\n", expr, ts_error_message());
        return false;
    }
    char buf[4096] = "";
    for (int i = 0; i < hl.n; i++) {
        if (i) strcat(buf, " ");
        strncat(buf, hl.names[i], sizeof buf - strlen(buf) - 1);
    }
    ts_hostlist_free(&hl);
    if (strcmp(buf, joined)) fprintf(stderr, "  '%s' gave '%s', want '%s'\n", expr, buf, joined);
    return !strcmp(buf, joined);
}

/* Parsing must fail with TS_E_INVALID and a message containing `want`. */
static bool refused(const char *expr, const char *want) {
    ts_hostlist hl = {0};
    int rc = ts_hostlist_parse(expr, &hl);
    bool ok = rc == TS_E_INVALID && hl.n == 0 && hl.names == NULL &&
              strstr(ts_error_message(), want) != NULL;
    if (!ok)
        fprintf(stderr, "  '%s': rc %d, message '%s', want '%s'\n", expr, rc, ts_error_message(),
                want);
    ts_hostlist_free(&hl);
    return ok;
}

static void test_hostlist_expands_ranges_lists_and_padding(void) {
    CHECK(expands_to("gpu[01-04,07],cpu-a[1-2]", "gpu01 gpu02 gpu03 gpu04 gpu07 cpu-a1 cpu-a2"));
    CHECK(expands_to("n1", "n1"));
    CHECK(expands_to("a,b,c", "a b c"));
    CHECK(expands_to("n[8-10]", "n8 n9 n10"));
    CHECK(expands_to("n[098-101]", "n098 n099 n100 n101"));
    CHECK(expands_to("x[5]", "x5"));
    CHECK(expands_to("node[1-2]-ib", "node1-ib node2-ib"));
    CHECK(expands_to("a.b_c-d", "a.b_c-d"));
    CHECK(expands_to("[1-2]", "1 2"));
    CHECK(expands_to("a,a", "a a")); /* order and duplicates kept as written */
    CHECK(expands_to("n[3,1]", "n3 n1"));
}

static void test_hostlist_expands_several_groups_last_fastest(void) {
    CHECK(expands_to("r[1-2]n[01-02]", "r1n01 r1n02 r2n01 r2n02"));
    CHECK(expands_to("r[1,3]n[1]x[7-8]", "r1n1x7 r1n1x8 r3n1x7 r3n1x8"));
    CHECK(expands_to("rack[1-2]-n[1-2],login", "rack1-n1 rack1-n2 rack2-n1 rack2-n2 login"));
}

static void test_hostlist_refuses_malformed_input_with_position(void) {
    CHECK(refused("", "empty hostlist"));
    CHECK(refused("gpu[01-", "position 8: expected a number, found the end"));
    CHECK(refused("gpu[01-04", "position 10: expected ']' to close the '[' at position 4"));
    CHECK(refused("gpu01]", "position 6: ']' without a matching '['"));
    CHECK(refused("a,,b", "position 3: empty host name"));
    CHECK(refused(",a", "position 1: empty host name"));
    CHECK(refused("a,", "position 3: empty host name"));
    CHECK(refused("n[[1]]", "position 3: '[' inside brackets"));
    CHECK(refused("n[]", "position 3: empty range"));
    CHECK(refused("n[1,,2]", "position 5: empty range"));
    CHECK(refused("n[5-3]", "position 3: range 5-3 goes backwards"));
    CHECK(refused("n[1-x]", "position 5: expected a number, found 'x'"));
    CHECK(refused("n[a]", "position 3: expected a number, found 'a'"));
    CHECK(refused("n[1;2]", "position 4: expected ',', '-' or ']' in brackets, found ';'"));
    CHECK(refused("bad name", "position 4: ' ' is not allowed in a host name"));
    CHECK(refused("n\x01", "position 2: byte 0x01 is not allowed"));
    CHECK(refused("n[1234567890]", "position 3: number longer than 9 digits"));
    CHECK(refused("n[0-999999999]", "expands to more than 65536 hosts"));
    CHECK(refused("a[0-999]b[0-999]", "expands to more than 65536 hosts"));
    CHECK(refused("n[0-40000],m[0-40000]", "the list expands to more than 65536 hosts"));
    char long_name[300];
    memset(long_name, 'a', 256);
    long_name[256] = '\0';
    CHECK(refused(long_name, "longer than 255 characters"));
}

static void test_hostlist_find(void) {
    ts_hostlist hl = {0};
    CHECK_OK(ts_hostlist_parse("n[1-3]", &hl));
    CHECK_EQ_INT(ts_hostlist_find(&hl, "n2"), 1);
    CHECK_EQ_INT(ts_hostlist_find(&hl, "n4"), -1);
    ts_hostlist_free(&hl);
    ts_hostlist_free(&hl); /* freeing twice is harmless */
}

static void test_count_list_parses_repeats(void) {
    int *c = NULL, n = 0;
    CHECK_OK(ts_count_list_parse("2(x3),1", &c, &n));
    CHECK_EQ_INT(n, 4);
    if (n == 4) {
        CHECK_EQ_INT(c[0], 2);
        CHECK_EQ_INT(c[2], 2);
        CHECK_EQ_INT(c[3], 1);
    }
    free(c);
    CHECK_OK(ts_count_list_parse("4", &c, &n));
    CHECK_EQ_INT(n, 1);
    free(c);
    const char *bad[] = {"", "2(x", "2(y3)", "x", "2,,1", "2(x3)1", "2(x3", "-1", "2(x0)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = ts_count_list_parse(bad[i], &c, &n);
        CHECK_EQ_INT(rc, TS_E_INVALID);
        CHECK(c == NULL && n == 0);
    }
    CHECK_EQ_INT(ts_count_list_parse("1(x70000)", &c, &n), TS_E_INVALID);
}

/* ---- the Slurm environment ---- */

static void test_slurm_env_reads_a_job_step(void) {
    char *envp[] = {"PATH=/bin",
                    "SLURM_JOB_ID=42",
                    "SLURM_JOB_NODELIST=n[1-2]",
                    "SLURM_TASKS_PER_NODE=2(x2)",
                    "SLURM_JOB_CPUS_PER_NODE=8,4",
                    "SLURM_NTASKS=4",
                    "SLURM_PROCID=3",
                    "SLURM_LOCALID=1",
                    "SLURM_NODEID=1",
                    "SLURM_STEP_ID=0",
                    "SLURM_STEP_NODELIST=n[1-2]",
                    "SLURM_STEP_NUM_NODES=2",
                    "SLURM_STEP_NUM_TASKS=4",
                    "SLURM_STEP_TASKS_PER_NODE=2(x2)",
                    "CUDA_VISIBLE_DEVICES=1,GPU-5a3c",
                    NULL};
    ts_slurm_env e;
    CHECK_OK(ts_slurm_env_parse(envp, &e));
    CHECK(e.in_job && e.in_step);
    CHECK_EQ_INT(e.job_id, 42);
    CHECK_EQ_INT(e.job.nodes.n, 2);
    CHECK_EQ_INT(e.job.ntasks, 4);
    CHECK(e.job.tasks_per_node && e.job.tasks_per_node[1] == 2);
    CHECK(e.cpus_per_node && e.cpus_per_node[0] == 8 && e.cpus_per_node[1] == 4);
    CHECK_EQ_INT(e.procid, 3);
    CHECK_EQ_INT(e.localid, 1);
    CHECK_EQ_INT(e.nodeid, 1);
    CHECK_EQ_INT(e.step.ntasks, 4);
    CHECK_EQ_INT(e.het_size, 0);
    CHECK(e.visible_set);
    CHECK_EQ_INT(e.n_visible, 2);
    CHECK_EQ_INT(e.visible[0], 1);
    CHECK_EQ_INT(e.visible[1], -1);
    ts_slurm_env_free(&e);
}

static void test_slurm_env_outside_slurm_is_empty(void) {
    char *envp[] = {"HOME=/root", NULL};
    ts_slurm_env e;
    CHECK_OK(ts_slurm_env_parse(envp, &e));
    CHECK(!e.in_job && !e.in_step && !e.visible_set);
    CHECK_EQ_INT(e.procid, -1);
    CHECK_EQ_INT(e.job.ntasks, -1);
    ts_slurm_env_free(&e);
    CHECK_OK(ts_slurm_env_read(&e)); /* this process's environment parses too */
    ts_slurm_env_free(&e);
}

static void test_slurm_env_reads_heterogeneous_components(void) {
    char *envp[] = {"SLURM_JOB_ID=7",
                    "SLURM_JOB_NODELIST=n1",
                    "SLURM_HET_SIZE=2",
                    "SLURM_JOB_NODELIST_HET_GROUP_0=n1",
                    "SLURM_JOB_NODELIST_HET_GROUP_1=n[2-3]",
                    "SLURM_TASKS_PER_NODE_HET_GROUP_0=2",
                    "SLURM_TASKS_PER_NODE_HET_GROUP_1=1(x2)",
                    "SLURM_NTASKS_HET_GROUP_0=2",
                    NULL};
    ts_slurm_env e;
    CHECK_OK(ts_slurm_env_parse(envp, &e));
    CHECK_EQ_INT(e.het_size, 2);
    CHECK_EQ_INT(e.het[0].nodes.n, 1);
    CHECK_EQ_INT(e.het[1].nodes.n, 2);
    CHECK_EQ_INT(e.het[0].ntasks, 2);
    CHECK_EQ_INT(e.het[1].ntasks, 2); /* summed from the per-node counts */
    ts_slurm_env_free(&e);
}

static bool env_refused(char **envp, const char *want) {
    ts_slurm_env e;
    int rc = ts_slurm_env_parse(envp, &e);
    bool ok =
        rc == TS_E_INVALID && strstr(ts_error_message(), want) && !e.in_job && e.job.nodes.n == 0;
    if (!ok) fprintf(stderr, "  rc %d, message '%s', want '%s'\n", rc, ts_error_message(), want);
    ts_slurm_env_free(&e);
    return ok;
}

static void test_slurm_env_refuses_bad_values(void) {
    char *a[] = {"SLURM_JOB_ID=1", "SLURM_PROCID=x", NULL};
    CHECK(env_refused(a, "SLURM_PROCID: expected a number >= 0, got 'x'"));
    char *b[] = {"SLURM_JOB_ID=1", "SLURM_NTASKS=4", "SLURM_PROCID=4", NULL};
    CHECK(env_refused(b, "SLURM_PROCID 4 is not below the task count 4"));
    char *c[] = {"SLURM_JOB_ID=1", "SLURM_JOB_NODELIST=n[1-2]", "SLURM_TASKS_PER_NODE=1(x3)", NULL};
    CHECK(env_refused(c, "SLURM_TASKS_PER_NODE has 3 entries but SLURM_JOB_NODELIST names 2"));
    char *d[] = {"SLURM_JOB_ID=1", "SLURM_JOB_NODELIST=n[1-", NULL};
    CHECK(env_refused(d, "SLURM_JOB_NODELIST: hostlist \"n[1-\": position 5"));
    char *e[] = {"SLURM_JOB_ID=1", "SLURM_HET_SIZE=2", "SLURM_JOB_NODELIST_HET_GROUP_0=n1", NULL};
    CHECK(env_refused(e, "SLURM_JOB_NODELIST_HET_GROUP_1 is not set"));
    char *f[] = {"CUDA_VISIBLE_DEVICES=0,,1", NULL};
    CHECK(env_refused(f, "empty entry"));
    char *g[] = {"CUDA_VISIBLE_DEVICES=0,cpu", NULL};
    CHECK(env_refused(g, "'cpu' is neither a device number"));
    char *h[] = {"SLURM_JOB_ID=-3", NULL};
    CHECK(env_refused(h, "SLURM_JOB_ID"));
    char *i[] = {"SLURM_JOB_ID=1", "SLURM_STEP_NODELIST=n1", "SLURM_STEP_NUM_NODES=3", NULL};
    CHECK(env_refused(i, "SLURM_STEP_NUM_NODES is 3 but SLURM_STEP_NODELIST names 1"));
    char *j[] = {"SLURM_JOB_ID=1", "SLURM_HET_SIZE=99", NULL};
    CHECK(env_refused(j, "at most 16 components"));
}

static void test_slurm_env_in_a_step_describes_the_step(void) {
    /* mpirun's daemons run as a step of one task per node: SLURM_TASKS_PER_NODE is the step's. */
    char *envp[] = {"SLURM_JOB_ID=9",
                    "SLURM_JOB_NODELIST=n[1-2]",
                    "SLURM_STEP_ID=0",
                    "SLURM_TASKS_PER_NODE=1",
                    "SLURM_STEP_NODELIST=n2",
                    "SLURM_STEP_TASKS_PER_NODE=1",
                    NULL};
    ts_slurm_env e;
    CHECK_OK(ts_slurm_env_parse(envp, &e));
    CHECK(e.in_step);
    CHECK_EQ_INT(e.job.nodes.n, 2);
    CHECK(e.job.tasks_per_node == NULL);
    CHECK_EQ_INT(e.step.nodes.n, 1);
    CHECK(e.step.tasks_per_node && e.step.tasks_per_node[0] == 1);
    ts_slurm_env_free(&e);
}

static void test_slurm_env_no_visible_devices(void) {
    char *a[] = {"CUDA_VISIBLE_DEVICES=NoDevFiles", NULL};
    char *b[] = {"CUDA_VISIBLE_DEVICES=", NULL};
    char **cases[] = {a, b};
    for (int k = 0; k < 2; k++) {
        ts_slurm_env e;
        CHECK_OK(ts_slurm_env_parse(cases[k], &e));
        CHECK(e.visible_set);
        CHECK_EQ_INT(e.n_visible, 0);
        ts_slurm_env_free(&e);
    }
}

/* ---- hosts and clusters ---- */

static void test_host_discover_measures_this_machine(void) {
    ts_host h;
    CHECK_OK(ts_host_discover(&h));
    CHECK(h.measured);
    CHECK(h.n_cores >= 1 && h.n_pus >= h.n_cores && h.n_numa >= 1);
    CHECK(h.name[0] != '\0');
    char cpus[256];
    ts_host_cpu_list(&h, 0, h.n_cores, cpus, sizeof cpus);
    CHECK(cpus[0] != '\0');
    if (h.n_gpus == 0) CHECK(h.gpu_note[0] != '\0'); /* says why: no CUDA build, or no device */
    ts_host_free(&h);
    ts_host_free(&h);
}

static void test_host_cpu_list_collapses_runs(void) {
    ts_host h;
    CHECK_OK(ts_host_declare(&h, "x", 8, 2, 0, false));
    char cpus[64];
    ts_host_cpu_list(&h, 2, 4, cpus, sizeof cpus);
    CHECK_EQ_STR(cpus, "2-5");
    ts_host_cpu_list(&h, 7, 1, cpus, sizeof cpus);
    CHECK_EQ_STR(cpus, "7");
    CHECK_EQ_INT(h.core_numa[3], 0);
    CHECK_EQ_INT(h.core_numa[4], 1);
    /* Hyperthread siblings far apart: core c has PUs c and c + 4. */
    int pus[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    memcpy(h.pus, pus, sizeof pus);
    for (int c = 0; c <= 4; c++)
        h.core_pu_begin[c] = 2 * c;
    h.n_cores = 4;
    ts_host_cpu_list(&h, 0, 2, cpus, sizeof cpus);
    CHECK_EQ_STR(cpus, "0-1,4-5");
    ts_host_cpu_list(&h, 3, 2, cpus, sizeof cpus); /* out of range: empty */
    CHECK_EQ_STR(cpus, "");
    ts_host_free(&h);
    CHECK_EQ_INT(ts_host_declare(&h, "x", 0, 1, 0, false), TS_E_INVALID);
    CHECK_EQ_INT(ts_host_declare(&h, "x", 4, 5, 0, false), TS_E_INVALID);
    CHECK_EQ_INT(ts_host_declare(&h, "x", 4, 1, 65, false), TS_E_INVALID);
}

static int json_cluster(const char *text, ts_cluster *c) {
    ts_host local;
    CHECK_OK(ts_host_declare(&local, "not-in-any-file", 2, 1, 0, false));
    int rc = ts_cluster_from_json(text, strlen(text), "test.json", &local, c);
    ts_host_free(&local);
    return rc;
}

static void test_cluster_file_declares_hosts(void) {
    ts_cluster c;
    CHECK_OK(json_cluster("{\"tasks\": 12, \"hosts\": ["
                          "{\"name\": \"gpu[01-02]\", \"cores\": 64, \"numa\": 2, \"gpus\": 4,"
                          " \"nvlink\": true},"
                          "{\"name\": \"cpu1\", \"cores\": 16, \"slots\": 4}]}",
                          &c));
    CHECK_EQ_INT(c.n_hosts, 3);
    CHECK_EQ_INT(c.n_tasks, 12);
    CHECK_EQ_INT(c.self, -1);
    if (c.n_hosts == 3) {
        CHECK_EQ_STR(c.hosts[1].name, "gpu02");
        CHECK_EQ_INT(c.hosts[1].n_gpus, 4);
        CHECK(c.hosts[1].peer && c.hosts[1].peer[1 * 4 + 3]);
        CHECK_EQ_INT(c.hosts[1].n_numa, 2);
        CHECK_EQ_INT(c.hosts[2].slots, 4);
        CHECK(c.hosts[2].peer == NULL && c.hosts[2].n_gpus == 0);
    }
    ts_cluster_free(&c);
}

static bool cluster_refused(const char *text, const char *want) {
    ts_cluster c;
    int rc = json_cluster(text, &c);
    bool ok = rc < 0 && strstr(ts_error_message(), want) && c.n_hosts == 0;
    if (!ok) fprintf(stderr, "  rc %d, message '%s', want '%s'\n", rc, ts_error_message(), want);
    ts_cluster_free(&c);
    return ok;
}

static void test_cluster_file_refuses_mistakes(void) {
    CHECK(cluster_refused("{\"hosts\": [{\"name\": \"a\", \"cores\": 4, \"gpu\": 2}]}",
                          "test.json: hosts[0]: unknown key \"gpu\""));
    CHECK(
        cluster_refused("{\"hosts\": [{\"name\": \"a\"}]}", "hosts[0] (a): \"cores\" is required"));
    CHECK(cluster_refused("{\"hosts\": [{\"name\": \"a\", \"cores\": 4, \"numa\": 8}]}",
                          "\"numa\" must be between 1 and 4, got 8"));
    CHECK(cluster_refused("{\"hosts\": [{\"name\": \"a[1-\", \"cores\": 4}]}",
                          "hosts[0]: \"name\": hostlist"));
    CHECK(cluster_refused("{\"hosts\": [{\"name\": \"a,a\", \"cores\": 4}]}", "listed twice"));
    CHECK(cluster_refused("{\"hosts\": []}", "\"hosts\" is empty"));
    CHECK(cluster_refused("{\"host\": []}", "unknown key \"host\""));
    CHECK(cluster_refused("[1]", "expected an object"));
    CHECK(cluster_refused("{\"hosts\": [", "test.json"));
    CHECK(cluster_refused("{\"hosts\": [{\"name\": \"a\", \"cores\": 4, \"group\": 1}]}",
                          "group 0 has no hosts"));
    CHECK(cluster_refused("{\"hosts\": [{\"name\": \"a\", \"cores\": \"4\"}]}", "cores"));
}

static void test_cluster_from_slurm_marks_this_machine(void) {
    ts_host local;
    CHECK_OK(ts_host_declare(&local, "n2.example", 8, 1, 2, true));
    char *envp[] = {"SLURM_JOB_ID=5", "SLURM_JOB_NODELIST=n[1-3]", "SLURM_TASKS_PER_NODE=2(x3)",
                    "SLURM_NTASKS=6", NULL};
    ts_slurm_env e;
    CHECK_OK(ts_slurm_env_parse(envp, &e));
    ts_cluster c;
    CHECK_OK(ts_cluster_from_slurm(&e, &local, &c));
    CHECK_EQ_INT(c.n_hosts, 3);
    CHECK_EQ_INT(c.self, 1);
    CHECK_EQ_INT(c.n_tasks, 6);
    CHECK_EQ_INT(c.hosts[0].slots, 2);
    CHECK_EQ_INT(c.hosts[2].n_gpus, 2); /* other hosts assumed like this one */
    CHECK_EQ_STR(c.hosts[1].name, "n2");
    ts_cluster_free(&c);
    ts_slurm_env_free(&e);
    char *none[] = {NULL};
    CHECK_OK(ts_slurm_env_parse(none, &e));
    CHECK_EQ_INT(ts_cluster_from_slurm(&e, &local, &c), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "not inside a Slurm job") != NULL);
    ts_host_free(&local);
}

/* ---- placement ---- */

/* A cluster of n declared hosts h0.. with the given shape. */
static void make_cluster(ts_cluster *c, int n, int cores, int gpus, bool nvlink, int slots) {
    memset(c, 0, sizeof *c);
    c->self = -1;
    c->hosts = calloc((size_t)n, sizeof *c->hosts);
    c->n_hosts = n;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "h%d", i);
        CHECK_OK(ts_host_declare(&c->hosts[i], name, cores, 1, gpus, nvlink));
        c->hosts[i].slots = slots;
    }
}

static int plan_for(const ts_cluster *c, const char *spec, bool cross, ts_plan *plan) {
    ts_plan_request req = {.allow_cross_host_tp = cross};
    int rc = ts_plan_spec_parse(spec, &req);
    if (rc) return rc;
    return ts_plan_make(c, &req, plan);
}

static bool plan_refused(const ts_cluster *c, const char *spec, bool cross, const char *want) {
    ts_plan plan;
    int rc = plan_for(c, spec, cross, &plan);
    bool ok = rc == TS_E_INVALID && strstr(ts_error_message(), want) && plan.n_ranks == 0;
    if (!ok)
        fprintf(stderr, "  %s: rc %d, message '%s', want '%s'\n", spec, rc, ts_error_message(),
                want);
    ts_plan_free(&plan);
    return ok;
}

static void test_plan_keeps_tp_groups_inside_hosts(void) {
    ts_cluster c;
    make_cluster(&c, 2, 16, 4, true, 0);
    ts_plan p;
    CHECK_OK(plan_for(&c, "2x4", false, &p));
    CHECK(p.gpus);
    CHECK_EQ_INT(p.n_ranks, 8);
    CHECK_EQ_INT(p.n_groups, 2);
    for (int i = 0; i < p.n_ranks; i++) {
        CHECK_EQ_INT(p.ranks[i].pool_rank, i);
        CHECK_EQ_INT(p.ranks[i].group, i / 4);
        CHECK_EQ_INT(p.ranks[i].host, i / 4);
        CHECK_EQ_INT(p.ranks[i].device, i % 4);
        CHECK_EQ_INT(p.ranks[i].local_rank, i % 4);
        CHECK_EQ_INT(p.ranks[i].core0, (i % 4) * 4); /* 16 cores over 4 ranks */
        CHECK_EQ_INT(p.ranks[i].n_cores, 4);
    }
    CHECK(!p.groups[0].cross_host && p.groups[0].peer_ok);
    CHECK_EQ_STR(p.notes, "");
    ts_plan_free(&p);
    /* Without a group count: as many as fit. */
    CHECK_OK(plan_for(&c, "2", false, &p));
    CHECK_EQ_INT(p.pools[0].spec.groups, 4);
    ts_plan_free(&p);
    CHECK_OK(plan_for(&c, "mixed:*x4", false, &p));
    CHECK_EQ_INT(p.pools[0].spec.groups, 2);
    ts_plan_free(&p);
    ts_cluster_free(&c);
}

static void test_plan_refuses_tp_larger_than_a_host(void) {
    ts_cluster c;
    make_cluster(&c, 2, 16, 4, true, 0);
    CHECK(plan_refused(&c, "1x8", false,
                       "pool mixed: TP 8 needs 8 GPUs on one host, but no host has more than 4 "
                       "(h0): use a TP of at most 4, or let groups span hosts with "
                       "--allow-cross-host-tp"));
    ts_plan p;
    CHECK_OK(plan_for(&c, "1x8", true, &p));
    CHECK_EQ_INT(p.n_ranks, 8);
    CHECK(p.groups[0].cross_host);
    CHECK_EQ_INT(p.ranks[5].host, 1);
    CHECK(strstr(p.notes, "spans hosts") != NULL);
    ts_plan_free(&p);
    CHECK(plan_refused(&c, "1x16", true, "TP 16 needs 16 ranks, but its hosts have only 8"));
    CHECK(plan_refused(&c, "3x4", false,
                       "pool mixed: only 2 of 3 groups of TP 4 fit (8 GPUs free on its hosts"));
    ts_cluster_free(&c);
}

static void test_plan_prefers_peer_connected_gpus(void) {
    ts_cluster c;
    make_cluster(&c, 1, 8, 4, true, 0);
    ts_host *h = &c.hosts[0];
    /* Peer pairs (0,2) and (1,3) only, as two NVLink bridges. */
    memset(h->peer, 0, 16);
    for (int i = 0; i < 4; i++)
        h->peer[i * 4 + i] = 1;
    h->peer[0 * 4 + 2] = h->peer[2 * 4 + 0] = 1;
    h->peer[1 * 4 + 3] = h->peer[3 * 4 + 1] = 1;
    ts_plan p;
    CHECK_OK(plan_for(&c, "2x2", false, &p));
    CHECK_EQ_INT(p.ranks[0].device, 0);
    CHECK_EQ_INT(p.ranks[1].device, 2);
    CHECK_EQ_INT(p.ranks[2].device, 1);
    CHECK_EQ_INT(p.ranks[3].device, 3);
    CHECK(p.groups[0].peer_ok && p.groups[1].peer_ok);
    ts_plan_free(&p);
    /* No peer set of 4 exists: the group still forms, with a note. */
    CHECK_OK(plan_for(&c, "1x4", false, &p));
    CHECK(!p.groups[0].peer_ok);
    CHECK(strstr(p.notes, "lack pairwise peer access") != NULL);
    ts_plan_free(&p);
    ts_cluster_free(&c);
}

static void test_plan_respects_slurm_tasks(void) {
    ts_cluster c;
    make_cluster(&c, 2, 16, 4, true, 2); /* 4 GPUs but Slurm starts 2 tasks per host */
    CHECK(plan_refused(&c, "1x4", false,
                       "TP 4 needs 4 ranks on one host, but the job starts at most 2 tasks on any "
                       "host (h0): submit with --ntasks-per-node=4"));
    ts_plan p;
    CHECK_OK(plan_for(&c, "2", false, &p));
    CHECK_EQ_INT(p.n_ranks, 4);
    ts_plan_free(&p);
    ts_cluster_free(&c);
    make_cluster(&c, 2, 4, 0, false, 0);
    c.n_tasks = 4;
    CHECK(plan_refused(&c, "2x4", false,
                       "the plan needs 8 ranks but the launcher starts 4 tasks: submit with "
                       "--ntasks=8"));
    CHECK_OK(plan_for(&c, "1x2", false, &p));
    CHECK_EQ_INT(p.idle_tasks, 2);
    CHECK(strstr(p.notes, "2 of the job's 4 tasks stay unused") != NULL);
    ts_plan_free(&p);
    ts_cluster_free(&c);
}

static void test_plan_cpu_ranks_split_cores(void) {
    ts_cluster c;
    make_cluster(&c, 2, 8, 0, false, 2);
    ts_plan p;
    CHECK_OK(plan_for(&c, "2x2", false, &p));
    CHECK(!p.gpus);
    CHECK_EQ_INT(p.ranks[1].device, -1);
    CHECK_EQ_INT(p.ranks[1].host, 0);
    CHECK_EQ_INT(p.ranks[1].core0, 4);
    CHECK_EQ_INT(p.ranks[1].n_cores, 4);
    CHECK_EQ_INT(p.ranks[2].host, 1);
    ts_plan_free(&p);
    ts_cluster_free(&c);
    /* More ranks than cores: ranks share single cores, with a note. */
    make_cluster(&c, 1, 2, 0, false, 4);
    CHECK_OK(plan_for(&c, "1x4", false, &p));
    CHECK_EQ_INT(p.ranks[3].core0, 1);
    CHECK_EQ_INT(p.ranks[3].n_cores, 1);
    CHECK(strstr(p.notes, "ranks share cores") != NULL);
    ts_plan_free(&p);
    ts_cluster_free(&c);
    make_cluster(&c, 1, 4, 0, false, 0);
    ts_plan_request req = {.devices = TS_DEVICES_GPU};
    CHECK_OK(ts_plan_spec_parse("1", &req));
    CHECK_EQ_INT(ts_plan_make(&c, &req, &p), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "GPU placement asked for, but h0 has no GPU") != NULL);
    ts_cluster_free(&c);
}

static void test_plan_pools_by_role(void) {
    ts_cluster c;
    make_cluster(&c, 1, 8, 4, true, 0);
    ts_plan p;
    CHECK_OK(plan_for(&c, "prefill:1x2,decode:2x1", false, &p));
    CHECK_EQ_INT(p.n_pools, 2);
    CHECK_EQ_INT(p.pools[1].spec.role, TS_ROLE_DECODE);
    CHECK_EQ_INT(p.pools[1].n_ranks, 2);
    const ts_rank_place *d1 = &p.ranks[p.pools[1].first_rank + 1];
    CHECK_EQ_INT(d1->pool_rank, 1);
    CHECK_EQ_INT(d1->local_rank, 1);
    CHECK_EQ_INT(d1->group, 1);
    CHECK_EQ_INT(d1->device, 3);
    ts_plan_free(&p);
    CHECK(plan_refused(&c, "prefill:1x4,decode:1x1", false, "pool decode: no room for a group"));
    ts_cluster_free(&c);
    /* A heterogeneous job: pool k on component k. */
    make_cluster(&c, 3, 8, 2, true, 0);
    c.het_size = 2;
    c.hosts[1].het_group = c.hosts[2].het_group = 1;
    CHECK_OK(plan_for(&c, "prefill:1x2,decode:*x1", false, &p));
    CHECK_EQ_INT(p.ranks[0].host, 0);
    CHECK_EQ_INT(p.pools[1].spec.groups, 4);
    for (int i = p.pools[1].first_rank; i < p.n_ranks; i++)
        CHECK(p.ranks[i].host >= 1);
    ts_plan_free(&p);
    CHECK(plan_refused(&c, "2", false, "2 heterogeneous components but the plan has 1 pools"));
    CHECK(plan_refused(&c, "prefill:2x2,decode:1x1", false, "pool prefill: only 1 of 2 groups"));
    ts_cluster_free(&c);
}

static void test_plan_spec_parsing(void) {
    ts_plan_request r = {0};
    CHECK_OK(ts_plan_spec_parse("mixed:2x4", &r));
    CHECK(r.n_pools == 1 && r.pools[0].groups == 2 && r.pools[0].tp == 4);
    CHECK_OK(ts_plan_spec_parse("prefill:1x2,decode:*x1", &r));
    CHECK(r.n_pools == 2 && r.pools[1].role == TS_ROLE_DECODE && r.pools[1].groups == 0);
    CHECK_OK(ts_plan_spec_parse("8", &r));
    CHECK(r.pools[0].role == TS_ROLE_MIXED && r.pools[0].tp == 8 && r.pools[0].groups == 0);
    const char *bad[] = {"",
                         "foo:2",
                         "2x",
                         "0",
                         "x4",
                         "2x4,",
                         ",2",
                         "a:b:c",
                         "2x4x4",
                         "1x99999",
                         "1,2,3,4,5,6,7,8,9",
                         "decode:",
                         "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = ts_plan_spec_parse(bad[i], &r);
        if (rc != TS_E_INVALID) fprintf(stderr, "  '%s' was accepted\n", bad[i]);
        CHECK_EQ_INT(rc, TS_E_INVALID);
    }
    ts_role role;
    CHECK_EQ_INT(ts_role_parse("decoder", &role), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "mixed, prefill or decode") != NULL);
}

/* tessera up's local plan: more ranks than cores or GPUs, shared round robin. */
static void test_plan_oversubscribed_shares_devices(void) {
    ts_cluster c;
    make_cluster(&c, 1, 2, 0, false, 0);
    ts_plan_request req = {.oversubscribe = true, .devices = TS_DEVICES_CPU};
    CHECK_OK(ts_plan_spec_parse("mixed:2x2,prefill:1x1", &req));
    ts_plan p;
    CHECK_OK(ts_plan_make(&c, &req, &p));
    CHECK_EQ_INT(p.n_ranks, 5);
    CHECK_EQ_INT(p.n_groups, 3);
    for (int i = 0; i < p.n_ranks; i++) {
        CHECK_EQ_INT(p.ranks[i].device, -1);
        CHECK_EQ_INT(p.ranks[i].n_cores, 1);
        CHECK_EQ_INT(p.ranks[i].core0, i % 2);
    }
    CHECK(strstr(p.notes, "5 ranks on 2 cores") != NULL);
    ts_plan_free(&p);
    CHECK_OK(ts_plan_spec_parse("2", &req));
    CHECK_EQ_INT(ts_plan_make(&c, &req, &p), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "needs a group count (e.g. mixed:2x2)") != NULL);
    ts_cluster_free(&c);
    /* 3 single-rank groups on 2 GPUs: GPUs 0, 1, 0. */
    make_cluster(&c, 1, 8, 2, true, 0);
    req = (ts_plan_request){.oversubscribe = true, .devices = TS_DEVICES_GPU};
    CHECK_OK(ts_plan_spec_parse("3x1", &req));
    CHECK_OK(ts_plan_make(&c, &req, &p));
    CHECK(p.gpus);
    CHECK_EQ_INT(p.ranks[0].device, 0);
    CHECK_EQ_INT(p.ranks[1].device, 1);
    CHECK_EQ_INT(p.ranks[2].device, 0);
    ts_plan_free(&p);
    ts_cluster_free(&c);
}

static bool argv_is(const ts_node_argv *a, const char *want) {
    char got[1024] = "";
    for (int i = 0; i < a->argc; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "", a->argv[i]);
    if (strcmp(got, want)) fprintf(stderr, "  argv '%s'\n  want '%s'\n", got, want);
    return !strcmp(got, want) && a->argv[a->argc] == NULL;
}

/* The one node command line: per group (tessera up) and per pool (Slurm). */
static void test_node_command_for_groups_and_pools(void) {
    ts_cluster c;
    make_cluster(&c, 1, 8, 4, false, 0);
    ts_plan p;
    ts_plan_request req = {.devices = TS_DEVICES_GPU};
    CHECK_OK(ts_plan_spec_parse("prefill:1x2,decode:2x1", &req));
    CHECK_OK(ts_plan_make(&c, &req, &p));
    ts_node_settings ns = {.node_bin = "/bin/tessera-node",
                           .coordinator_file = "/tmp/ep",
                           .model = "m.gguf",
                           .device_base = 2,
                           .kv_transport = "nccl"};
    ts_flag flags[TS_NODE_SETTINGS_FLAGS];
    CHECK_EQ_INT(ts_node_settings_flags(&ns, flags), TS_NODE_SETTINGS_FLAGS);
    char *args[] = {"x", "--kv-memory", "1G", "--block-size", "32", "--no-prefix-cache", NULL};
    ts_flags_result res = {NULL, 0, 0};
    CHECK_OK(ts_flags_parse("x", flags, TS_NODE_SETTINGS_FLAGS, 6, args, 1, &res));
    ts_node_argv a;
    CHECK_OK(ts_node_command(&ns, &p, 0, 0, -1, &a));
    CHECK(argv_is(&a, "/bin/tessera-node --coordinator-file /tmp/ep --name prefill-0 --role "
                      "prefill --tp 2 --threads 2 -m m.gguf --kv-memory 1G --block-size 32 "
                      "--no-prefix-cache --device cuda:2 --device-per-rank --kv-transport nccl"));
    CHECK_OK(ts_node_command(&ns, &p, 1, 1, -1, &a));
    CHECK(argv_is(&a, "/bin/tessera-node --coordinator-file /tmp/ep --name decode-1 --role "
                      "decode --tp 1 --threads 2 -m m.gguf --kv-memory 1G --block-size 32 "
                      "--no-prefix-cache --device cuda:5 --kv-transport nccl"));
    CHECK_OK(ts_node_command(&ns, &p, 0, 0, 1, &a)); /* one rank alone: its GPU, the group's TP */
    CHECK(argv_is(&a, "/bin/tessera-node --coordinator-file /tmp/ep --name prefill-0 --role "
                      "prefill --tp 2 --threads 2 -m m.gguf --kv-memory 1G --block-size 32 "
                      "--no-prefix-cache --device cuda:3 --kv-transport nccl"));
    /* A pool launch: the launcher gives each rank its device. */
    ns = (ts_node_settings){
        .node_bin = "tessera-node", .coordinator = "h:1", .name = "dec", .threads = 3};
    CHECK_OK(ts_node_command(&ns, &p, 1, -1, -1, &a));
    CHECK(
        argv_is(&a, "tessera-node --coordinator h:1 --name dec --role decode --tp 1 --threads 3"));
    ns.die_with_parent = true; /* tessera up's launches */
    CHECK_OK(ts_node_command(&ns, &p, 1, -1, -1, &a));
    CHECK(argv_is(&a, "tessera-node --coordinator h:1 --name dec --role decode --tp 1 --threads 3 "
                      "--die-with-parent"));
    ns.die_with_parent = false;
    CHECK_EQ_INT(ts_node_command(&ns, &p, 2, -1, -1, &a), TS_E_INVALID);
    CHECK_EQ_INT(ts_node_command(&ns, &p, 1, 2, -1, &a), TS_E_INVALID);
    ns.coordinator = NULL;
    CHECK_EQ_INT(ts_node_command(&ns, &p, 1, -1, -1, &a), TS_E_INVALID);
    /* GPUs that are not consecutive cannot go through --device-per-rank. */
    p.ranks[1].device = 3;
    CHECK(!ts_node_group_devices_consecutive(&p, 0));
    ns.coordinator = "h:1";
    CHECK_EQ_INT(ts_node_command(&ns, &p, 0, 0, -1, &a), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "launch it rank by rank") != NULL);
    ts_plan_free(&p);
    ts_cluster_free(&c);
}

int main(void) {
    RUN(test_hostlist_expands_ranges_lists_and_padding);
    RUN(test_hostlist_expands_several_groups_last_fastest);
    RUN(test_hostlist_refuses_malformed_input_with_position);
    RUN(test_hostlist_find);
    RUN(test_count_list_parses_repeats);
    RUN(test_slurm_env_reads_a_job_step);
    RUN(test_slurm_env_outside_slurm_is_empty);
    RUN(test_slurm_env_reads_heterogeneous_components);
    RUN(test_slurm_env_refuses_bad_values);
    RUN(test_slurm_env_in_a_step_describes_the_step);
    RUN(test_slurm_env_no_visible_devices);
    RUN(test_host_discover_measures_this_machine);
    RUN(test_host_cpu_list_collapses_runs);
    RUN(test_cluster_file_declares_hosts);
    RUN(test_cluster_file_refuses_mistakes);
    RUN(test_cluster_from_slurm_marks_this_machine);
    RUN(test_plan_keeps_tp_groups_inside_hosts);
    RUN(test_plan_refuses_tp_larger_than_a_host);
    RUN(test_plan_prefers_peer_connected_gpus);
    RUN(test_plan_respects_slurm_tasks);
    RUN(test_plan_cpu_ranks_split_cores);
    RUN(test_plan_pools_by_role);
    RUN(test_plan_spec_parsing);
    RUN(test_plan_oversubscribed_shares_devices);
    RUN(test_node_command_for_groups_and_pools);
    return test_summary();
}
