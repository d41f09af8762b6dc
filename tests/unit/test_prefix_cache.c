/*
 * test_prefix_cache.c — the prefix cache through the real engine and scheduler on the bundled
 * model: a request sharing a prefix with an earlier one computes only its uncached tail (the
 * scheduler's counters and the request's n_cached say how much), and its tokens and log-probs
 * equal, bit for bit, those of a run with the cache off. Salts keep prefixes apart; under
 * memory pressure eviction takes chains from their ends, so a conversation's history survives.
 */
#include "common/error.h"
#include "common/kv_hash.h"
#include "node/kv_fingerprint.h"
#include "node/runtime.h"
#include "tests/unit/test.h"

#include <stdlib.h>
#include <string.h>

enum { BS = 4, MAX_OUT = 64 };

typedef struct run {
    int32_t tokens[MAX_OUT];
    float logprobs[MAX_OUT];
    int n;
    int32_t n_cached, n_prompt;
    bool done;
} run;

static void on_event(void *user, const ts_sched_event *ev) {
    run *r = user;
    if (ev->token >= 0 && r->n < MAX_OUT) {
        r->tokens[r->n] = ev->token;
        r->logprobs[r->n++] = ev->logprob;
    }
    r->n_cached = ev->n_cached;
    r->n_prompt = ev->n_prompt;
    if (ev->finish != TS_FINISH_NONE) r->done = true;
}

static const char *disk_dir; /* --kv-disk of open_rt_host, when set */

static ts_runtime *open_rt_host(bool no_prefix_cache, size_t kv_memory, size_t host_memory) {
    ts_runtime_options o;
    ts_runtime_options_default(&o);
    o.threads = 1;
    o.block_size = BS;
    o.ctx = 128;
    o.kv_memory = kv_memory;
    o.no_prefix_cache = no_prefix_cache;
    o.kv_host_memory = host_memory;
    o.kv_disk = disk_dir;
    o.kv_disk_size = disk_dir ? (size_t)1 << 20 : 0;
    o.log_level = "error"; /* the checksum test's warning is expected */
    ts_runtime *rt = NULL;
    int rc = ts_runtime_open(&o, &rt);
    if (rc) fprintf(stderr, "runtime: %s\n", ts_error_message());
    CHECK_OK(rc);
    return rt;
}

static ts_runtime *open_rt(bool no_prefix_cache, size_t kv_memory) {
    return open_rt_host(no_prefix_cache, kv_memory, 0);
}

static run generate(ts_runtime *rt, uint64_t id, const int32_t *prompt, int32_t n,
                    const char *salt) {
    run r = {0};
    ts_request_params p = ts_request_params_default();
    p.max_tokens = 12;
    p.logprobs = true;
    p.cache_salt = ts_kv_salt_digest(salt);
    ts_sched *s = ts_runtime_scheduler(rt);
    CHECK_OK(ts_sched_submit(s, id, prompt, n, &p));
    while (!r.done && ts_sched_has_work(s))
        CHECK_OK(ts_sched_step(s, on_event, &r));
    return r;
}

static bool same_bits(const run *a, const run *b) {
    return a->n == b->n && a->n > 0 && memcmp(a->tokens, b->tokens, sizeof a->tokens) == 0 &&
           memcmp(a->logprobs, b->logprobs, (size_t)a->n * sizeof(float)) == 0;
}

/* A "system prompt" of 33 ids (8 full blocks and one token), then a per-request question. */
static void make_prompt(int32_t *out, int32_t question, int32_t n_question) {
    for (int32_t i = 0; i < 33; i++)
        out[i] = 1 + (i * 37) % 500;
    for (int32_t i = 0; i < n_question; i++)
        out[33 + i] = 1 + (question * 101 + i * 13) % 500;
}

