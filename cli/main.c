/*
 * main.c — `tessera`: the command-line entry point. It only dispatches to a subcommand
 * (cli/cmd_*.c); each subcommand parses its own flags with common/flags.h.
 */
#include "cli/commands.h"
#include "common/error.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

/* Add a subcommand here and its source file to cli/CMakeLists.txt. */
static const command commands[] = {
    {"model", ts_cmd_model, "inspect a model file, or write a synthetic one for benchmarks"},
    {"generate", ts_cmd_generate, "generate a completion (locally, or under mpirun as a TP group)"},
    {"bench-engine", ts_cmd_bench_engine, "measure prefill/decode speed against the machine's roofline"},
    {"perplexity", ts_cmd_perplexity, "a model's perplexity on a text, as llama-perplexity computes it"},
    {"tokenize", ts_cmd_tokenize, "print the token ids of a text"},
    {"template", ts_cmd_template, "print the prompt a chat template makes of JSON messages"},
    {"chat", ts_cmd_chat, "chat with a local model (its chat template, one message per line)"},
    {"topology", ts_cmd_topology, "show hosts, devices and the Slurm job; check a placement plan"},
    {"bench", ts_cmd_bench, "load a cluster (--server) with concurrent streams: TTFT, latency, tokens/s"},
    {"up", ts_cmd_up, "start a local cluster (coordinator + node groups) in the foreground"},
    {"batch", ts_cmd_batch, "batch jobs on a cluster's HTTP API: submit, status, list, cancel, results"},
};

int ts_cli_fail(const char *cmd, int exit_code) {
    fprintf(stderr, "tessera %s: %s\n", cmd, ts_error_message());
    return exit_code;
}

int ts_cli_exit_code(int ts_error_code) {
    return (ts_error_code == TS_E_INVALID || ts_error_code == TS_E_IO) ? TS_EXIT_USAGE
                                                                       : TS_EXIT_FAILURE;
}

int ts_cli_sibling_path(const char *name, char *out, size_t size) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return ts_error_set(TS_E_IO, "cannot find the tessera executable's directory");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    if ((size_t)snprintf(out, size, "%s/%s", self, name) >= size)
        return ts_error_set(TS_E_IO, "%s/%s: path too long", self, name);
    if (access(out, X_OK) != 0)
        return ts_error_set(TS_E_IO, "%s must be next to tessera in %s", name, self);
    return TS_OK;
}

static void usage(FILE *out) {
    fprintf(out, "usage: tessera COMMAND [flags]   (tessera COMMAND --help for its flags)\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    ts_log_init("tessera");
    if (argc < 2) {
        usage(stderr);
        return TS_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return TS_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tessera: unknown command '%s' (see tessera --help)\n", argv[1]);
    return TS_EXIT_USAGE;
}
