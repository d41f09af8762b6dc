/*
 * batch_store.h — the coordinator's durable state: uploaded files, batch jobs, and every batch
 * request's state and result, in one SQLite database (WAL) under --state-dir DIR
 * (DIR/tessera.db, DIR/lock).
 *
 * Why SQLite: a batch job must survive kill -9 of the coordinator at any moment. Every change
 * here is one transaction, committed (synchronous=FULL) before the function returns, so after a
 * restart the database holds exactly the transitions that returned 0: a result that was being
 * written when the process died is simply not there, and its request runs again. One row per
 * (batch, line) with custom_id unique per batch is what makes "exactly one output line per
 * custom_id" a property of the schema rather than of the runner.
 *
 * The schema is versioned (PRAGMA user_version, PRAGMA application_id 'TSDB'): a database of
 * another program, a newer schema, or a corrupt file is refused at open with a message naming
 * the file and what to do. DIR/lock (flock) keeps a second coordinator off the same directory.
 *
 * Errors: TS_E_NOT_FOUND (no such file/batch), TS_E_INVALID (a transition the batch's state does
 * not allow), TS_E_IO (disk full, the quota of --state-max-size, an I/O error: the message says
 * which), TS_E_FORMAT (corrupt database), TS_E_NOMEM. The message is set (ts_error_message).
 *
 * Threads: every function takes the store's own mutex; callers must not hold co->mu (these do
 * disk I/O). Strings in the info structs are owned by the caller after a successful call
 * (co_file_info_free / co_batch_info_free).
 */
#ifndef TS_COORDINATOR_BATCH_STORE_H
#define TS_COORDINATOR_BATCH_STORE_H

#include "common/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct co_store co_store;

enum {
    CO_STORE_SCHEMA = 2,
    CO_FILE_MAX_BYTES = 200 << 20, /* POST /v1/files: OpenAI's limits for batch input */
    CO_FILE_MAX_LINES = 50000,
};

typedef struct co_file_info {
    char id[40];
    int64_t bytes, created_at;
    char *filename, *purpose;
} co_file_info;

void co_file_info_free(co_file_info *f);

/* A batch's states, in the order OpenAI names them. */
typedef enum {
    CO_BATCH_VALIDATING,
    CO_BATCH_FAILED,
    CO_BATCH_IN_PROGRESS,
    CO_BATCH_FINALIZING,
    CO_BATCH_COMPLETED,
    CO_BATCH_EXPIRED,
    CO_BATCH_CANCELLING,
    CO_BATCH_CANCELLED,
    CO_BATCH_N_STATES
} co_batch_status;

const char *co_batch_status_name(co_batch_status s); /* "validating", ... */
bool co_batch_status_final(co_batch_status s);       /* failed, completed, expired, cancelled */

typedef struct co_batch_info {
    char id[40];
    char *endpoint, *input_file_id, *completion_window;
    int64_t window_s;
    co_batch_status status;
    char output_file_id[40], error_file_id[40]; /* "" until finalized */
    char *errors;   /* JSON array of {code, message, param, line}, or NULL */
    char *metadata; /* JSON object text, or NULL */
    int64_t created_at, expires_at;
    int64_t at[CO_BATCH_N_STATES]; /* the Unix second each state was entered, 0: never */
    int64_t total, completed, failed;
    int64_t prompt_tokens, completion_tokens;
    int64_t cached_tokens; /* prompt tokens whose KV the prefix cache supplied */
} co_batch_info;

void co_batch_info_free(co_batch_info *b);

/* Opens (creating DIR and the database when absent) the state of DIR. max_bytes > 0 caps the
 * database's size (--state-max-size; beyond it writes fail as on a full disk). */
int co_store_open(const char *dir, int64_t max_bytes, co_store **out);
void co_store_close(co_store *s); /* NULL is a no-op */

/* ---- files ---- */
/* Stores the bytes as a new file. */
int co_store_file_add(co_store *s, const char *purpose, const char *filename, const void *data,
                      size_t n, co_file_info *out);
int co_store_file_get(co_store *s, const char *id, co_file_info *out);
/* Files newest first, optionally only of `purpose`, after the file `after` (pagination); at most
 * limit. *out is an array of *n (free each and the array). */
int co_store_file_list(co_store *s, const char *purpose, const char *after, int limit,
                       co_file_info **out, int *n, bool *has_more);
int co_store_file_content(co_store *s, const char *id, ts_buf *out);
int co_store_file_delete(co_store *s, const char *id);

/* ---- batches: the API's side ---- */
/* A new batch (validating). b's endpoint, input_file_id, completion_window, window_s, metadata
 * are read; *out gets the stored batch. TS_E_NOT_FOUND when the input file does not exist. */
int co_store_batch_create(co_store *s, const co_batch_info *b, co_batch_info *out);
int co_store_batch_get(co_store *s, const char *id, co_batch_info *out);
/* Batches newest first after `after`; as co_store_file_list. */
int co_store_batch_list(co_store *s, const char *after, int limit, co_batch_info **out, int *n,
                        bool *has_more);
/* validating / in_progress → cancelling (a batch already cancelling or cancelled is returned as
 * it is); TS_E_INVALID for a batch that has ended otherwise. *out: the batch after. */
int co_store_batch_cancel(co_store *s, const char *id, co_batch_info *out);

/* ---- batches: the runner's side ---- */
/* The ids of batches that are not final (the runner's work after a start), oldest first. */
int co_store_batch_active(co_store *s, char (**ids)[40], int *n);

/* One request line of a validated batch. */
typedef struct co_store_line {
    int64_t line; /* 1-based line number in the input file */
    const char *custom_id;
    const char *body; /* the JSON text of the line's body */
} co_store_line;

/* validating → in_progress with these request lines (all at once, or nothing). */
int co_store_batch_validated(co_store *s, const char *id, const co_store_line *lines, size_t n);
/* validating → failed with errors (a JSON array text). */
int co_store_batch_fail(co_store *s, const char *id, const char *errors_json);
/* in_progress → finalizing. */
int co_store_batch_finalizing(co_store *s, const char *id);

/* Up to max pending requests of a batch with line > after_line, in line order. */
typedef struct co_store_pending {
    int64_t line;
    char *custom_id, *body;
} co_store_pending;
int co_store_batch_pending(co_store *s, const char *id, int64_t after_line, int max,
                           co_store_pending **out, int *n);
void co_store_pending_free(co_store_pending *p, int n);
/* How many requests of the batch have no result yet. */
int co_store_batch_n_pending(co_store *s, const char *id, int64_t *n);

/* A request's result: `line` is the whole output line (JSON text, no newline) for the output
 * file (ok) or the error file (!ok). */
typedef struct co_store_result {
    const char *batch_id;
    int64_t line;
    bool ok;
    const char *line_json;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
} co_store_result;
/* Records results (one transaction; a result already recorded is left as it is, so nothing is
 * counted twice). */
int co_store_results(co_store *s, const co_store_result *r, size_t n);

/* Ends a batch: writes its output and error files from the recorded results (line order), and
 * moves it to `final` (completed, expired or cancelled) in the same transaction. Requests with
 * no result go to the error file with the error code `unfinished_code` (batch_expired,
 * batch_cancelled). */
int co_store_batch_finish(co_store *s, const char *id, co_batch_status final,
                          const char *unfinished_code, const char *unfinished_message);
/* Any state but final → failed with one error (the runner could not go on: a full disk ...). */
int co_store_batch_abort(co_store *s, const char *id, const char *code, const char *message);

#endif
