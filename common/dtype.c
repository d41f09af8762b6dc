/* dtype.c — see dtype.h. The type table: one row per type, indexed by the GGML id. */
#include "common/dtype.h"

#include "common/error.h"

#include <stdio.h>
#include <strings.h>

#define QUANT(id, nm, elems, bytes, dot) [id] = {nm, elems, bytes, dot, 1}
static const ts_dtype_info table[TS_DTYPE_COUNT] = {
    [TS_DTYPE_F32] = {"f32", 1, 4, TS_DTYPE_F32, 1},
    [TS_DTYPE_F16] = {"f16", 1, 2, TS_DTYPE_F16, 1},
    [TS_DTYPE_BF16] = {"bf16", 1, 2, TS_DTYPE_BF16, 1},
    QUANT(TS_DTYPE_Q4_0, "q4_0", TS_QK, 18, TS_DTYPE_Q8_0),
    QUANT(TS_DTYPE_Q4_1, "q4_1", TS_QK, 20, TS_DTYPE_Q8_1),
    QUANT(TS_DTYPE_Q5_0, "q5_0", TS_QK, 22, TS_DTYPE_Q8_0),
    QUANT(TS_DTYPE_Q5_1, "q5_1", TS_QK, 24, TS_DTYPE_Q8_1),
    QUANT(TS_DTYPE_Q8_0, "q8_0", TS_QK, 34, TS_DTYPE_Q8_0),
    [TS_DTYPE_Q8_1] = {"q8_1", TS_QK, 36, TS_DTYPE_Q8_1, 0},
    QUANT(TS_DTYPE_IQ4_NL, "iq4_nl", TS_QK, 18, TS_DTYPE_Q8_0),
    QUANT(TS_DTYPE_Q2_K, "q2_K", TS_QK_K, 84, TS_DTYPE_Q8_K),
    QUANT(TS_DTYPE_Q3_K, "q3_K", TS_QK_K, 110, TS_DTYPE_Q8_K),
    QUANT(TS_DTYPE_Q4_K, "q4_K", TS_QK_K, 144, TS_DTYPE_Q8_K),
    QUANT(TS_DTYPE_Q5_K, "q5_K", TS_QK_K, 176, TS_DTYPE_Q8_K),
    QUANT(TS_DTYPE_Q6_K, "q6_K", TS_QK_K, 210, TS_DTYPE_Q8_K),
    [TS_DTYPE_Q8_K] = {"q8_K", TS_QK_K, 292, TS_DTYPE_Q8_K, 0},
};
#undef QUANT

const ts_dtype_info *ts_dtype_info_of(uint32_t t) {
    return t < TS_DTYPE_COUNT && table[t].name ? &table[t] : NULL;
}

int ts_dtype_block_elems(ts_dtype t) {
    const ts_dtype_info *i = ts_dtype_info_of((uint32_t)t);
    return i ? i->block_elems : 0;
}

int ts_dtype_block_bytes(ts_dtype t) {
    const ts_dtype_info *i = ts_dtype_info_of((uint32_t)t);
    return i ? i->block_bytes : 0;
}

int ts_dtype_is_known(uint32_t t) {
    const ts_dtype_info *i = ts_dtype_info_of(t);
    return i && i->weight;
}

int ts_dtype_is_quantized(ts_dtype t) { return ts_dtype_block_elems(t) > 1; }

const char *ts_dtype_name(ts_dtype t) {
    const ts_dtype_info *i = ts_dtype_info_of((uint32_t)t);
    return i ? i->name : "unknown";
}

void ts_dtype_list_names(char *buf, size_t size) {
    size_t len = 0;
    if (size) buf[0] = '\0';
    for (uint32_t t = 0; t < TS_DTYPE_COUNT; t++) {
        if (!ts_dtype_is_known(t)) continue;
        int w = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", table[t].name);
        if (w < 0 || (size_t)w >= size - len) return;
        len += (size_t)w;
    }
}

const char *ts_dtype_ggml_name(uint32_t id) {
    static const char *const names[] = {
        "f32",    "f16",    "q4_0",   "q4_1",  "q4_2",  "q4_3", "q5_0",  "q5_1",
        "q8_0",   "q8_1",   "q2_K",   "q3_K",  "q4_K",  "q5_K", "q6_K",  "q8_K",
        "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs",
        "i8",     "i16",    "i32",    "i64",   "f64",   "iq1_m", "bf16",  NULL,
        NULL,     NULL,     "tq1_0",  "tq2_0", NULL,    NULL,   NULL,    "mxfp4"};
    return id < sizeof names / sizeof names[0] ? names[id] : NULL;
}

int ts_dtype_parse(const char *name, ts_dtype *out) {
    for (uint32_t t = 0; t < TS_DTYPE_COUNT; t++) {
        if (ts_dtype_is_known(t) && strcasecmp(name, table[t].name) == 0) {
            *out = (ts_dtype)t;
            return TS_OK;
        }
    }
    char names[256];
    ts_dtype_list_names(names, sizeof names);
    return ts_error_set(TS_E_INVALID, "unknown type '%s' (expected one of: %s)", name, names);
}

size_t ts_dtype_row_bytes(ts_dtype t, int64_t n) {
    int be = ts_dtype_block_elems(t);
    if (be == 0 || n < 0 || n % be != 0) return 0;
    return (size_t)(n / be) * (size_t)ts_dtype_block_bytes(t);
}