static void test_second_request_computes_only_its_tail(void) {
    ts_runtime *on = open_rt(false, 0), *off = open_rt(true, 0);
    int32_t a[64], b[64];
    make_prompt(a, 1, 10);
    make_prompt(b, 2, 7); /* 40 tokens: the first 32 are cached after a */
    run ra = generate(on, 1, a, 43, NULL);
    CHECK_EQ_INT(ra.n_cached, 0);
    ts_sched_stats before, after;
    ts_sched_get_stats(ts_runtime_scheduler(on), &before);
    run rb = generate(on, 2, b, 40, NULL);
    ts_sched_get_stats(ts_runtime_scheduler(on), &after);
    CHECK_EQ_INT(rb.n_cached, 32);
    CHECK_EQ_INT(after.cache_query_tokens - before.cache_query_tokens, 40);
    CHECK_EQ_INT(after.cache_hit_tokens - before.cache_hit_tokens, 32);
    /* only the 8 uncached prompt tokens were prefilled */
    CHECK_EQ_INT(after.prefill_tokens - before.prefill_tokens, 8);
    run rb_off = generate(off, 2, b, 40, NULL);
    CHECK_EQ_INT(rb_off.n_cached, 0);
    CHECK(same_bits(&rb, &rb_off));
    /* the whole prompt again: every full block but the one holding the last token is reused */
    run rb2 = generate(on, 3, b, 40, NULL);
    CHECK_EQ_INT(rb2.n_cached, 36);
    CHECK(same_bits(&rb2, &rb_off));
    ts_sched_stats off_stats;
    ts_sched_get_stats(ts_runtime_scheduler(off), &off_stats);
    CHECK_EQ_INT(off_stats.cache_query_tokens, 0);
    CHECK_EQ_INT(off_stats.cache_hit_tokens, 0);
    ts_runtime_close(on);
    ts_runtime_close(off);
}

static void test_salts_keep_prefixes_apart(void) {
    ts_runtime *rt = open_rt(false, 0);
    int32_t a[64];
    make_prompt(a, 3, 8);
    run first = generate(rt, 1, a, 41, "tenant-a");
    run other = generate(rt, 2, a, 41, "tenant-b");
    run shared = generate(rt, 3, a, 41, NULL);
    run same = generate(rt, 4, a, 41, "tenant-a");
    CHECK_EQ_INT(first.n_cached, 0);
    CHECK_EQ_INT(other.n_cached, 0);
    CHECK_EQ_INT(shared.n_cached, 0);
    CHECK_EQ_INT(same.n_cached, 40);
    CHECK(same_bits(&first, &other));
    CHECK(same_bits(&first, &same));
    ts_runtime_close(rt);
}

/* Bytes of one KV block of the bundled model in the device pool. */
static size_t block_bytes(void) {
    ts_runtime *probe = open_rt(false, (size_t)1 << 20);
    ts_sched_stats ps;
    ts_sched_get_stats(ts_runtime_scheduler(probe), &ps);
    ts_runtime_close(probe);
    return ((size_t)1 << 20) / (size_t)ps.blocks_total;
}

/* Conversation A (80 tokens + 12 generated: 22 full blocks cached, and one partial, not cached),
 * then conversation B, which needs 23 blocks of a 40-block pool: 18 are free, so 5 of A's 22
 * are evicted (A's blocks 17 .. 21). Then `a` holds A's next turn: A's 80 tokens and a new
 * question (90 tokens; blocks 0 .. 19 are A's). */
static void two_conversations(ts_runtime *rt, int32_t *a) {
    int32_t b[96];
    for (int32_t i = 0; i < 96; i++) {
        a[i] = 1 + (i * 37) % 500;
        b[i] = 1 + (i * 53 + 7) % 500;
    }
    run ra = generate(rt, 1, a, 80, NULL);
    CHECK_EQ_INT(ra.n, 12);
    run rb = generate(rt, 2, b, 80, NULL);
    CHECK_EQ_INT(rb.n_cached, 0);
    for (int32_t i = 80; i < 90; i++)
        a[i] = 1 + (i * 11) % 500;
}

static void test_eviction_takes_chains_from_their_ends(void) {
    /* Multi-turn: conversation A is cached, conversation B then needs more blocks than are
     * free, so some of A's must go. Leaves first, B takes A's last blocks and A's next turn still
     * finds the rest of its history (evicting A's first block, as a front-to-back release did,
     * would have left none of it reachable). */
    size_t per_block = block_bytes();
    ts_runtime *rt = open_rt(false, per_block * 40 + per_block / 2);
    ts_runtime *off = open_rt(true, 0);
    ts_sched_stats st;
    ts_sched_get_stats(ts_runtime_scheduler(rt), &st);
    CHECK_EQ_INT(st.blocks_total, 40);
    int32_t a[96];
    two_conversations(rt, a);
    /* A's next turn: blocks 0 .. 16 are still there */
    run ra2 = generate(rt, 3, a, 90, NULL);
    CHECK_EQ_INT(ra2.n_cached, 68);
    run ref = generate(off, 3, a, 90, NULL);
    CHECK(same_bits(&ra2, &ref));
    ts_runtime_close(rt);
    ts_runtime_close(off);
}

