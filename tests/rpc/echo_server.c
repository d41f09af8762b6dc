/*
 * echo_server.c — the echo test service as a process, for clients in other processes (the
 * Python grpcio test, the throughput check, fault tests).
 *
 *   rpc_echo_server [--address HOST:PORT] [--grace-ms N] [--max-queued N]
 *
 * Prints "port N" on stdout once serving, then serves until stdin reaches end of file (so it
 * never outlives the process that started it), shuts down with the grace period, prints the
 * service's final counters ("stats started=... done=..."), and exits 0 if the service's
 * invariants held (on_done exactly once per call, late sends failed cleanly), else 1.
 */
#include "common/error.h"
#include "common/log.h"
#include "rpc/rpc_server.h"
#include "tests/rpc/echo_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    ts_log_init("echo-server");
    ts_rpc_server_options o;
    ts_rpc_server_options_default(&o);
    o.address = "127.0.0.1:0";
    int grace_ms = 1000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--address") == 0 && i + 1 < argc)
            o.address = argv[++i];
        else if (strcmp(argv[i], "--grace-ms") == 0 && i + 1 < argc)
            grace_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-queued") == 0 && i + 1 < argc)
            o.max_queued_messages = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--address HOST:PORT] [--grace-ms N] [--max-queued N]\n",
                    argv[0]);
            return 2;
        }
    }
    ts_rpc_server *srv;
    echo_service *echo = NULL;
    int rc = ts_rpc_server_create(&o, &srv);
    if (rc == 0) rc = echo_service_create(srv, &echo);
    if (rc == 0) rc = ts_rpc_server_start(srv);
    if (rc != 0) {
        fprintf(stderr, "echo-server: %s\n", ts_error_message());
        return 1;
    }
    printf("port %d\n", ts_rpc_server_port(srv));
    fflush(stdout);

    char buf[256];
    while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
    }

    ts_rpc_server_shutdown(srv, grace_ms);
    echo_stats st;
    echo_service_stats(echo, &st);
    char line[512];
    echo_stats_format(&st, line, sizeof line);
    printf("stats %s\n", line);
    fflush(stdout);
    echo_service_destroy(echo);
    ts_rpc_server_destroy(srv);
    return st.double_done == 0 && st.late_send_other == 0 && st.started == st.done ? 0 : 1;
}
