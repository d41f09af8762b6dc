/* placement.c — see placement.h. */
#include "topology/placement.h"

#include "common/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[] = {"mixed", "prefill", "decode"};

const char *ts_role_name(ts_role role) {
    return (unsigned)role < 3 ? role_names[role] : "?";
}

int ts_role_parse(const char *text, ts_role *out) {
    for (int r = 0; r < 3; r++)
        if (!strcmp(text, role_names[r])) {
            *out = (ts_role)r;
            return TS_OK;
        }
    return ts_error_set(TS_E_INVALID, "unknown role '%s' (choose mixed, prefill or decode)", text);
}

static int parse_count(const char *s, size_t len, const char *pool, const char *what, int *out) {
    char buf[16];
    if (len == 0 || len >= sizeof buf)
        return ts_error_set(TS_E_INVALID, "plan '%s': %s missing or too long", pool, what);
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end || errno || v < 1 || v > 65536)
        return ts_error_set(TS_E_INVALID,
                            "plan '%s': %s must be a number from 1 to 65536, got '%s'", pool, what,
                            buf);
    *out = (int)v;
    return TS_OK;
}

int ts_plan_spec_parse(const char *text, ts_plan_request *req) {
    req->n_pools = 0;
    if (!text || !*text)
        return ts_error_set(TS_E_INVALID,
                            "empty plan (example: mixed:2x4 or prefill:1x2,decode:2x1)");
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        char pool[64];
        if (len == 0 || len >= sizeof pool)
            return ts_error_set(TS_E_INVALID, "plan '%.80s': %s pool at position %d", text,
                                len ? "overlong" : "empty", (int)(p - text) + 1);
        if (req->n_pools == TS_PLAN_MAX_POOLS)
            return ts_error_set(TS_E_INVALID, "plan '%.80s': more than %d pools", text,
                                TS_PLAN_MAX_POOLS);
        memcpy(pool, p, len);
        pool[len] = '\0';
        ts_pool_spec *spec = &req->pools[req->n_pools];
        spec->role = TS_ROLE_MIXED;
        spec->groups = 0;
        const char *shape = pool;
        char *colon = strchr(pool, ':');
        if (colon) {
            *colon = '\0';
            int rc = ts_role_parse(pool, &spec->role);
            *colon = ':';
            if (rc) return ts_error_wrap(rc, "plan '%s'", pool);
            shape = colon + 1;
        }
        const char *x = strchr(shape, 'x');
        int rc;
        if (x) {
            if (x - shape == 1 && *shape == '*')
                spec->groups = 0;
            else if ((rc = parse_count(shape, (size_t)(x - shape), pool, "the group count",
                                       &spec->groups)))
                return rc;
            shape = x + 1;
        }
        if ((rc = parse_count(shape, strlen(shape), pool, "the TP degree", &spec->tp))) return rc;
        req->n_pools++;
        p += len;
        if (!*p) break;
        p++;
    }
    return TS_OK;
}

/* Placement state of one host. */
typedef struct {
    int cap; /* ranks it can take in all */
    int used;
    unsigned char *taken; /* per device slot (GPU ordinal or CPU slot) */
    int n_slots;
} host_state;

typedef struct {
    const ts_cluster *c;
    const ts_plan_request *req;
    ts_plan *plan;
    host_state *hs;
    int cap_ranks;
} placer;

