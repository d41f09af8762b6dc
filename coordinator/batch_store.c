/*
 * batch_store.c — see batch_store.h. One SQLite connection behind one mutex; every public
 * function is one transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error).
 *
 * Tables (schema 1):
 *   files    (id, purpose, filename, bytes, created_at, content BLOB)
 *   batches  (id, endpoint, input_file_id, completion_window, window_s, status, the timestamp of
 *             each state, expires_at, output/error file ids, errors, metadata, counts, usage)
 *   requests (batch_id, line, custom_id, body, state 0 pending / 1 ok / 2 failed, out_line,
 *             tokens) with PRIMARY KEY (batch_id, line) and UNIQUE (batch_id, custom_id)
 */
#include "coordinator/batch_store.h"

#include "common/error.h"
#include "common/json.h"

#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { STORE_APP_ID = 0x54534442 /* 'TSDB' */ };

struct co_store {
    pthread_mutex_t mu;
    sqlite3 *db;
    int lock_fd;
    char path[PATH_MAX];
};

static const char *const status_names[CO_BATCH_N_STATES] = {
    "validating", "failed",  "in_progress", "finalizing",
    "completed",  "expired", "cancelling",  "cancelled"};
/* The column of each state's timestamp (OpenAI's field names). */
static const char *const status_at[CO_BATCH_N_STATES] = {
    "created_at",   "failed_at",  "in_progress_at", "finalizing_at",
    "completed_at", "expired_at", "cancelling_at",  "cancelled_at"};

const char *co_batch_status_name(co_batch_status s) {
    return (unsigned)s < CO_BATCH_N_STATES ? status_names[s] : "unknown";
}

bool co_batch_status_final(co_batch_status s) {
    return s == CO_BATCH_FAILED || s == CO_BATCH_COMPLETED || s == CO_BATCH_EXPIRED ||
           s == CO_BATCH_CANCELLED;
}

void co_file_info_free(co_file_info *f) {
    if (!f) return;
    free(f->filename);
    free(f->purpose);
    f->filename = f->purpose = NULL;
}

void co_batch_info_free(co_batch_info *b) {
    if (!b) return;
    free(b->endpoint);
    free(b->input_file_id);
    free(b->completion_window);
    free(b->errors);
    free(b->metadata);
    b->endpoint = b->input_file_id = b->completion_window = b->errors = b->metadata = NULL;
}

/* ---- errors ---- */

/* A SQLite failure as a TS_E code with a message a user can act on. */
static int db_error(co_store *s, int src, const char *what) {
    int ext = s->db ? sqlite3_extended_errcode(s->db) : src;
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(src);
    switch (src & 0xff) {
    case SQLITE_FULL:
        return ts_error_set(TS_E_IO,
                            "%s: the state database %s is full (disk full or --state-max-size "
                            "reached): %s",
                            what, s->path, msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return ts_error_set(TS_E_FORMAT,
                            "%s: the state database %s is corrupt (%s); move it away to start with "
                            "an empty state",
                            what, s->path, msg);
    case SQLITE_NOMEM: return ts_error_set(TS_E_NOMEM, "%s: out of memory", what);
    case SQLITE_CONSTRAINT: return ts_error_set(TS_E_INVALID, "%s: %s", what, msg);
    default:
        return ts_error_set(TS_E_IO, "%s: the state database %s: %s (code %d)", what, s->path, msg,
                            ext);
    }
}

static int exec(co_store *s, const char *sql, const char *what) {
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? TS_OK : db_error(s, rc, what);
}

static int prepare(co_store *s, const char *sql, sqlite3_stmt **st, const char *what) {
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? TS_OK : db_error(s, rc, what);
}

/* Runs a statement that returns no rows (or ignores them). Finalizes it. */
static int step_done(co_store *s, sqlite3_stmt *st, const char *what) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    int ret = rc == SQLITE_DONE ? TS_OK : db_error(s, rc, what);
    sqlite3_finalize(st);
    return ret;
}

