/*
 * kv_transfer_net.h — private to the KV transfer: TCP sockets with deadlines and the status
 * message (kv_transfer_tcp.c). Every call fails with a TS_E_* code and a message naming the
 * peer; nothing raises SIGPIPE.
 */
#ifndef TS_NODE_KV_TRANSFER_NET_H
#define TS_NODE_KV_TRANSFER_NET_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Splits "host:port" (host may be "[v6]"); TS_E_INVALID for a malformed text. */
int kvx_split_endpoint(const char *text, char *host, size_t host_size, int *port);
/* Binds and listens (non-blocking socket); *port receives the bound port. */
int kvx_listen(const char *endpoint, int *fd, char *host, size_t host_size, int *port);
/* Connects within timeout_ms; the socket is blocking, with TCP_NODELAY. */
int kvx_connect(const char *endpoint, int timeout_ms, int *fd);
/* Writes / reads exactly n bytes, each waiting at most timeout_ms for progress. */
int kvx_write_all(int fd, const void *buf, size_t n, int timeout_ms, const char *peer);
int kvx_read_all(int fd, void *buf, size_t n, int timeout_ms, const char *peer);

/* CLOCK_REALTIME now + wait_ns, for pthread_cond_timedwait. */
void kvx_timespec_after(int64_t wait_ns, struct timespec *out);

/* The status message (kv_transfer.h). encode returns its length. */
size_t kvx_status_encode(int code, const char *message, uint8_t *out, size_t out_size);
/* Reads a status from fd; *code receives the receiver's code, message its text. */
int kvx_status_read(int fd, int timeout_ms, const char *peer, int *code, char *message,
                    size_t message_size);

/* The NCCL link message (kv_transfer.h): the receiver's answer to a NCCL transfer header,
 * carrying the communicator's unique id. encode writes TS_KVX_STATUS_BYTES + id_bytes. */
size_t kvx_link_message_encode(const uint8_t *id, size_t id_bytes, uint8_t *out);
/* Reads the receiver's answer to a NCCL header: the link message (id receives the unique id,
 * *code 0), or the status refusing the header (*code its code, message its text). */
int kvx_link_message_read(int fd, int timeout_ms, const char *peer, uint8_t *id, size_t id_bytes,
                          int *code, char *message, size_t message_size);

#endif