static void note(ts_plan *plan, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(ts_plan *plan, const char *fmt, ...) {
    size_t len = strlen(plan->notes);
    if (len + 2 >= sizeof plan->notes) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(plan->notes + len, sizeof plan->notes - len - 1, fmt, ap);
    va_end(ap);
    len = strlen(plan->notes);
    plan->notes[len] = '\n';
    plan->notes[len + 1] = '\0';
}

static bool eligible(const placer *pl, int pool, int h) {
    return pl->c->het_size == 0 || pl->c->hosts[h].het_group == pool;
}

static int add_rank(placer *pl, int pool, int group, int group_rank, int h, int slot) {
    ts_plan *plan = pl->plan;
    if (plan->n_ranks == pl->cap_ranks) {
        int cap = pl->cap_ranks ? pl->cap_ranks * 2 : 64;
        ts_rank_place *r = realloc(plan->ranks, (size_t)cap * sizeof *r);
        if (!r) return ts_error_set(TS_E_NOMEM, "out of memory placing ranks");
        plan->ranks = r;
        pl->cap_ranks = cap;
    }
    ts_rank_place *r = &plan->ranks[plan->n_ranks++];
    memset(r, 0, sizeof *r);
    r->pool = pool;
    r->group = group;
    r->group_rank = group_rank;
    r->pool_rank = plan->n_ranks - 1 - plan->pools[pool].first_rank;
    r->host = h;
    r->device = plan->gpus ? slot % pl->c->hosts[h].n_gpus : -1; /* slots wrap: oversubscribe */
    pl->hs[h].taken[slot] = 1;
    pl->hs[h].used++;
    return TS_OK;
}

static bool peer(const ts_host *host, int a, int b) {
    return host->peer && host->peer[a * host->n_gpus + b] && host->peer[b * host->n_gpus + a];
}

/* Picks `tp` free slots on host h: for GPUs a set with pairwise peer access when one exists. */
static bool choose_slots(const placer *pl, int h, int tp, int *slots) {
    const host_state *s = &pl->hs[h];
    const ts_host *host = &pl->c->hosts[h];
    if (pl->plan->gpus && host->peer && s->n_slots == host->n_gpus) {
        for (int start = 0; start < s->n_slots; start++) {
            if (s->taken[start]) continue;
            int n = 0;
            slots[n++] = start;
            for (int d = start + 1; d < s->n_slots && n < tp; d++) {
                if (s->taken[d]) continue;
                bool ok = true;
                for (int k = 0; k < n && ok; k++)
                    ok = peer(host, slots[k], d);
                if (ok) slots[n++] = d;
            }
            if (n == tp) return true;
        }
    }
    int n = 0;
    for (int d = 0; d < s->n_slots && n < tp; d++)
        if (!s->taken[d]) slots[n++] = d;
    return false;
}

static const char *unit(const placer *pl, int h) {
    const ts_host *host = &pl->c->hosts[h];
    if (pl->plan->gpus) return host->slots > 0 && host->slots < host->n_gpus ? "tasks" : "GPUs";
    return host->slots > 0 ? "tasks" : "cores";
}

static int place_group(placer *pl, int pool, int group, int tp, bool *placed) {
    ts_plan *plan = pl->plan;
    const ts_cluster *c = pl->c;
    *placed = false;
    int first_rank = plan->n_ranks;
    ts_group_place g = {
        .pool = pool, .index = group, .first_rank = first_rank, .tp = tp, .peer_ok = true};
    int host = -1;
    for (int h = 0; h < c->n_hosts && host < 0; h++)
        if (eligible(pl, pool, h) && pl->hs[h].cap - pl->hs[h].used >= tp) host = h;
    if (host >= 0 && plan->gpus) {
        int slots[TS_HOST_MAX_GPUS]; /* tp <= the host's GPUs here */
        g.peer_ok = choose_slots(pl, host, tp, slots);
        for (int k = 0; k < tp; k++) {
            int rc = add_rank(pl, pool, group, k, host, slots[k]);
            if (rc) return rc;
        }
    } else if (host >= 0) {
        for (int k = 0, d = 0; k < tp; d++)
            if (!pl->hs[host].taken[d]) {
                int rc = add_rank(pl, pool, group, k++, host, d);
                if (rc) return rc;
            }
    } else {
        int free_total = 0;
        for (int h = 0; h < c->n_hosts; h++)
            if (eligible(pl, pool, h)) free_total += pl->hs[h].cap - pl->hs[h].used;
        if (!pl->req->allow_cross_host_tp || free_total < tp) return TS_OK;
        g.cross_host = true;
        g.peer_ok = false;
        int k = 0;
        for (int h = 0; h < c->n_hosts && k < tp; h++) {
            if (!eligible(pl, pool, h)) continue;
            for (int d = 0; d < pl->hs[h].n_slots && k < tp && pl->hs[h].used < pl->hs[h].cap; d++)
                if (!pl->hs[h].taken[d]) {
                    int rc = add_rank(pl, pool, group, k++, h, d);
                    if (rc) return rc;
                }
        }
    }
    ts_group_place *groups = realloc(plan->groups, ((size_t)plan->n_groups + 1) * sizeof *groups);
    if (!groups) return ts_error_set(TS_E_NOMEM, "out of memory placing groups");
    plan->groups = groups;
    plan->groups[plan->n_groups++] = g;
    *placed = true;
    if (plan->gpus && !g.peer_ok && !g.cross_host && tp > 1 && c->hosts[host].peer)
        note(plan,
             "%s group %d on %s: its GPUs lack pairwise peer access, so all-reduce goes "
             "through host memory",
             ts_role_name(plan->pools[pool].spec.role), group, c->hosts[host].name);
    if (g.cross_host)
        note(plan, "%s group %d spans hosts: its all-reduce crosses the network",
             ts_role_name(plan->pools[pool].spec.role), group);
    return TS_OK;
}

static int place_pool(placer *pl, int pool) {
    ts_plan *plan = pl->plan;
    const ts_cluster *c = pl->c;
    const ts_pool_spec *spec = &pl->req->pools[pool];
    const char *role = ts_role_name(spec->role);
    ts_pool_place *pp = &plan->pools[pool];
    pp->spec = *spec;
    pp->first_group = plan->n_groups;
    pp->first_rank = plan->n_ranks;
    int best = -1, free_total = 0, n_hosts = 0;
    for (int h = 0; h < c->n_hosts; h++) {
        if (!eligible(pl, pool, h)) continue;
        n_hosts++;
        free_total += pl->hs[h].cap - pl->hs[h].used;
        if (best < 0 || pl->hs[h].cap > pl->hs[best].cap) best = h;
    }
    if (n_hosts == 0)
        return ts_error_set(TS_E_INVALID, "pool %s: heterogeneous component %d has no hosts", role,
                            pool);
    int most = pl->hs[best].cap;
    if (spec->tp > free_total && pl->req->allow_cross_host_tp)
        return ts_error_set(TS_E_INVALID,
                            "pool %s: TP %d needs %d ranks, but its hosts have only %d %s free "
                            "in all: use a TP of at most %d, or more nodes/tasks",
                            role, spec->tp, spec->tp, free_total, unit(pl, best), free_total);
    if (spec->tp > most && !pl->req->allow_cross_host_tp) {
        const ts_host *bh = &c->hosts[best];
        if (!strcmp(unit(pl, best), "tasks"))
            return ts_error_set(TS_E_INVALID,
                                "pool %s: TP %d needs %d ranks on one host, but the job starts at "
                                "most %d tasks on any host (%s): submit with --ntasks-per-node=%d, "
                                "use a TP of at most %d, or let groups span hosts with "
                                "--allow-cross-host-tp",
                                role, spec->tp, spec->tp, most, bh->name, spec->tp, most);
        return ts_error_set(TS_E_INVALID,
                            "pool %s: TP %d needs %d %s on one host, but no host has more than %d "
                            "(%s): use a TP of at most %d, or let groups span hosts with "
                            "--allow-cross-host-tp (all-reduce then crosses the network)",
                            role, spec->tp, spec->tp, unit(pl, best), most, bh->name, most);
    }
    int g = 0;
    for (; spec->groups == 0 || g < spec->groups; g++) {
        bool placed;
        int rc = place_group(pl, pool, g, spec->tp, &placed);
        if (rc) return rc;
        if (!placed) break;
    }
    if (g == 0 || g < spec->groups) {
        if (g == 0)
            return ts_error_set(TS_E_INVALID,
                                "pool %s: no room for a group of TP %d (%d %s free on its hosts "
                                "after the earlier pools): use a smaller TP, fewer groups in the "
                                "earlier pools, or more nodes",
                                role, spec->tp, free_total, unit(pl, best));
        return ts_error_set(
            TS_E_INVALID,
            "pool %s: only %d of %d groups of TP %d fit (%d %s free on its hosts%s): "
            "ask for at most %d groups, a smaller TP, or more nodes/tasks",
            role, g, spec->groups, spec->tp, free_total, unit(pl, best),
            pl->req->allow_cross_host_tp ? "" : ", groups kept inside one host", g);
    }
    pp->spec.groups = g;
    pp->n_ranks = plan->n_ranks - pp->first_rank;
    return TS_OK;
}

/* Local ranks per pool and host, and an even split of each host's cores over its ranks. */
static void finish_ranks(const placer *pl) {
    ts_plan *plan = pl->plan;
    const ts_cluster *c = pl->c;
    for (int h = 0; h < c->n_hosts; h++) {
        int m = 0, cores = c->hosts[h].n_cores;
        for (int i = 0; i < plan->n_ranks; i++)
            m += plan->ranks[i].host == h;
        if (m == 0) continue;
        if (m > cores)
            note(plan, "%s: %d ranks on %d cores, so ranks share cores", c->hosts[h].name, m,
                 cores);
        int k = 0;
        int local[TS_PLAN_MAX_POOLS] = {0};
        for (int i = 0; i < plan->n_ranks; i++) {
            ts_rank_place *r = &plan->ranks[i];
            if (r->host != h) continue;
            r->local_rank = local[r->pool]++;
            if (m > cores) {
                r->core0 = k % cores;
                r->n_cores = 1;
            } else {
                r->core0 = (int)((long long)k * cores / m);
                r->n_cores = (int)((long long)(k + 1) * cores / m) - r->core0;
            }
            k++;
        }
    }
}

static int make(const ts_cluster *c, const ts_plan_request *req, ts_plan *plan, placer *pl) {
    if (req->n_pools < 1) return ts_error_set(TS_E_INVALID, "the plan has no pools");
    if (c->n_hosts < 1) return ts_error_set(TS_E_INVALID, "the cluster has no hosts");
    if (c->het_size > 0 && req->n_pools != c->het_size)
        return ts_error_set(TS_E_INVALID,
                            "the job has %d heterogeneous components but the plan has %d pools: "
                            "give one pool per component (e.g. prefill:1x2,decode:2x1)",
                            c->het_size, req->n_pools);
    bool all_gpu = true;
    for (int h = 0; h < c->n_hosts; h++)
        all_gpu = all_gpu && c->hosts[h].n_gpus > 0;
    if (req->devices == TS_DEVICES_GPU && !all_gpu) {
        for (int h = 0; h < c->n_hosts; h++)
            if (c->hosts[h].n_gpus == 0)
                return ts_error_set(TS_E_INVALID, "GPU placement asked for, but %s has no GPU%s%s",
                                    c->hosts[h].name, c->hosts[h].gpu_note[0] ? ": " : "",
                                    c->hosts[h].gpu_note);
    }
    plan->gpus = req->devices == TS_DEVICES_GPU || (req->devices == TS_DEVICES_AUTO && all_gpu);
    int wanted = 0; /* ranks asked for, when every pool names its groups */
    for (int p = 0; p < req->n_pools; p++) {
        if (req->oversubscribe && req->pools[p].groups == 0)
            return ts_error_set(TS_E_INVALID,
                                "pool %s: a plan that shares the machine's devices needs a group "
                                "count (e.g. %s:2x%d)",
                                ts_role_name(req->pools[p].role), ts_role_name(req->pools[p].role),
                                req->pools[p].tp);
        wanted += req->pools[p].groups * req->pools[p].tp;
    }
    pl->hs = calloc((size_t)c->n_hosts, sizeof *pl->hs);
    if (!pl->hs) return ts_error_set(TS_E_NOMEM, "out of memory placing ranks");
    for (int h = 0; h < c->n_hosts; h++) {
        const ts_host *host = &c->hosts[h];
        int devices = plan->gpus ? host->n_gpus : (host->slots > 0 ? host->slots : host->n_cores);
        host_state *s = &pl->hs[h];
        if (req->oversubscribe && devices > 0 && wanted > devices) devices = wanted;
        s->n_slots = devices;
        s->cap =
            host->slots > 0 && host->slots < devices && !req->oversubscribe ? host->slots : devices;
        s->taken = calloc((size_t)devices, 1);
        if (!s->taken) return ts_error_set(TS_E_NOMEM, "out of memory placing ranks");
    }
    plan->n_pools = req->n_pools;
    for (int p = 0; p < req->n_pools; p++) {
        int rc = place_pool(pl, p);
        if (rc) return rc;
    }
    if (c->n_tasks > 0 && plan->n_ranks > c->n_tasks)
        return ts_error_set(TS_E_INVALID,
                            "the plan needs %d ranks but the launcher starts %d tasks: submit "
                            "with --ntasks=%d (or more nodes), or ask for fewer groups",
                            plan->n_ranks, c->n_tasks, plan->n_ranks);
    plan->idle_tasks = c->n_tasks > 0 ? c->n_tasks - plan->n_ranks : 0;
    if (plan->idle_tasks > 0)
        note(plan, "%d of the job's %d tasks stay unused", plan->idle_tasks, c->n_tasks);
    finish_ranks(pl);
    return TS_OK;
}

int ts_plan_make(const ts_cluster *c, const ts_plan_request *req, ts_plan *out) {
    memset(out, 0, sizeof *out);
    placer pl = {.c = c, .req = req, .plan = out};
    int rc = make(c, req, out, &pl);
    if (pl.hs)
        for (int h = 0; h < c->n_hosts; h++)
            free(pl.hs[h].taken);
    free(pl.hs);
    if (rc) ts_plan_free(out);
    return rc;
}

void ts_plan_free(ts_plan *p) {
    if (!p) return;
    free(p->ranks);
    free(p->groups);
    memset(p, 0, sizeof *p);
}
