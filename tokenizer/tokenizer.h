/*
 * tokenizer.h — text ↔ token ids, built from GGUF metadata.
 *
 * Two algorithms, chosen by `tokenizer.ggml.model`:
 *   "llama" — SentencePiece-style BPE over `tokenizer.ggml.tokens` / `.scores` / `.token_type`:
 *             spaces become U+2581, a dummy-prefix space is added in front of the text
 *             (`tokenizer.ggml.add_space_prefix`, default true), pieces are merged greedily by
 *             score, and characters without a piece fall back to byte tokens <0xXX>.
 *   "gpt2"  — byte-level BPE: the GPT-2 pre-tokenizer regex splits the text, each piece is mapped
 *             to the byte-to-unicode alphabet and merged by rank from `tokenizer.ggml.merges`.
 * Ids match llama.cpp's tokenizer for the same vocabulary exactly (tests/data vectors).
 * Control tokens (BOS/EOS/...) in the text are treated as plain text, never parsed as specials.
 *
 * Decoding: ts_tokenizer_piece gives the bytes of one token (byte tokens give their byte, U+2581
 * gives a space, control tokens give nothing). A token may end in the middle of a UTF-8
 * character; ts_detok buffers such bytes and emits only complete characters, so streamed text is
 * always valid UTF-8 and the concatenation of all emitted text equals the full decode.
 *
 * A ts_tokenizer is immutable after creation and safe to use from several threads. It copies what
 * it needs from the GGUF (the file may be closed afterwards).
 */
#ifndef TS_TOKENIZER_TOKENIZER_H
#define TS_TOKENIZER_TOKENIZER_H

#include "common/buf.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_tokenizer ts_tokenizer;

typedef enum { TS_TOKENIZER_SPM = 1, TS_TOKENIZER_BPE = 2 } ts_tokenizer_kind;

/* TS_E_FORMAT / TS_E_NOT_FOUND / TS_E_UNSUPPORTED with the file and key named on bad metadata. */
int ts_tokenizer_from_gguf(const ts_gguf *g, ts_tokenizer **out);
void ts_tokenizer_destroy(ts_tokenizer *t);

ts_tokenizer_kind ts_tokenizer_get_kind(const ts_tokenizer *t);
int32_t ts_tokenizer_n_vocab(const ts_tokenizer *t);
int32_t ts_tokenizer_bos(const ts_tokenizer *t); /* -1 if none */
int32_t ts_tokenizer_eos(const ts_tokenizer *t); /* -1 if none */
/* End of generation: EOS, or another end-of-turn token the vocabulary marks (e.g. <|eot_id|>). */
bool ts_tokenizer_is_eog(const ts_tokenizer *t, int32_t id);
/* Whether `add_bos` should default to true for this vocabulary (`tokenizer.ggml.add_bos_token`). */
bool ts_tokenizer_adds_bos(const ts_tokenizer *t);

/* Encodes `len` bytes of text (need not be NUL-terminated; invalid UTF-8 is encoded byte by byte,
 * never refused). Appends the ids to *ids (realloc'd; *ids may be NULL with *n_ids == 0) and
 * updates *n_ids. Returns 0 or TS_E_NOMEM. */
int ts_tokenizer_encode(const ts_tokenizer *t, const char *text, size_t len, bool add_bos,
                        int32_t **ids, size_t *n_ids);

/* The decoded bytes of one token (see above); *len receives the length. Ids out of range give
 * an empty piece. The pointer stays valid for the tokenizer's lifetime. */
const char *ts_tokenizer_piece(const ts_tokenizer *t, int32_t id, size_t *len);

/* The vocabulary string of a token as stored (e.g. "▁Once", "<0x0A>", "<s>"), for inspection. */
const char *ts_tokenizer_token_text(const ts_tokenizer *t, int32_t id);

/* Streaming decoder state: zero-initialise. */
typedef struct ts_detok {
    char pending[8];
    int n_pending;
} ts_detok;

/* Appends the piece of `id` to the pending bytes and appends to `out` every complete UTF-8
 * character (a byte that can neither start nor continue a valid character becomes U+FFFD).
 * Returns 0 or TS_E_NOMEM. */
int ts_detok_push(ts_detok *d, const ts_tokenizer *t, int32_t id, ts_buf *out);
/* Flushes what is pending at the end of a stream (an incomplete character becomes U+FFFD). */
int ts_detok_flush(ts_detok *d, ts_buf *out);

#endif
