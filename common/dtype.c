/* dtype.c — see dtype.h. */
#include "common/dtype.h"

#include "common/error.h"

#include <strings.h>

int ts_dtype_block_elems(ts_dtype t) {
    switch (t) {
    case TS_DTYPE_F32: case TS_DTYPE_F16: case TS_DTYPE_BF16: return 1;
    case TS_DTYPE_Q8_0: case TS_DTYPE_Q4_0: return TS_QK;
    }
    return 0;
}

int ts_dtype_block_bytes(ts_dtype t) {
    switch (t) {
    case TS_DTYPE_F32: return 4;
    case TS_DTYPE_F16: case TS_DTYPE_BF16: return 2;
    case TS_DTYPE_Q8_0: return (int)sizeof(ts_block_q8_0);
    case TS_DTYPE_Q4_0: return (int)sizeof(ts_block_q4_0);
    }
    return 0;
}

int ts_dtype_is_known(uint32_t t) { return ts_dtype_block_elems((ts_dtype)t) != 0; }

const char *ts_dtype_name(ts_dtype t) {
    switch (t) {
    case TS_DTYPE_F32: return "f32";
    case TS_DTYPE_F16: return "f16";
    case TS_DTYPE_BF16: return "bf16";
    case TS_DTYPE_Q8_0: return "q8_0";
    case TS_DTYPE_Q4_0: return "q4_0";
    }
    return "unknown";
}

int ts_dtype_parse(const char *name, ts_dtype *out) {
    static const ts_dtype all[] = {TS_DTYPE_F32, TS_DTYPE_F16, TS_DTYPE_BF16, TS_DTYPE_Q8_0,
                                   TS_DTYPE_Q4_0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcasecmp(name, ts_dtype_name(all[i])) == 0) {
            *out = all[i];
            return TS_OK;
        }
    }
    return ts_error_set(TS_E_INVALID, "unknown type '%s' (expected f32, f16, bf16, q8_0 or q4_0)",
                        name);
}

size_t ts_dtype_row_bytes(ts_dtype t, int64_t n) {
    int be = ts_dtype_block_elems(t);
    if (be == 0 || n < 0 || n % be != 0) return 0;
    return (size_t)(n / be) * (size_t)ts_dtype_block_bytes(t);
}
