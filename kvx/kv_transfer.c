/*
 * kv_transfer.c — the parts of the KV transfer both sides share: CRC32C, the model fingerprint
 * and the wire encoding (see kv_transfer.h for the format). The sender is in
 * kv_transfer_send.c, the receiver in kv_transfer_recv.c, the socket plumbing in
 * kv_transfer_tcp.c.
 */
#include "kvx/kv_transfer.h"

#include "common/error.h"
#include "common/kv_geometry.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

enum {
    HEADER_MAGIC = 0x58564b54, /* "TKVX" */
    FRAME_MAGIC = 0x46564b54,  /* "TKVF" */
};

/* ------------------------------------------------------------------ CRC32C */

/* Slicing-by-8 tables of the reflected Castagnoli polynomial, built once. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t ts_crc32c_portable(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data,
                                                               size_t n) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
#endif

uint32_t ts_crc32c(uint32_t crc, const void *data, size_t n) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return crc32c_sse42(crc, data, n);
#endif
    return ts_crc32c_portable(crc, data, n);
}

/* ------------------------------------------------------------------ NCCL payload checksum */

/* The value of `part` bytes as words numbered from `index0`, the last one zero-padded. */
static uint64_t sum_part(const uint8_t *p, size_t part, uint64_t index0) {
    uint64_t sum = 0;
    for (size_t i = 0; i < part; i += 4) {
        uint32_t w = 0;
        for (size_t b = 0; b < 4 && i + b < part; b++)
            w |= (uint32_t)p[i + b] << (8 * b);
        sum += ts_kvx_sum_term(index0 + i / 4, w);
    }
    return sum;
}

uint32_t ts_kvx_sum_fold(uint64_t sum) {
    return (uint32_t)sum ^ (uint32_t)(sum >> 32);
}

uint32_t ts_kvx_payload_sum(const void *k, const void *v, size_t part) {
    uint64_t words = (part + 3) / 4;
    return ts_kvx_sum_fold(sum_part(k, part, 0) + sum_part(v, part, words));
}

/* ------------------------------------------------------------------ transports */

const char *ts_kvx_transport_name(ts_kvx_transport t) {
    return t == TS_KVX_NCCL ? "nccl" : t == TS_KVX_TCP ? "tcp" : "unknown";
}

int ts_kvx_transport_parse(const char *text, ts_kvx_transport *out) {
    if (text && !strcasecmp(text, "tcp")) {
        *out = TS_KVX_TCP;
        return TS_OK;
    }
    if (text && !strcasecmp(text, "nccl")) {
        *out = TS_KVX_NCCL;
        return TS_OK;
    }
    return ts_error_set(TS_E_INVALID, "KV transport '%s': expected tcp or nccl",
                        text ? text : "(none)");
}

int ts_kvx_transport_from_flags(const char *text, const char *device, ts_kvx_transport *out) {
    int rc = ts_kvx_transport_parse(text, out);
    if (rc || *out != TS_KVX_NCCL) return rc;
    long index = 0;
    const int cuda = device ? ts_backend_cuda_index(device, &index) : 0;
    if (cuda < 0) return cuda;
    if (!cuda)
        return ts_error_set(TS_E_INVALID,
                            "--kv-transport nccl moves KV blocks between GPUs: it needs --device "
                            "cuda (got %s)",
                            device ? device : "the default, cpu");
    return ts_kvx_nccl_supported(NULL);
}

int ts_kvx_nccl_supported(const ts_engine *e) {
#if defined(TESSERA_HAVE_CUDA)
    const ts_backend *be = e ? ts_engine_backend(e) : NULL;
    if (be && !be->device_stream)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "the NCCL KV transport needs the KV cache on a CUDA device; this "
                            "node runs on %s (start it with --device cuda)",
                            be->name);
    return TS_OK;
#else
    (void)e;
    return ts_error_set(TS_E_UNSUPPORTED,
                        "the NCCL KV transport needs a build with CUDA and NCCL; this one has "
                        "none (nvcc was not found when it was configured)");
#endif
}