static int begin(co_store *s, const char *what) {
    pthread_mutex_lock(&s->mu);
    int rc = exec(s, "BEGIN IMMEDIATE", what);
    if (rc) pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Commits when rc is 0, else rolls back; returns rc (or the commit's failure). Unlocks. */
static int end(co_store *s, int rc, const char *what) {
    if (!rc) rc = exec(s, "COMMIT", what);
    if (rc) {
        /* keep the message of the first failure */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ts_error_message());
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        ts_error_set(rc, "%s", msg);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static char *dup_col(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static void copy_col(sqlite3_stmt *st, int i, char *out, size_t size) {
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

/* A fresh id: prefix + 24 hex digits of /dev/urandom (time and pid as a fallback). */
static void new_id(const char *prefix, char *out, size_t size) {
    unsigned char r[12] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool got = fd >= 0 && read(fd, r, sizeof r) == (ssize_t)sizeof r;
    if (fd >= 0) close(fd);
    if (!got) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid();
        memcpy(r, &x, sizeof x);
    }
    int n = snprintf(out, size, "%s", prefix);
    for (size_t i = 0; i < sizeof r && (size_t)n + 2 < size; i++)
        n += snprintf(out + n, size - (size_t)n, "%02x", r[i]);
}

static int64_t now_s(void) {
    return (int64_t)time(NULL);
}

/* ---- open ---- */

static const char schema_sql[] =
    "CREATE TABLE files (id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL,"
    " bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, content BLOB NOT NULL);"
    "CREATE TABLE batches (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, endpoint TEXT NOT NULL,"
    " input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL, window_s INTEGER NOT NULL,"
    " status INTEGER NOT NULL, created_at INTEGER NOT NULL, failed_at INTEGER,"
    " in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, expired_at INTEGER,"
    " cancelling_at INTEGER, cancelled_at INTEGER, expires_at INTEGER NOT NULL,"
    " output_file_id TEXT, error_file_id TEXT, errors TEXT, metadata TEXT,"
    " total INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0,"
    " failed INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " completion_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE requests (batch_id TEXT NOT NULL, line INTEGER NOT NULL,"
    " custom_id TEXT NOT NULL, body TEXT NOT NULL, state INTEGER NOT NULL DEFAULT 0,"
    " out_line TEXT, PRIMARY KEY (batch_id, line), UNIQUE (batch_id, custom_id))"
    " WITHOUT ROWID;"
    "CREATE INDEX files_created ON files (created_at);"
    "CREATE INDEX batches_seq ON batches (seq);";

static int pragma_int(co_store *s, const char *sql, int64_t *out) {
    sqlite3_stmt *st;
    int rc = prepare(s, sql, &st, "reading the schema");
    if (rc) return rc;
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        rc = db_error(s, r, "reading the schema");
    sqlite3_finalize(st);
    return rc;
}

static int check_or_create(co_store *s) {
    int64_t app = 0, version = 0, tables = 0;
    int rc = pragma_int(s, "PRAGMA application_id", &app);
    if (!rc) rc = pragma_int(s, "PRAGMA user_version", &version);
    if (!rc) rc = pragma_int(s, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc) return rc;
    if (app == 0 && version == 0 && tables == 0) {
        rc = exec(s, "BEGIN IMMEDIATE", "creating the schema");
        if (!rc) rc = exec(s, schema_sql, "creating the schema");
        if (!rc) {
            char sql[128];
            snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %d",
                     STORE_APP_ID, CO_STORE_SCHEMA);
            rc = exec(s, sql, "creating the schema");
        }
        if (!rc) rc = exec(s, "COMMIT", "creating the schema");
        if (rc) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (app != STORE_APP_ID)
        return ts_error_set(TS_E_FORMAT,
                            "%s is not a Tessera state database (application id %lld); give "
                            "--state-dir a directory of its own",
                            s->path, (long long)app);
    if (version == 1) { /* schema 1 lacked the batch's cached prompt tokens: add them (0) */
        rc = exec(s,
                  "BEGIN IMMEDIATE; ALTER TABLE batches ADD COLUMN cached_tokens INTEGER NOT NULL"
                  " DEFAULT 0; PRAGMA user_version = 2; COMMIT",
                  "upgrading the schema");
        if (rc) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        version = CO_STORE_SCHEMA;
    }
    if (version != CO_STORE_SCHEMA)
        return ts_error_set(TS_E_FORMAT,
                            "%s has schema version %lld, this Tessera reads version %d%s", s->path,
                            (long long)version, CO_STORE_SCHEMA,
                            version > CO_STORE_SCHEMA ? " (written by a newer Tessera)" : "");
    sqlite3_stmt *st;
    rc = prepare(s, "PRAGMA quick_check", &st, "checking the database");
    if (rc) return rc;
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        rc = db_error(s, r, "checking the database");
    } else {
        const char *ok = (const char *)sqlite3_column_text(st, 0);
        if (!ok || strcmp(ok, "ok"))
            rc = ts_error_set(TS_E_FORMAT,
                              "the state database %s is corrupt (%s); move it away to start with "
                              "an empty state",
                              s->path, ok ? ok : "?");
    }
    sqlite3_finalize(st);
    return rc;
}

int co_store_open(const char *dir, int64_t max_bytes, co_store **out) {
    *out = NULL;
    if (mkdir(dir, 0700) && errno != EEXIST)
        return ts_error_set(TS_E_IO, "--state-dir %s: %s", dir, strerror(errno));
    co_store *s = calloc(1, sizeof *s);
    if (!s) return ts_error_set(TS_E_NOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s/lock", dir);
    snprintf(s->path, sizeof s->path, "%s/tessera.db", dir);
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int rc = TS_OK;
    if (s->lock_fd < 0)
        rc = ts_error_set(TS_E_IO, "--state-dir %s: %s: %s", dir, lock, strerror(errno));
    else if (flock(s->lock_fd, LOCK_EX | LOCK_NB))
        rc = ts_error_set(TS_E_UNAVAILABLE,
                          "--state-dir %s is in use by another coordinator (%s is locked)", dir,
                          lock);
    if (!rc) {
        int r =
            sqlite3_open_v2(s->path, &s->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (r != SQLITE_OK) rc = db_error(s, r, "opening the state");
    }
    if (!rc) sqlite3_extended_result_codes(s->db, 1);
    if (!rc) rc = exec(s, "PRAGMA journal_mode = WAL", "opening the state");
    if (!rc) rc = exec(s, "PRAGMA synchronous = FULL", "opening the state");
    if (!rc) rc = check_or_create(s);
    if (!rc && max_bytes > 0) {
        int64_t page = 4096;
        pragma_int(s, "PRAGMA page_size", &page);
        char sql[96];
        snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
                 (long long)(max_bytes / (page > 0 ? page : 4096)));
        rc = exec(s, sql, "--state-max-size");
    }
    if (rc) {
        co_store_close(s);
        return rc;
    }
    *out = s;
    return TS_OK;
}

void co_store_close(co_store *s) {
    if (!s) return;
    if (s->db) sqlite3_close(s->db);
    if (s->lock_fd > 0) close(s->lock_fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The row of `id` (inside a transaction): TS_E_NOT_FOUND naming `kind` when there is none. */
static int get_row(co_store *s, const char *table, const char *cols, const char *id,
                   void (*read)(sqlite3_stmt *, void *), void *item, const char *kind,
                   const char *what) {
    char sql[800];
    snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE id = ?", cols, table);
    sqlite3_stmt *st;
    int rc = prepare(s, sql, &st, what);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        read(st, item);
    else if (r == SQLITE_DONE)
        rc = ts_error_set(TS_E_NOT_FOUND, "No such %s: '%s'", kind, id);
    else
        rc = db_error(s, r, what);
    sqlite3_finalize(st);
    return rc;
}

/* ---- files ---- */

static const char file_cols[] = "id, bytes, created_at, filename, purpose";

static void read_file_row(sqlite3_stmt *st, co_file_info *f) {
    copy_col(st, 0, f->id, sizeof f->id);
    f->bytes = sqlite3_column_int64(st, 1);
    f->created_at = sqlite3_column_int64(st, 2);
    f->filename = dup_col(st, 3);
    f->purpose = dup_col(st, 4);
}

/* Inserts a file (inside a transaction). */
static int insert_file(co_store *s, const char *purpose, const char *filename, const void *data,
                       size_t n, co_file_info *out) {
    co_file_info f = {.bytes = (int64_t)n, .created_at = now_s()};
    new_id("file-", f.id, sizeof f.id);
    sqlite3_stmt *st;
    int rc = prepare(s,
                     "INSERT INTO files (id, purpose, filename, bytes, created_at, content)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     &st, "storing the file");
    if (rc) return rc;
    sqlite3_bind_text(st, 1, f.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, purpose, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, filename, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, f.bytes);
    sqlite3_bind_int64(st, 5, f.created_at);
    sqlite3_bind_blob64(st, 6, n ? data : "", (sqlite3_uint64)n, SQLITE_STATIC);
    rc = step_done(s, st, "storing the file");
    if (!rc && out) {
        *out = f;
        out->filename = strdup(filename);
        out->purpose = strdup(purpose);
        if (!out->filename || !out->purpose) {
            co_file_info_free(out);
            rc = ts_error_set(TS_E_NOMEM, "out of memory");
        }
    }
    return rc;
}

int co_store_file_add(co_store *s, const char *purpose, const char *filename, const void *data,
                      size_t n, co_file_info *out) {
    int rc = begin(s, "storing the file");
    if (rc) return rc;
    return end(s, insert_file(s, purpose, filename, data, n, out), "storing the file");
}

static void read_file_item(sqlite3_stmt *st, void *f) {
    read_file_row(st, f);
}
static void free_file_item(void *f) {
    co_file_info_free(f);
}

int co_store_file_get(co_store *s, const char *id, co_file_info *out) {
    memset(out, 0, sizeof *out);
    int rc = begin(s, "reading the file");
    if (rc) return rc;
    rc = get_row(s, "files", file_cols, id, read_file_item, out, "file", "reading the file");
    return end(s, rc, "reading the file");
}

/* Reads up to limit rows of a list query into a fresh array of `size`-byte items (one more row
 * sets *has_more). On failure nothing is returned. Finalizes st. */
static int read_rows(co_store *s, sqlite3_stmt *st, int limit, size_t size,
                     void (*read)(sqlite3_stmt *, void *), void (*release)(void *), void **out,
                     int *n, bool *has_more, const char *what) {
    char *a = calloc((size_t)limit + 1, size);
    int rc = a ? TS_OK : ts_error_set(TS_E_NOMEM, "out of memory");
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == limit) {
            *has_more = true;
            break;
        }
        read(st, a + (size_t)(*n)++ * size);
    }
    if (!rc && r != SQLITE_ROW && r != SQLITE_DONE) rc = db_error(s, r, what);
    sqlite3_finalize(st);
    if (rc) {
        for (int i = 0; a && i < *n; i++)
            release(a + (size_t)i * size);
        free(a);
        a = NULL;
        *n = 0;
    }
    *out = a;
    return rc;
}

int co_store_file_list(co_store *s, const char *purpose, const char *after, int limit,
                       co_file_info **out, int *n, bool *has_more) {
    *out = NULL, *n = 0, *has_more = false;
    const char *what = "listing files";
    int rc = begin(s, what);
    if (rc) return rc;
    sqlite3_stmt *st;
    char sql[512];
    /* newest first; rowid breaks ties of one second in insertion order */
    snprintf(sql, sizeof sql,
             "SELECT %s FROM files WHERE (?1 IS NULL OR purpose = ?1) AND (?2 IS NULL OR "
             "rowid < (SELECT rowid FROM files WHERE id = ?2)) ORDER BY rowid DESC LIMIT ?3",
             file_cols);
    rc = prepare(s, sql, &st, what);
    if (!rc) {
        if (purpose) sqlite3_bind_text(st, 1, purpose, -1, SQLITE_STATIC);
        if (after) sqlite3_bind_text(st, 2, after, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, limit + 1);
        void *a = NULL;
        rc = read_rows(s, st, limit, sizeof **out, read_file_item, free_file_item, &a, n, has_more,
                       what);
        *out = a;
    }
    return end(s, rc, what);
}

int co_store_file_content(co_store *s, const char *id, ts_buf *out) {
    int rc = begin(s, "reading the file");
    if (rc) return rc;
    sqlite3_stmt *st;
    rc = prepare(s, "SELECT content FROM files WHERE id = ?", &st, "reading the file");
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW)
            rc =
                ts_buf_append(out, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        else if (r == SQLITE_DONE)
            rc = ts_error_set(TS_E_NOT_FOUND, "No such file: '%s'", id);
        else
            rc = db_error(s, r, "reading the file");
        sqlite3_finalize(st);
    }
    return end(s, rc, "reading the file");
}

int co_store_file_delete(co_store *s, const char *id) {
    int rc = begin(s, "deleting the file");
    if (rc) return rc;
    sqlite3_stmt *st;
    rc = prepare(s, "DELETE FROM files WHERE id = ?", &st, "deleting the file");
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        rc = step_done(s, st, "deleting the file");
        if (!rc && sqlite3_changes(s->db) == 0)
            rc = ts_error_set(TS_E_NOT_FOUND, "No such file: '%s'", id);
    }
    return end(s, rc, "deleting the file");
}

/* ---- batches ---- */

static const char batch_cols[] =
    "id, endpoint, input_file_id, completion_window, window_s, status, created_at, failed_at,"
    " in_progress_at, finalizing_at, completed_at, expired_at, cancelling_at, cancelled_at,"
    " expires_at, output_file_id, error_file_id, errors, metadata, total, completed, failed,"
    " prompt_tokens, completion_tokens, cached_tokens";

static void read_batch_row(sqlite3_stmt *st, co_batch_info *b) {
    memset(b, 0, sizeof *b);
    copy_col(st, 0, b->id, sizeof b->id);
    b->endpoint = dup_col(st, 1);
    b->input_file_id = dup_col(st, 2);
    b->completion_window = dup_col(st, 3);
    b->window_s = sqlite3_column_int64(st, 4);
    b->status = (co_batch_status)sqlite3_column_int(st, 5);
    b->created_at = sqlite3_column_int64(st, 6);
    for (int i = 0; i < CO_BATCH_N_STATES; i++)
        b->at[i] = sqlite3_column_int64(st, 6 + i);
    b->expires_at = sqlite3_column_int64(st, 14);
    copy_col(st, 15, b->output_file_id, sizeof b->output_file_id);
    copy_col(st, 16, b->error_file_id, sizeof b->error_file_id);
    b->errors = dup_col(st, 17);
    b->metadata = dup_col(st, 18);
    b->total = sqlite3_column_int64(st, 19);
    b->completed = sqlite3_column_int64(st, 20);
    b->failed = sqlite3_column_int64(st, 21);
    b->prompt_tokens = sqlite3_column_int64(st, 22);
    b->completion_tokens = sqlite3_column_int64(st, 23);
    b->cached_tokens = sqlite3_column_int64(st, 24);
}

static void read_batch_item(sqlite3_stmt *st, void *b) {
    read_batch_row(st, b);
}
static void free_batch_item(void *b) {
    co_batch_info_free(b);
}

/* Reads a batch inside a transaction. */
static int get_batch(co_store *s, const char *id, co_batch_info *out) {
    return get_row(s, "batches", batch_cols, id, read_batch_item, out, "batch",
                   "reading the batch");
}

/* Moves a batch to `to` (stamping its time) when its state is one of `from` (a bit set);
 * TS_E_INVALID naming both states otherwise. */
static int transition(co_store *s, const char *id, unsigned from, co_batch_status to,
                      const char *what) {
    co_batch_info b;
    int rc = get_batch(s, id, &b);
    if (rc) return rc;
    co_batch_status cur = b.status;
    co_batch_info_free(&b);
    if (!(from & (1u << cur)))
        return ts_error_set(TS_E_INVALID, "%s: batch %s is %s, cannot become %s", what, id,
                            co_batch_status_name(cur), co_batch_status_name(to));
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE batches SET status = ?, %s = ? WHERE id = ?", status_at[to]);
    sqlite3_stmt *st;
    rc = prepare(s, sql, &st, what);
    if (rc) return rc;
    sqlite3_bind_int(st, 1, (int)to);
    sqlite3_bind_int64(st, 2, now_s());
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    return step_done(s, st, what);
}

int co_store_batch_create(co_store *s, const co_batch_info *b, co_batch_info *out) {
    int rc = begin(s, "creating the batch");
    if (rc) return rc;
    co_file_info f = {0};
    rc = get_row(s, "files", file_cols, b->input_file_id, read_file_item, &f,
                 "file (input_file_id)", "creating the batch");
    if (!rc && strcmp(f.purpose ? f.purpose : "", "batch"))
        rc = ts_error_set(TS_E_INVALID,
                          "input_file_id %s has purpose '%s'; a batch reads a file uploaded with "
                          "purpose 'batch'",
                          b->input_file_id, f.purpose ? f.purpose : "");
    co_file_info_free(&f);
    sqlite3_stmt *st;
    char id[40];
    new_id("batch_", id, sizeof id);
    int64_t now = now_s();
    if (!rc)
        rc = prepare(s,
                     "INSERT INTO batches (id, seq, endpoint, input_file_id, completion_window,"
                     " window_s, status, created_at, expires_at, metadata) VALUES (?, "
                     "(SELECT coalesce(max(seq), 0) + 1 FROM batches), ?, ?, ?, ?, 0, ?, ?, ?)",
                     &st, "creating the batch");
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, b->endpoint, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, b->input_file_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, b->completion_window, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, b->window_s);
        sqlite3_bind_int64(st, 6, now);
        sqlite3_bind_int64(st, 7, now + b->window_s);
        if (b->metadata) sqlite3_bind_text(st, 8, b->metadata, -1, SQLITE_STATIC);
        rc = step_done(s, st, "creating the batch");
    }
    if (!rc) rc = get_batch(s, id, out);
    return end(s, rc, "creating the batch");
}

int co_store_batch_get(co_store *s, const char *id, co_batch_info *out) {
    memset(out, 0, sizeof *out);
    int rc = begin(s, "reading the batch");
    if (rc) return rc;
    return end(s, get_batch(s, id, out), "reading the batch");
}

int co_store_batch_list(co_store *s, const char *after, int limit, co_batch_info **out, int *n,
                        bool *has_more) {
    *out = NULL, *n = 0, *has_more = false;
    const char *what = "listing batches";
    int rc = begin(s, what);
    if (rc) return rc;
    char sql[800];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM batches WHERE (?1 IS NULL OR seq < (SELECT seq FROM batches WHERE "
             "id = ?1)) ORDER BY seq DESC LIMIT ?2",
             batch_cols);
    sqlite3_stmt *st;
    rc = prepare(s, sql, &st, what);
    if (!rc) {
        if (after) sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, limit + 1);
        void *a = NULL;
        rc = read_rows(s, st, limit, sizeof **out, read_batch_item, free_batch_item, &a, n,
                       has_more, what);
        *out = a;
    }
    return end(s, rc, what);
}

int co_store_batch_cancel(co_store *s, const char *id, co_batch_info *out) {
    memset(out, 0, sizeof *out);
    int rc = begin(s, "cancelling the batch");
    if (rc) return rc;
    co_batch_info b;
    rc = get_batch(s, id, &b);
    if (!rc) {
        co_batch_status cur = b.status;
        co_batch_info_free(&b);
        if (cur == CO_BATCH_VALIDATING || cur == CO_BATCH_IN_PROGRESS)
            rc = transition(s, id, 1u << cur, CO_BATCH_CANCELLING, "cancelling the batch");
        else if (cur != CO_BATCH_CANCELLING && cur != CO_BATCH_CANCELLED)
            rc = ts_error_set(TS_E_INVALID, "Cannot cancel a batch with status '%s'",
                              co_batch_status_name(cur));
    }
    if (!rc) rc = get_batch(s, id, out);
    return end(s, rc, "cancelling the batch");
}

int co_store_batch_active(co_store *s, char (**ids)[40], int *n) {
    *ids = NULL, *n = 0;
    int rc = begin(s, "listing batches");
    if (rc) return rc;
    sqlite3_stmt *st;
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT id FROM batches WHERE status IN (%d, %d, %d, %d) ORDER BY seq",
             CO_BATCH_VALIDATING, CO_BATCH_IN_PROGRESS, CO_BATCH_FINALIZING, CO_BATCH_CANCELLING);
    rc = prepare(s, sql, &st, "listing batches");
    int cap = 0, r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char(*grown)[40] = realloc(*ids, (size_t)cap * sizeof **ids);
            if (!grown) {
                rc = ts_error_set(TS_E_NOMEM, "out of memory");
                break;
            }
            *ids = grown;
        }
        copy_col(st, 0, (*ids)[(*n)++], 40);
    }
    if (!rc && r != SQLITE_DONE) rc = db_error(s, r, "listing batches");
    if (st) sqlite3_finalize(st);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return end(s, rc, "listing batches");
}

