/*
 * rpc_throughput.c — messages/s that one client process consumes from N concurrent
 * server-streaming calls on loopback (a check, not a timed test; see docs/rpc.md).
 *
 *   rpc_throughput [--streams 64] [--messages 20000] [--payload 0] [--channels 1]
 *                  [--in-process] [--target HOST:PORT]
 *
 * By default it forks a server process (the echo test service) before initialising gRPC, so
 * client and server each have their own completion-queue thread as in production. Each stream
 * is read by its own thread with ts_rpc_stream_recv and every message is unpacked (protobuf-c)
 * and checked for order. --in-process serves from the same process (one loop thread for both
 * sides); --target uses a server that is already running.
 */
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"
#include "tests/rpc/echo_service.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct reader {
    ts_rpc_stream *s;
    pthread_t thread;
    int id, expected;
    long long received;
    int errors;
} reader;

static void *reader_main(void *p) {
    reader *r = p;
    ts_buf msg = {0};
    int seq, id;
    while (ts_rpc_stream_recv(r->s, &msg, 30000) == 1) {
        if (echo_reply_parse(&msg, NULL, 0, &seq, &id, NULL) != 0 || seq != r->received ||
            id != r->id)
            r->errors++;
        r->received++;
    }
    if (ts_rpc_stream_finish(r->s, 10000) != 0) {
        fprintf(stderr, "stream %d: %s\n", r->id, ts_error_message());
        r->errors++;
    }
    ts_buf_free(&msg);
    return NULL;
}

static int start_server(ts_rpc_server **srv, echo_service **echo) {
    ts_rpc_server_options o;
    ts_rpc_server_options_default(&o);
    o.address = "127.0.0.1:0";
    int rc = ts_rpc_server_create(&o, srv);
    if (rc == 0) rc = echo_service_create(*srv, echo);
    if (rc == 0) rc = ts_rpc_server_start(*srv);
    return rc;
}

/* A forked server process; returns its port through the pipe, serves until killed. */
static pid_t fork_server(int *port) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        ts_rpc_server *srv;
        echo_service *echo;
        if (start_server(&srv, &echo) != 0) {
            fprintf(stderr, "server: %s\n", ts_error_message());
            _exit(1);
        }
        int p = ts_rpc_server_port(srv);
        if (write(fds[1], &p, sizeof p) != (ssize_t)sizeof p) _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    if (pid < 0 || read(fds[0], port, sizeof *port) != (ssize_t)sizeof *port) {
        close(fds[0]);
        return -1;
    }
    close(fds[0]);
    return pid;
}

int main(int argc, char **argv) {
    int n_streams = 64, n_messages = 20000, payload = 0, n_channels = 1, in_process = 0;
    const char *target_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--streams") == 0 && i + 1 < argc)
            n_streams = atoi(argv[++i]);
        else if (strcmp(argv[i], "--messages") == 0 && i + 1 < argc)
            n_messages = atoi(argv[++i]);
        else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc)
            payload = atoi(argv[++i]);
        else if (strcmp(argv[i], "--channels") == 0 && i + 1 < argc)
            n_channels = atoi(argv[++i]);
        else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc)
            target_arg = argv[++i];
        else if (strcmp(argv[i], "--in-process") == 0)
            in_process = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--streams N] [--messages N] [--payload BYTES] "
                    "[--channels N] [--in-process] [--target HOST:PORT]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n_streams < 1 || n_messages < 1 || n_channels < 1 || payload < 0) {
        fprintf(stderr, "rpc_throughput: counts must be positive\n");
        return 2;
    }
    ts_log_init("rpc-throughput");

    char target[128];
    pid_t child = 0;
    ts_rpc_server *srv = NULL;
    echo_service *echo = NULL;
    if (target_arg) {
        snprintf(target, sizeof target, "%s", target_arg);
    } else if (in_process) {
        if (start_server(&srv, &echo) != 0) {
            fprintf(stderr, "rpc_throughput: %s\n", ts_error_message());
            return 1;
        }
        snprintf(target, sizeof target, "127.0.0.1:%d", ts_rpc_server_port(srv));
    } else {
        int port;
        child = fork_server(&port);
        if (child < 0) {
            fprintf(stderr, "rpc_throughput: cannot start the server process\n");
            return 1;
        }
        snprintf(target, sizeof target, "127.0.0.1:%d", port);
    }

    ts_rpc_channel_options co;
    ts_rpc_channel_options_default(&co);
    co.own_connection = n_channels > 1;
    ts_rpc_channel **channels = calloc((size_t)n_channels, sizeof *channels);
    reader *readers = calloc((size_t)n_streams, sizeof *readers);
    for (int c = 0; c < n_channels; c++)
        if (ts_rpc_channel_create(target, &co, &channels[c]) != 0) {
            fprintf(stderr, "rpc_throughput: %s\n", ts_error_message());
            return 1;
        }

    /* Warm up the connection(s) so that connecting is not timed. */
    ts_buf req = {0}, reply = {0};
    for (int c = 0; c < n_channels; c++)
        if (ts_rpc_unary(channels[c], "/tessera.test.Echo/Echo", "", 0, 10000, &reply) != 0) {
            fprintf(stderr, "rpc_throughput: %s\n", ts_error_message());
            return 1;
        }

    int64_t t0 = ts_now_ns();
    for (int i = 0; i < n_streams; i++) {
        reader *r = &readers[i];
        r->id = i;
        r->expected = n_messages;
        echo_request_pack(&req, "", n_messages, 0, payload, i);
        if (ts_rpc_stream_open_request(channels[i % n_channels], "/tessera.test.Echo/Count",
                                       req.data, req.len, 600000, &r->s) != 0) {
            fprintf(stderr, "rpc_throughput: %s\n", ts_error_message());
            return 1;
        }
        pthread_create(&r->thread, NULL, reader_main, r);
    }
    long long total = 0;
    int errors = 0;
    for (int i = 0; i < n_streams; i++) {
        pthread_join(readers[i].thread, NULL);
        total += readers[i].received;
        errors += readers[i].errors;
        ts_rpc_stream_destroy(readers[i].s);
    }
    double secs = ts_ns_to_s(ts_now_ns() - t0);

    printf("rpc_throughput: %d streams x %d messages (payload %d B), %d channel(s), server %s\n",
           n_streams, n_messages, payload, n_channels,
           target_arg   ? target
           : in_process ? "in this process"
                        : "in a child process");
    printf("rpc_throughput: %lld messages in %.2f s = %.0f messages/s, %d errors\n", total, secs,
           (double)total / secs, errors);

    for (int c = 0; c < n_channels; c++)
        ts_rpc_channel_destroy(channels[c]);
    free(channels);
    free(readers);
    ts_buf_free(&req);
    ts_buf_free(&reply);
    if (srv) {
        ts_rpc_server_shutdown(srv, 1000);
        echo_service_destroy(echo);
        ts_rpc_server_destroy(srv);
    }
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    return errors == 0 && total == (long long)n_streams * n_messages ? 0 : 1;
}