/* ------------------------------------------------------------------ wire encoding */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) {
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

void ts_kvx_header_encode(const ts_kvx_header *h, uint8_t out[TS_KVX_HEADER_BYTES]) {
    memset(out, 0, TS_KVX_HEADER_BYTES);
    put32(out, HEADER_MAGIC);
    put16(out + 4, TS_KVX_VERSION);
    put16(out + 6, TS_KVX_HEADER_BYTES);
    put64(out + 8, h->request_id);
    put64(out + 16, h->fingerprint);
    const uint32_t words[] = {h->n_layers, h->n_tokens, h->block_size, h->n_blocks,
                              h->head_dim, h->dtype,    h->kv_head0,   h->n_kv_heads};
    for (int i = 0; i < 8; i++)
        put32(out + 24 + 4 * i, words[i]);
    put16(out + 56, h->src_rank);
    put16(out + 58, h->src_size);
    put16(out + 60, h->dst_rank);
    put16(out + 62, h->dst_size);
    put16(out + 64, h->transport);
    put32(out + 68, ts_crc32c(0, out, 68));
}

int ts_kvx_header_decode(const uint8_t in[TS_KVX_HEADER_BYTES], ts_kvx_header *h) {
    if (get32(in) != HEADER_MAGIC)
        return ts_error_set(TS_E_FORMAT, "not a KV transfer (bad header magic %08x)", get32(in));
    if (get16(in + 4) != TS_KVX_VERSION || get16(in + 6) != TS_KVX_HEADER_BYTES)
        return ts_error_set(TS_E_FORMAT,
                            "KV transfer version %u (header %u bytes); this build "
                            "speaks version %d",
                            get16(in + 4), get16(in + 6), TS_KVX_VERSION);
    if (get32(in + 68) != ts_crc32c(0, in, 68))
        return ts_error_set(TS_E_FORMAT, "KV transfer header checksum mismatch");
    memset(h, 0, sizeof *h);
    h->request_id = get64(in + 8);
    h->fingerprint = get64(in + 16);
    uint32_t *words[] = {&h->n_layers, &h->n_tokens, &h->block_size, &h->n_blocks,
                         &h->head_dim, &h->dtype,    &h->kv_head0,   &h->n_kv_heads};
    for (int i = 0; i < 8; i++)
        *words[i] = get32(in + 24 + 4 * i);
    h->src_rank = get16(in + 56);
    h->src_size = get16(in + 58);
    h->dst_rank = get16(in + 60);
    h->dst_size = get16(in + 62);
    h->transport = get16(in + 64);
    if (h->transport != TS_KVX_TCP && h->transport != TS_KVX_NCCL)
        return ts_error_set(TS_E_FORMAT, "KV transfer over unknown transport %u", h->transport);
    return TS_OK;
}

void ts_kvx_frame_encode(const ts_kvx_frame *f, uint8_t out[TS_KVX_FRAME_BYTES]) {
    memset(out, 0, TS_KVX_FRAME_BYTES);
    put32(out, FRAME_MAGIC);
    put32(out + 4, f->kind);
    put32(out + 8, f->layer);
    put32(out + 12, f->block);
    put32(out + 16, f->payload_bytes);
    put32(out + 20, f->payload_crc);
    put32(out + 28, ts_crc32c(0, out, 28));
}

int ts_kvx_frame_decode(const uint8_t in[TS_KVX_FRAME_BYTES], ts_kvx_frame *f) {
    if (get32(in) != FRAME_MAGIC)
        return ts_error_set(TS_E_FORMAT, "bad KV frame magic %08x (stream out of step)", get32(in));
    if (get32(in + 28) != ts_crc32c(0, in, 28))
        return ts_error_set(TS_E_FORMAT, "KV frame header checksum mismatch");
    f->kind = get32(in + 4);
    f->layer = get32(in + 8);
    f->block = get32(in + 12);
    f->payload_bytes = get32(in + 16);
    f->payload_crc = get32(in + 20);
    if (f->kind != TS_KVX_FRAME_BLOCK && f->kind != TS_KVX_FRAME_END)
        return ts_error_set(TS_E_FORMAT, "unknown KV frame kind %u", f->kind);
    return TS_OK;
}

size_t ts_kvx_block_payload_bytes(const ts_kvx_header *h) {
    return 2 * ts_kv_block_bytes((ts_dtype)h->dtype, (int32_t)h->block_size, (int32_t)h->head_dim,
                                 (int32_t)h->n_kv_heads);
}