int co_store_batch_validated(co_store *s, const char *id, const co_store_line *lines, size_t n) {
    const char *what = "recording the batch's requests";
    int rc = begin(s, what);
    if (rc) return rc;
    rc = transition(s, id, 1u << CO_BATCH_VALIDATING, CO_BATCH_IN_PROGRESS, what);
    sqlite3_stmt *st = NULL;
    if (!rc)
        rc =
            prepare(s, "INSERT INTO requests (batch_id, line, custom_id, body) VALUES (?, ?, ?, ?)",
                    &st, what);
    for (size_t i = 0; !rc && i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, lines[i].line);
        sqlite3_bind_text(st, 3, lines[i].custom_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, lines[i].body, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r != SQLITE_DONE) rc = db_error(s, r, what);
    }
    if (st) sqlite3_finalize(st);
    if (!rc) {
        rc = prepare(s, "UPDATE batches SET total = ? WHERE id = ?", &st, what);
        if (!rc) {
            sqlite3_bind_int64(st, 1, (int64_t)n);
            sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
            rc = step_done(s, st, what);
        }
    }
    return end(s, rc, what);
}

static int set_text(co_store *s, const char *id, const char *column, const char *value,
                    const char *what) {
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE batches SET %s = ? WHERE id = ?", column);
    sqlite3_stmt *st;
    int rc = prepare(s, sql, &st, what);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    return step_done(s, st, what);
}