static void test_host_tier_loads_evicted_blocks(void) {
    size_t bb = block_bytes();
    ts_runtime *rt = open_rt_host(false, bb * 40 + bb / 2, bb * 64);
    ts_runtime *off = open_rt(true, 0);
    CHECK(ts_runtime_kv_tiers(rt) != NULL);
    int32_t a[96];
    two_conversations(rt, a);
    run ra2 = generate(rt, 3, a, 90, NULL);
    /* blocks 0 .. 16 from the device pool, 17 .. 19 loaded from the host tier */
    CHECK_EQ_INT(ra2.n_cached, 80);
    ts_sched_stats st;
    ts_sched_get_stats(ts_runtime_scheduler(rt), &st);
    CHECK_EQ_INT(st.cache_host_hit_tokens, 12);
    ts_kv_tiers_stats ts;
    ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
    CHECK(ts.stored_blocks >= 5);
    CHECK_EQ_INT(ts.loaded_blocks, 3);
    CHECK(ts.host_blocks_used <= ts.host_blocks_total);
    CHECK_EQ_INT(ts.checksum_failures, 0);
    run ref = generate(off, 3, a, 90, NULL);
    CHECK(same_bits(&ra2, &ref));
    ts_runtime_close(rt);
    ts_runtime_close(off);
}

static void test_host_tier_checksum_mismatch_is_recomputed(void) {
    size_t bb = block_bytes();
    ts_runtime *rt = open_rt_host(false, bb * 40 + bb / 2, bb * 64);
    ts_runtime *off = open_rt(true, 0);
    int32_t a[96];
    two_conversations(rt, a);
    /* damage A's block 18 in the host tier */
    uint64_t key = ts_kv_hash_root(ts_kvx_fingerprint(ts_runtime_model(rt), TS_DTYPE_F16, BS), 0);
    uint64_t parent = key;
    for (int32_t i = 0; i <= 18; i++) {
        parent = key;
        key = ts_kv_hash_block(parent, a + i * BS, BS);
    }
    CHECK_OK(ts_kv_tiers_damage_for_test(ts_runtime_kv_tiers(rt), key, parent, a + 18 * BS));
    run ra2 = generate(rt, 3, a, 90, NULL);
    /* block 17 loads; 18 fails its checksum: discarded, it and the rest are recomputed */
    CHECK_EQ_INT(ra2.n_cached, 72);
    ts_kv_tiers_stats ts;
    ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
    CHECK_EQ_INT(ts.checksum_failures, 1);
    CHECK_EQ_INT(ts.loaded_blocks, 1);
    CHECK(!ts_kv_tiers_has(ts_runtime_kv_tiers(rt), key, parent, a + 18 * BS));
    run ref = generate(off, 3, a, 90, NULL);
    CHECK(same_bits(&ra2, &ref));
    ts_runtime_close(rt);
    ts_runtime_close(off);
}

