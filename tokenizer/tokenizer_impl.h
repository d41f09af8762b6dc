/*
 * tokenizer_impl.h — the representation of a ts_tokenizer, shared by the files of tokenizer/
 * (tokenizer.c loads it and serves the public API; spm.c and bpe.c encode). Not a public header.
 */
#ifndef TS_TOKENIZER_TOKENIZER_IMPL_H
#define TS_TOKENIZER_TOKENIZER_IMPL_H

#include "tokenizer/merge.h"
#include "tokenizer/pretok.h"
#include "tokenizer/strtab.h"
#include "tokenizer/tokenizer.h"

/* token_type values of GGUF vocabularies (llama.cpp's llama_token_type). */
enum {
    TS_TOKEN_UNDEFINED = 0,
    TS_TOKEN_NORMAL = 1,
    TS_TOKEN_UNKNOWN = 2,
    TS_TOKEN_CONTROL = 3,
    TS_TOKEN_USER_DEFINED = 4,
    TS_TOKEN_UNUSED = 5,
    TS_TOKEN_BYTE = 6,
};

/* A growable id list. */
typedef struct ts_ids {
    int32_t *v;
    size_t n, cap;
} ts_ids;

int ts_ids_push(ts_ids *ids, int32_t id);

/* Byte-level BPE tables (bpe.c). Strings are interned in their byte-level alphabet form: every
 * token text, and both halves and the result of every merge, so that merging compares integers. */
typedef struct ts_bpe_pair ts_bpe_pair;
typedef struct ts_bpe {
    ts_strtab strings;
    int32_t *string_token; /* interned string → token id with that text, or -1 */
    size_t string_token_cap;
    ts_bpe_pair *pairs;             /* (left string, right string) → rank and merged string */
    size_t n_pair_slots;            /* power of two */
    int32_t byte_string[256];       /* interned id of each byte's one-character alphabet string */
    int32_t single_byte_token[256]; /* token whose text is exactly that one byte, or -1 */
    ts_pretok_kind pretok;
    bool ignore_merges; /* a word that is a token as a whole is not merged (Llama 3) */
} ts_bpe;

struct ts_tokenizer {
    ts_tokenizer_kind kind;
    int32_t n_vocab;
    char *texts;      /* token texts, each followed by a NUL */
    size_t *text_off; /* n_vocab offsets into texts */
    uint32_t *text_len;
    float *scores;  /* n_vocab (0 when the file has none) */
    uint8_t *types; /* n_vocab TS_TOKEN_* */
    char *pieces;   /* decoded bytes of each token */
    size_t *piece_off;
    uint32_t *piece_len;
    ts_strtab ids_by_text; /* text → id; for duplicate texts the last id, as llama.cpp */

    int32_t bos, eos, unk, eot, eom; /* -1 if none */
    int32_t *eog;                    /* end-of-generation ids */
    size_t n_eog, eog_cap;
    bool add_bos;
    bool add_space_prefix; /* SPM */

    int32_t *user_defined; /* user-defined tokens, longest text first: matched before splitting */
    size_t n_user_defined;

    int32_t byte_tokens[256]; /* SPM byte fallback: <0xXX>, else the one-byte token, else -1 */
    ts_bpe bpe;
};

/* Per-call scratch memory of encoding. */
typedef struct ts_encode_scratch {
    ts_merger merger;
    ts_pretok pretok;
    ts_buf text;
} ts_encode_scratch;

/* Encodes one piece of plain text (no special tokens in it) and appends the ids.
 * SPM: `space_prefix` puts the dummy-prefix space in front. 0, TS_E_NOMEM or TS_E_INVALID. */
int ts_spm_encode(const ts_tokenizer *t, const char *text, size_t len, bool space_prefix,
                  ts_encode_scratch *s, ts_ids *out);
int ts_bpe_encode(const ts_tokenizer *t, const char *text, size_t len, ts_encode_scratch *s,
                  ts_ids *out);

/* Reads `tokenizer.ggml.merges` and builds t->bpe (t's vocabulary is loaded). TS_E_FORMAT naming
 * the file and key on a bad merge. */
int ts_bpe_load(ts_tokenizer *t, const ts_gguf *g);
void ts_bpe_free(ts_bpe *b);

#endif
