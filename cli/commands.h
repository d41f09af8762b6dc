/*
 * commands.h — the subcommands of the `tessera` CLI.
 *
 * Each command receives argv with argv[0] = its own name ("generate") and returns the process
 * exit code: 0 ok, 1 runtime failure, 2 usage error (bad flag, missing or unreadable path).
 * Commands print errors as one line "tessera NAME: message" on stderr (ts_cli_fail below).
 */
#ifndef TS_CLI_COMMANDS_H
#define TS_CLI_COMMANDS_H

#include <stddef.h>

int ts_cmd_model(int argc, char **argv);    /* model inspect | model synth */
int ts_cmd_tokenize(int argc, char **argv); /* tokenize -m MODEL -p TEXT [--no-bos] [--json] */
int ts_cmd_template(int argc, char **argv); /* template -m MODEL -f MESSAGES.json: the chat prompt */
int ts_cmd_chat(int argc, char **argv);     /* chat -m MODEL: a conversation, line by line */
int ts_cmd_generate(int argc, char **argv); /* generate -m MODEL -p PROMPT [-n N] [sampling] */
int ts_cmd_bench_engine(int argc, char **argv); /* bench-engine: prefill/decode speed, roofline */
int ts_cmd_perplexity(int argc, char **argv);   /* perplexity -m MODEL -f TEXT [--ctx N] */
int ts_cmd_topology(int argc, char **argv); /* topology [--plan SPEC] [--cluster FILE] [--json] */
int ts_cmd_bench(int argc, char **argv); /* bench --server HOST:PORT: load a cluster, latency */
int ts_cmd_up(int argc, char **argv);    /* up [-m MODEL] [--port P] [--tp N] [--groups G] */
int ts_cmd_batch(int argc, char **argv); /* batch submit FILE.jsonl [--wait] | status | results */

enum { TS_EXIT_OK = 0, TS_EXIT_FAILURE = 1, TS_EXIT_USAGE = 2 };

/* Prints "tessera CMD: <current error message>" to stderr and returns `exit_code`. */
int ts_cli_fail(const char *cmd, int exit_code);

/* Exit code for a TS_E code: TS_E_INVALID and TS_E_IO (bad input, unreadable path) → 2, else 1. */
int ts_cli_exit_code(int ts_error_code);

/* The path of executable `name` in the directory of the running tessera (tessera up and the
 * Slurm scripts run tessera-coordinator and tessera-node from there). TS_E_IO when it is not
 * there or not executable. */
int ts_cli_sibling_path(const char *name, char *out, size_t size);

#endif