static void test_disk_tier_serves_evicted_blocks_and_survives_a_restart(void) {
    char dir[] = "/tmp/tessera-prefix-disk-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    disk_dir = dir;
    size_t bb = block_bytes();
    ts_runtime *off = open_rt(true, 0);
    /* no host tier: the device pool's evictions go straight to disk */
    ts_runtime *rt = open_rt_host(false, bb * 40 + bb / 2, 0);
    int32_t a[96];
    two_conversations(rt, a);
    run ra2 = generate(rt, 3, a, 90, NULL);
    CHECK_EQ_INT(ra2.n_cached, 80);
    ts_kv_tiers_stats ts;
    ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
    CHECK_EQ_INT(ts.disk_loaded_blocks, 3);
    ts_sched_stats ss;
    ts_sched_get_stats(ts_runtime_scheduler(rt), &ss);
    CHECK_EQ_INT(ss.cache_disk_hit_tokens, 12); /* the hits split by tier: these from disk */
    CHECK_EQ_INT(ss.cache_host_hit_tokens, 0);
    run ref = generate(off, 3, a, 90, NULL);
    CHECK(same_bits(&ra2, &ref));
    /* a third conversation evicts the rest of A to disk (through a two-block host tier); the
     * close above wrote the whole cache to disk, so the disk starts empty again */
    ts_runtime_close(rt);
    char wipe[128];
    snprintf(wipe, sizeof wipe, "rm -rf '%s'/*", dir);
    CHECK(system(wipe) == 0);
    rt = open_rt_host(false, bb * 40 + bb / 2, bb * 2 + bb / 2);
    int32_t c[96];
    two_conversations(rt, a);
    for (int32_t i = 0; i < 96; i++)
        c[i] = 1 + (i * 71 + 3) % 500;
    generate(rt, 4, c, 80, NULL);
    ts_runtime_close(rt);
    /* a restart: the device pool and the host tier are empty, the disk has A's history */
    rt = open_rt_host(false, bb * 40 + bb / 2, bb * 2 + bb / 2);
    ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
    CHECK(ts.disk_blocks_used >= 20);
    CHECK(ts.disk_blocks_used <= ts.disk_blocks_total);
    run after = generate(rt, 5, a, 90, NULL);
    CHECK_EQ_INT(after.n_cached, 80);
    ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
    CHECK_EQ_INT(ts.disk_loaded_blocks, 20);
    ts_sched_get_stats(ts_runtime_scheduler(rt), &ss);
    CHECK_EQ_INT(ss.cache_disk_hit_tokens, 80);
    CHECK_EQ_INT(ss.cache_host_hit_tokens, 0);
    CHECK(same_bits(&after, &ref));
    ts_runtime_close(rt);
    ts_runtime_close(off);
    disk_dir = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* A conversation that never left the device pool (nor the host tier) is on disk after an orderly
 * shutdown: closing the runtime flushes the cache down the tiers, so a restart loads all of it. */
static void test_shutdown_writes_the_cache_to_disk(void) {
    char dir[] = "/tmp/tessera-prefix-flush-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    size_t bb = block_bytes();
    int32_t a[96];
    for (int32_t i = 0; i < 96; i++)
        a[i] = 1 + (i * 29 + 5) % 500;
    ts_runtime *off = open_rt(true, 0);
    run ref = generate(off, 1, a, 90, NULL);
    ts_runtime_close(off);
    disk_dir = dir;
    for (int host = 0; host < 2; host++) { /* without a host tier, and with a small one */
        size_t host_bytes = host ? bb * 4 + bb / 2 : 0;
        ts_runtime *rt = open_rt_host(false, bb * 40 + bb / 2, host_bytes);
        run first = generate(rt, 1, a, 80, NULL);
        CHECK(first.done);
        ts_kv_tiers_stats ts;
        ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
        CHECK_EQ_INT(ts.stored_blocks, 0); /* nothing was evicted: all of it in the device pool */
        ts_runtime_close(rt);
        rt = open_rt_host(false, bb * 40 + bb / 2, host_bytes);
        run again = generate(rt, 2, a, 90, NULL);
        CHECK_EQ_INT(again.n_cached, 80);
        ts_kv_tiers_get_stats(ts_runtime_kv_tiers(rt), &ts);
        CHECK_EQ_INT(ts.disk_loaded_blocks, 20);
        CHECK(same_bits(&again, &ref));
        ts_runtime_close(rt);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", dir);
        CHECK(system(cmd) == 0);
    }
    disk_dir = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void test_disk_tier_needs_a_size_and_a_writable_directory(void) {
    ts_runtime_options o;
    ts_runtime_options_default(&o);
    o.threads = 1;
    o.log_level = "error";
    o.kv_disk = "/tmp";
    ts_runtime *rt = NULL;
    CHECK_EQ_INT(ts_runtime_open(&o, &rt), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "--kv-disk-size") != NULL);
    o.kv_disk = "/proc/version/kv"; /* below a file */
    o.kv_disk_size = (size_t)1 << 20;
    CHECK_EQ_INT(ts_runtime_open(&o, &rt), TS_E_IO);
    CHECK(strstr(ts_error_message(), "--kv-disk") != NULL);
    CHECK(rt == NULL);
}

static void test_host_tier_too_small_is_refused(void) {
    ts_runtime_options o;
    ts_runtime_options_default(&o);
    o.threads = 1;
    o.block_size = BS;
    o.ctx = 128;
    o.kv_host_memory = 100; /* less than one block */
    o.log_level = "error";
    ts_runtime *rt = NULL;
    CHECK_EQ_INT(ts_runtime_open(&o, &rt), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "--kv-host-memory") != NULL);
    CHECK(rt == NULL);
}

int main(void) {
    RUN(test_second_request_computes_only_its_tail);
    RUN(test_salts_keep_prefixes_apart);
    RUN(test_eviction_takes_chains_from_their_ends);
    RUN(test_host_tier_loads_evicted_blocks);
    RUN(test_host_tier_checksum_mismatch_is_recomputed);
    RUN(test_host_tier_too_small_is_refused);
    RUN(test_disk_tier_serves_evicted_blocks_and_survives_a_restart);
    RUN(test_shutdown_writes_the_cache_to_disk);
    RUN(test_disk_tier_needs_a_size_and_a_writable_directory);
    return test_summary();
}
