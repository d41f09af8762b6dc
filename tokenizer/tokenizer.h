/*
 * tokenizer.h — text ↔ token ids, built from GGUF metadata.
 *
 * Two algorithms, chosen by `tokenizer.ggml.model`:
 *   "llama" — SentencePiece-style BPE over `tokenizer.ggml.tokens` / `.scores` / `.token_type`:
 *             spaces become U+2581, a dummy-prefix space is added in front of the text
 *             (`tokenizer.ggml.add_space_prefix`, default true), pieces are merged greedily by
 *             score, and characters without a piece fall back to byte tokens <0xXX>.
 *   "gpt2"  — byte-level BPE: a pre-tokenizer splits the text into words (tokenizer/pretok.h),
 *             each word is mapped to the byte-to-unicode alphabet and merged by rank from
 *             `tokenizer.ggml.merges`. The pre-tokenizer is chosen by `tokenizer.ggml.pre` as
 *             llama.cpp chooses it: "gpt-2" (GPT-2's regex), "llama-bpe" / "llama3" (Llama 3's,
 *             whole-word tokens not merged, BOS added), "qwen2" (Qwen 2's), "smollm" (digits
 *             one by one, then GPT-2's), "default" or none (llama.cpp's default chain), and the
 *             other names llama.cpp maps to those (vocab_gguf.c lists them); any other name is
 *             TS_E_UNSUPPORTED, naming it and the supported ones.
 * Ids match llama.cpp's tokenizer for the same vocabulary exactly (tests/data vectors).
 *
 * Special tokens written in the text: before splitting, the text of every control, user-defined
 * and unknown token is looked for, longest token first (llama.cpp's rule). User-defined tokens
 * (token_type 4) are always taken out as their id; control and unknown ones (<|im_start|>, <s>,
 * <unk>, ...) only when the caller asks to parse special tokens (a trusted prompt, such as a
 * rendered chat template), and otherwise stay text. Some tokens are made control tokens by their
 * text, as llama.cpp does (see vocab.c).
 *
 * End of generation: EOS, EOT, EOM, the fill-in-the-middle pad / repo / file-separator tokens, and
 * every token with an end-of-turn text (<|im_end|>, <|endoftext|>, <|eot_id|>, <|end_of_text|>,
 * <end_of_turn>, ...), found as llama.cpp finds them (vocab.c).
 *
 * Decoding: ts_tokenizer_piece gives the bytes of one token (byte tokens give their byte, U+2581
 * gives a space, control tokens give nothing). A token may end in the middle of a UTF-8
 * character; ts_detok buffers such bytes and emits only complete characters, so streamed text is
 * always valid UTF-8 and the concatenation of all emitted text equals the full decode
 * (ts_tokenizer_decode without strip_prefix) whenever that is valid UTF-8.
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

/* Builds the tokenizer of a GGUF file. Errors name the file and the key:
 *   TS_E_NOT_FOUND   the file has no tokenizer (no `tokenizer.ggml.model`);
 *   TS_E_UNSUPPORTED another tokenizer model, or an unknown `tokenizer.ggml.pre`;
 *   TS_E_FORMAT      broken metadata: missing or empty tokens array, scores or token types whose
 *                    length differs from the token count, a token type outside 0..6, a byte token
 *                    not written <0xXX>, a merge that is not "LEFT RIGHT", a missing merges array
 *                    (gpt2), a special token id outside the vocabulary, a key of the wrong type.
 * Special ids (bos/eos/unknown/eot/eom_token_id) of -1 or 0xFFFFFFFF mean "none". */
int ts_tokenizer_from_gguf(const ts_gguf *g, ts_tokenizer **out);

/* Builds the tokenizer of a Hugging Face model directory: DIR/tokenizer.json (a BPE model,
 * byte-level as GPT-2 / SmolLM2 / Qwen 2 / Llama 3, or SentencePiece-style with byte fallback as
 * Llama 2 / Mistral), with DIR/tokenizer_config.json (bos/eos/unk tokens, add_bos_token,
 * chat_template), DIR/config.json (vocab_size, bos/eos ids) and DIR/chat_template.jinja when
 * present (details in vocab_hf.c). The ids are those of the `tokenizers` package, and those of
 * the GGUF llama.cpp converts from the same directory, except where the package normalizes
 * (NFC) and llama.cpp does not. Errors name the file and the part:
 *   TS_E_IO          no DIR/tokenizer.json, or a file that cannot be read;
 *   TS_E_UNSUPPORTED a model other than BPE, a normalizer, pre-tokenizer, decoder or post-
 *                    processor outside those layouts, added tokens with lstrip/rstrip/single_word;
 *   TS_E_FORMAT      not JSON, a missing vocabulary or merges, ids that collide or leave a gap,
 *                    a merge of strings that are not tokens, special tokens not in the vocabulary.
 */
