/*
 * flags.h — the one command-line and config-file parser.
 *
 * A command declares its flags as a table; each entry points at the variable that holds the
 * value, and the variable's initial content is the default (shown by --help). Accepted forms:
 *   --name VALUE, --name=VALUE, -x VALUE (short alias), --flag / --no-flag (booleans), and
 *   "--" to end options. Everything that is not an option is collected as a positional argument.
 * `--config FILE` (available on every command) reads the same keys from a file, one
 * "key = value" per line ('#' starts a comment); flags given on the command line win over the file.
 * Numeric flags are range-checked when the entry sets min < max.
 *
 * Errors: TS_E_INVALID with a one-line message naming the flag ("--top-p: must be between 0 and 1,
 * got 3"); the caller prints it and exits with code 2. --help / -h returns TS_FLAGS_HELP after
 * printing the help text to stdout; the caller then exits with 0.
 *
 * String values point into argv or into storage owned by this module for the process lifetime.
 */
#ifndef TS_COMMON_FLAGS_H
#define TS_COMMON_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    TS_FLAG_BOOL,   /* bool *            */
    TS_FLAG_INT,    /* int *             */
    TS_FLAG_INT64,  /* int64_t *         */
    TS_FLAG_DOUBLE, /* double *          */
    TS_FLAG_STRING, /* const char **     */
    TS_FLAG_SIZE,   /* size_t *, bytes; accepts suffixes K, M, G, T (powers of 1024) */
} ts_flag_type;

typedef struct ts_flag {
    const char *name;  /* long name without dashes, kebab-case: "max-tokens" */
    char short_name;   /* single-letter alias or 0 */
    ts_flag_type type;
    void *value;
    const char *help;
    double min, max;   /* inclusive numeric range, checked when min < max */
} ts_flag;

enum { TS_FLAGS_HELP = 1 };

typedef struct ts_flags_result {
    const char **positionals; /* caller-provided array */
    int max_positionals;
    int n_positionals;
} ts_flags_result;

/* Parses argv[first..argc). `usage` is the first line of --help ("tessera generate [flags]"). */
int ts_flags_parse(const char *usage, const ts_flag *flags, int n_flags, int argc, char **argv,
                   int first, ts_flags_result *result);

void ts_flags_print_help(FILE *out, const char *usage, const ts_flag *flags, int n_flags);

/* Parses a size such as "512", "64K", "2G" (powers of 1024). TS_E_INVALID on error. */
int ts_parse_size(const char *text, size_t *out);

#endif
