/* unicode.c — UTF-8 and character classes for the tokenizers (see unicode.h). */
#include "tokenizer/unicode.h"

unsigned ts_unicode_class(uint32_t cp) {
    if (cp > 0x10FFFF) return 0;
    /* Last run whose first code point is <= cp (runs[0].first == 0, so one exists). */
    unsigned lo = 0, hi = ts_unicode_n_runs;
    while (hi - lo > 1) {
        unsigned mid = lo + (hi - lo) / 2;
        if (ts_unicode_runs[mid].first <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return ts_unicode_runs[lo].cls;
}

size_t ts_unicode_lead_length(unsigned char c) {
    static const unsigned char by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                                     1, 1, 1, 1, 2, 2, 3, 4};
    return by_high_nibble[c >> 4];
}

/* Bytes GPT-2 keeps as themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. */
static int gpt2_keeps(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The others are numbered in byte order from U+0100: 0x00..0x20 (33 of them), 0x7F..0xA0 (34),
 * then 0xAD. */
uint32_t ts_gpt2_byte_to_cp(uint8_t byte) {
    if (gpt2_keeps(byte)) return byte;
    if (byte <= 0x20) return 0x100 + byte;
    if (byte <= 0xA0) return 0x100 + 33 + (byte - 0x7F);
    return 0x143; /* 0xAD */
}

int ts_gpt2_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return gpt2_keeps(cp) ? (int)cp : -1;
    if (cp < 0x100 + 33) return (int)(cp - 0x100);
    if (cp < 0x100 + 67) return (int)(cp - 0x100 - 33 + 0x7F);
    return cp == 0x143 ? 0xAD : -1;
}