int co_store_batch_fail(co_store *s, const char *id, const char *errors_json) {
    const char *what = "failing the batch";
    int rc = begin(s, what);
    if (rc) return rc;
    rc = transition(s, id, 1u << CO_BATCH_VALIDATING, CO_BATCH_FAILED, what);
    if (!rc) rc = set_text(s, id, "errors", errors_json, what);
    return end(s, rc, what);
}

int co_store_batch_abort(co_store *s, const char *id, const char *code, const char *message) {
    const char *what = "failing the batch";
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    ts_jw_array_begin(&w);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "code");
    ts_jw_string(&w, code);
    ts_jw_key(&w, "message");
    ts_jw_string(&w, message);
    ts_jw_key(&w, "param");
    ts_jw_null(&w);
    ts_jw_key(&w, "line");
    ts_jw_null(&w);
    ts_jw_object_end(&w);
    ts_jw_array_end(&w);
    int rc = ts_jw_finish(&w);
    if (rc) {
        ts_buf_free(&b);
        return ts_error_set(rc, "out of memory");
    }
    rc = begin(s, what);
    if (!rc) {
        unsigned live = (1u << CO_BATCH_VALIDATING) | (1u << CO_BATCH_IN_PROGRESS) |
                        (1u << CO_BATCH_FINALIZING) | (1u << CO_BATCH_CANCELLING);
        rc = transition(s, id, live, CO_BATCH_FAILED, what);
        if (!rc) rc = set_text(s, id, "errors", b.data, what);
        rc = end(s, rc, what);
    }
    ts_buf_free(&b);
    return rc;
}

