/*
 * utf8.h — decoding and encoding UTF-8, strictly by Unicode's well-formedness rules.
 *
 * Used wherever bytes from outside meet text: the JSON writer (ill-formed input becomes U+FFFD),
 * the tokenizers (pre-tokenizer classes, streaming detokenization). Pure functions, thread-safe.
 */
#ifndef TS_COMMON_UTF8_H
#define TS_COMMON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decoder results besides a code point. */
#define TS_UTF8_INVALID 0xFFFFFFFFu    /* ill-formed bytes */
#define TS_UTF8_INCOMPLETE 0xFFFFFFFEu /* a valid start cut off by the end of the input */

/* Decodes the character at s[0..len) (len > 0): no overlong forms, surrogates or values above
 * U+10FFFF. Returns the number of bytes it covers and sets *cp: the code point; or
 * TS_UTF8_INVALID and the length of the maximal ill-formed subpart (1..3 bytes, the unit that
 * Unicode replaces with one U+FFFD); or TS_UTF8_INCOMPLETE and len when the input ends inside
 * an otherwise valid character. */
size_t ts_utf8_decode(const char *s, size_t len, uint32_t *cp);

/* Writes the UTF-8 form of cp (< 0x110000) to out; returns its length (1..4). */
size_t ts_utf8_encode(uint32_t cp, char out[4]);

#endif