int ts_tokenizer_from_hf(const char *dir, ts_tokenizer **out);
/* The tokenizer of a model path as the runtime opened it (model/hf.h): ts_tokenizer_from_hf for
 * a Hugging Face checkpoint directory, ts_tokenizer_from_gguf(g) for a GGUF file. */
int ts_tokenizer_for_model(const char *model_path, const ts_gguf *g, ts_tokenizer **out);
void ts_tokenizer_destroy(ts_tokenizer *t);

ts_tokenizer_kind ts_tokenizer_get_kind(const ts_tokenizer *t);
int32_t ts_tokenizer_n_vocab(const ts_tokenizer *t);
int32_t ts_tokenizer_bos(const ts_tokenizer *t); /* -1 if none */
int32_t ts_tokenizer_eos(const ts_tokenizer *t); /* -1 if none */
/* Whether the token ends generation (see "End of generation" above). */
bool ts_tokenizer_is_eog(const ts_tokenizer *t, int32_t id);
/* Every end-of-generation id, ascending; *n receives their count (0 only for a vocabulary with
 * none). The array belongs to the tokenizer and lives as long as it does. */
const int32_t *ts_tokenizer_eog_ids(const ts_tokenizer *t, size_t *n);
/* Whether `add_bos` should default to true for this vocabulary (`tokenizer.ggml.add_bos_token`). */
bool ts_tokenizer_adds_bos(const ts_tokenizer *t);
/* The model's chat template (Jinja source, `tokenizer.chat_template`), NUL-terminated; NULL if the
 * file has none. Lives as long as the tokenizer. */
const char *ts_tokenizer_chat_template(const ts_tokenizer *t);

/* Encodes `len` bytes of text (need not be NUL-terminated; invalid UTF-8 is encoded byte by byte,
 * never refused). With add_bos, BOS (if the vocabulary has one) comes first; an empty text gives
 * no other id. With parse_special, the text of control and unknown tokens becomes their id; never
 * set it for text a user wrote (see "Special tokens" above). Appends the ids to *ids (realloc'd;
 * *ids may be NULL with *n_ids == 0) and updates *n_ids; on failure *ids and *n_ids are
 * unchanged. O(n log n) in the text length.
 * Returns 0, TS_E_NOMEM, or TS_E_INVALID for a text of more than 2^31 characters.
 * Ill-formed UTF-8: SPM gives the same ids as llama.cpp (byte tokens); byte-level BPE keeps the
 * bytes (llama.cpp replaces them with U+FFFD first, so its ids differ there). */
int ts_tokenizer_encode(const ts_tokenizer *t, const char *text, size_t len, bool add_bos,
                        bool parse_special, int32_t **ids, size_t *n_ids);

/* As ts_tokenizer_encode with parse_special, but a control or unknown token is taken only where
 * none of its bytes is marked in `untrusted` (one byte per text byte, non-zero: untrusted; NULL:
 * all trusted): a rendered chat prompt, whose message contents stay text (chat/chat.h). The text
 * between tokens is encoded whole, marked or not, so where no special-token text is marked the
 * ids equal those of parse_special over the whole text. */
int ts_tokenizer_encode_trusted(const ts_tokenizer *t, const char *text, size_t len,
                                const char *untrusted, bool add_bos, int32_t **ids,
                                size_t *n_ids);

/* The decoded bytes of one token (see above); *len receives the length. Ids out of range give
 * an empty piece. The pointer stays valid for the tokenizer's lifetime. */
const char *ts_tokenizer_piece(const ts_tokenizer *t, int32_t id, size_t *len);

/* The vocabulary string of a token as stored (e.g. "▁Once", "<0x0A>", "<s>"), for inspection;
 * "" for an id out of range. NUL-terminated (a text containing NUL bytes appears cut short). */
const char *ts_tokenizer_token_text(const ts_tokenizer *t, int32_t id);

/* Appends the text of ids[0..n) to out: the concatenation of their pieces. With strip_prefix, a
 * SentencePiece vocabulary that adds the dummy-prefix space has one leading space removed from
 * the first token (after a leading BOS), as llama.cpp's llama_detokenize with remove_special, so
 * that decode(encode(text)) == text. Returns 0 or TS_E_NOMEM. */
int ts_tokenizer_decode(const ts_tokenizer *t, const int32_t *ids, size_t n, bool strip_prefix,
                        ts_buf *out);

/* Streaming decoder state: zero-initialise. */
typedef struct ts_detok {
    char pending[8];
    int n_pending;
} ts_detok;

/* Appends the piece of `id` to the pending bytes and appends to `out` every complete UTF-8
 * character (a byte that can neither start nor continue a valid character becomes U+FFFD; one
 * U+FFFD per maximal ill-formed subpart, so the output does not depend on how the bytes were cut
 * into tokens). Returns 0 or TS_E_NOMEM. */
int ts_detok_push(ts_detok *d, const ts_tokenizer *t, int32_t id, ts_buf *out);
/* Flushes what is pending at the end of a stream (an incomplete character becomes U+FFFD). */
int ts_detok_flush(ts_detok *d, ts_buf *out);

#endif