int co_store_batch_finalizing(co_store *s, const char *id) {
    const char *what = "finalizing the batch";
    int rc = begin(s, what);
    if (rc) return rc;
    return end(s, transition(s, id, 1u << CO_BATCH_IN_PROGRESS, CO_BATCH_FINALIZING, what), what);
}

int co_store_batch_pending(co_store *s, const char *id, int64_t after_line, int max,
                           co_store_pending **out, int *n) {
    *out = NULL, *n = 0;
    const char *what = "reading the batch's requests";
    int rc = begin(s, what);
    if (rc) return rc;
    sqlite3_stmt *st;
    rc = prepare(s,
                 "SELECT line, custom_id, body FROM requests WHERE batch_id = ? AND state = 0 AND "
                 "line > ? ORDER BY line LIMIT ?",
                 &st, what);
    co_store_pending *a = NULL;
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, after_line);
        sqlite3_bind_int(st, 3, max);
        a = calloc(max > 0 ? (size_t)max : 1, sizeof *a);
        if (!a) rc = ts_error_set(TS_E_NOMEM, "out of memory");
        int r = SQLITE_DONE;
        while (!rc && *n < max && (r = sqlite3_step(st)) == SQLITE_ROW) {
            co_store_pending *p = &a[(*n)++];
            p->line = sqlite3_column_int64(st, 0);
            p->custom_id = dup_col(st, 1);
            p->body = dup_col(st, 2);
            if (!p->custom_id || !p->body) rc = ts_error_set(TS_E_NOMEM, "out of memory");
        }
        if (!rc && r != SQLITE_ROW && r != SQLITE_DONE) rc = db_error(s, r, what);
        sqlite3_finalize(st);
    }
    if (rc) {
        co_store_pending_free(a, *n);
        a = NULL;
        *n = 0;
    }
    *out = a;
    return end(s, rc, what);
}

void co_store_pending_free(co_store_pending *p, int n) {
    for (int i = 0; p && i < n; i++) {
        free(p[i].custom_id);
        free(p[i].body);
    }
    free(p);
}

int co_store_batch_n_pending(co_store *s, const char *id, int64_t *n) {
    const char *what = "counting the batch's requests";
    int rc = begin(s, what);
    if (rc) return rc;
    sqlite3_stmt *st;
    rc = prepare(s, "SELECT count(*) FROM requests WHERE batch_id = ? AND state = 0", &st, what);
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW)
            *n = sqlite3_column_int64(st, 0);
        else
            rc = db_error(s, r, what);
        sqlite3_finalize(st);
    }
    return end(s, rc, what);
}

int co_store_results(co_store *s, const co_store_result *res, size_t n) {
    const char *what = "recording results";
    if (!n) return TS_OK;
    int rc = begin(s, what);
    if (rc) return rc;
    sqlite3_stmt *up = NULL, *count = NULL;
    rc = prepare(s,
                 "UPDATE requests SET state = ?, out_line = ? WHERE batch_id = ? AND line = ? AND "
                 "state = 0",
                 &up, what);
    if (!rc)
        rc = prepare(s,
                     "UPDATE batches SET completed = completed + ?, failed = failed + ?,"
                     " prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + "
                     "?, cached_tokens = cached_tokens + ? WHERE id = ?",
                     &count, what);
    for (size_t i = 0; !rc && i < n; i++) {
        const co_store_result *r = &res[i];
        sqlite3_reset(up);
        sqlite3_bind_int(up, 1, r->ok ? 1 : 2);
        sqlite3_bind_text(up, 2, r->line_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(up, 3, r->batch_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(up, 4, r->line);
        int x = sqlite3_step(up);
        if (x != SQLITE_DONE) {
            rc = db_error(s, x, what);
            break;
        }
        if (sqlite3_changes(s->db) == 0) continue; /* recorded before */
        sqlite3_reset(count);
        sqlite3_bind_int(count, 1, r->ok ? 1 : 0);
        sqlite3_bind_int(count, 2, r->ok ? 0 : 1);
        sqlite3_bind_int64(count, 3, r->prompt_tokens);
        sqlite3_bind_int64(count, 4, r->completion_tokens);
        sqlite3_bind_int64(count, 5, r->cached_tokens);
        sqlite3_bind_text(count, 6, r->batch_id, -1, SQLITE_STATIC);
        x = sqlite3_step(count);
        if (x != SQLITE_DONE) rc = db_error(s, x, what);
    }
    if (up) sqlite3_finalize(up);
    if (count) sqlite3_finalize(count);
    return end(s, rc, what);
}

/* One output line of a request that never got a result. */
static int unfinished_line(ts_buf *out, const char *batch_id, int64_t line, const char *custom_id,
                           const char *code, const char *message) {
    char rid[80];
    snprintf(rid, sizeof rid, "batch_req_%s_%lld", batch_id + 6, (long long)line);
    ts_json_writer w;
    ts_buf b = {0};
    ts_jw_init(&w, &b);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "id");
    ts_jw_string(&w, rid);
    ts_jw_key(&w, "custom_id");
    ts_jw_string(&w, custom_id);
    ts_jw_key(&w, "response");
    ts_jw_null(&w);
    ts_jw_key(&w, "error");
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "code");
    ts_jw_string(&w, code);
    ts_jw_key(&w, "message");
    ts_jw_string(&w, message);
    ts_jw_object_end(&w);
    ts_jw_object_end(&w);
    int rc = ts_jw_finish(&w);
    if (!rc) rc = ts_buf_append(out, b.data, b.len);
    if (!rc) rc = ts_buf_append_char(out, '\n');
    ts_buf_free(&b);
    return rc ? ts_error_set(TS_E_NOMEM, "out of memory") : TS_OK;
}

int co_store_batch_finish(co_store *s, const char *id, co_batch_status final,
                          const char *unfinished_code, const char *unfinished_message) {
    const char *what = "writing the batch's output";
    int rc = begin(s, what);
    if (rc) return rc;
    ts_buf out = {0}, err = {0};
    sqlite3_stmt *st;
    rc = prepare(s,
                 "SELECT line, custom_id, state, out_line FROM requests WHERE batch_id = ? "
                 "ORDER BY line",
                 &st, what);
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int r;
        while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
            int state = sqlite3_column_int(st, 2);
            if (state == 0) {
                rc = unfinished_line(&err, id, sqlite3_column_int64(st, 0),
                                     (const char *)sqlite3_column_text(st, 1), unfinished_code,
                                     unfinished_message);
                continue;
            }
            ts_buf *to = state == 1 ? &out : &err;
            const char *l = (const char *)sqlite3_column_text(st, 3);
            if (ts_buf_append_str(to, l ? l : "{}") || ts_buf_append_char(to, '\n'))
                rc = ts_error_set(TS_E_NOMEM, "out of memory");
        }
        if (!rc && r != SQLITE_DONE) rc = db_error(s, r, what);
        sqlite3_finalize(st);
    }
    co_batch_info b;
    if (!rc) rc = get_batch(s, id, &b);
    if (!rc) {
        char name[80];
        co_file_info f;
        /* OpenAI writes an output file for any batch that ran; an error file only with errors */
        snprintf(name, sizeof name, "%s_output.jsonl", id);
        rc = insert_file(s, "batch_output", name, out.data, out.len, &f);
        if (!rc) {
            rc = set_text(s, id, "output_file_id", f.id, what);
            co_file_info_free(&f);
        }
        if (!rc && err.len) {
            snprintf(name, sizeof name, "%s_error.jsonl", id);
            rc = insert_file(s, "batch_output", name, err.data, err.len, &f);
            if (!rc) {
                rc = set_text(s, id, "error_file_id", f.id, what);
                co_file_info_free(&f);
            }
        }
        unsigned from = (1u << CO_BATCH_IN_PROGRESS) | (1u << CO_BATCH_FINALIZING) |
                        (1u << CO_BATCH_CANCELLING) | (1u << CO_BATCH_VALIDATING);
        if (!rc) rc = transition(s, id, from, final, what);
        co_batch_info_free(&b);
    }
    ts_buf_free(&out);
    ts_buf_free(&err);
    return end(s, rc, what);
}
