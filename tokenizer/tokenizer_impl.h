/*
 * tokenizer_impl.h — the representation of a ts_tokenizer, shared by the files of tokenizer/
 * (vocab_gguf.c reads a GGUF vocabulary into it and vocab.c finishes it; tokenizer.c serves the
 * public API; spm.c and bpe.c encode). Not a public header.
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
    /* SentencePiece-style BPE (merges over UTF-8 characters, tokenizer.json): a character that
     * is no token becomes its <0xXX> tokens with byte_fallback, else the unknown token (one for
     * a run of them with fuse_unk). */
    bool byte_fallback, fuse_unk;
} ts_bpe;

/* Where SentencePiece-style encoding puts the dummy-prefix "▁" (when add_space_prefix):
 * ALWAYS in front of every text fragment (llama.cpp; tokenizer.json's Prepend normalizer);
 * UNLESS_SPACE in front of every fragment that does not start with a space, FIRST_UNLESS_SPACE
 * only in front of the fragment that starts the text (tokenizer.json's Metaspace with
 * prepend_scheme "always" / "first"). */
typedef enum {
    TS_SPM_PREFIX_ALWAYS = 0,
    TS_SPM_PREFIX_UNLESS_SPACE,
    TS_SPM_PREFIX_FIRST_UNLESS_SPACE,
    TS_SPM_PREFIX_NONE,
} ts_spm_prefix;

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
    /* Fill-in-the-middle tokens (-1 if none); pad, repo and file separator end generation. */
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    int32_t *eog; /* end-of-generation ids, ascending */
    size_t n_eog, eog_cap;
    bool add_bos;
    bool add_space_prefix; /* SPM */
    ts_spm_prefix spm_prefix;
    bool spm_merges;     /* SPM encoded by the merges in bpe (tokenizer.json), not by scores */
    bool nfc;            /* text fragments are normalized to NFC first (tokenizer.json) */
    char *chat_template; /* NULL if none */

    /* Tokens matched in the text before splitting (control, user-defined and unknown ones),
     * longest text first. Control and unknown ones only when special tokens are parsed. */
    int32_t *specials;
    size_t n_specials;

    int32_t byte_tokens[256]; /* SPM byte fallback: <0xXX>, else the one-byte token, else -1 */
    ts_bpe bpe;
};

/* Per-call scratch memory of encoding. */
typedef struct ts_encode_scratch {
    ts_merger merger;
    ts_pretok pretok;
    ts_buf text;
    ts_buf normalized;
} ts_encode_scratch;

/* Encodes one piece of plain text (no special tokens in it) and appends the ids.
 * SPM: `space_prefix` puts the dummy-prefix space in front. 0, TS_E_NOMEM or TS_E_INVALID. */
int ts_spm_encode(const ts_tokenizer *t, const char *text, size_t len, bool space_prefix,
                  ts_encode_scratch *s, ts_ids *out);
int ts_bpe_encode(const ts_tokenizer *t, const char *text, size_t len, ts_encode_scratch *s,
                  ts_ids *out);
/* SentencePiece-style BPE by merges (t->spm_merges): the escaped text is one word, merged by rank
 * over its UTF-8 characters. */
int ts_bpe_encode_spm(const ts_tokenizer *t, const char *text, size_t len, bool space_prefix,
                      ts_encode_scratch *s, ts_ids *out);
/* SentencePiece's escaping, into out: an optional "▁" prefix, then every ' ' written "▁". */
int ts_spm_escape(ts_buf *out, const char *text, size_t len, bool space_prefix);

/* The merges of a byte-level BPE vocabulary, from whichever file: merge(ctx, i, ...) gives the
 * two halves of merge i (rank i), as strings of the vocabulary's alphabet. `source` names the
 * merges in errors ("FILE: key 'tokenizer.ggml.merges'"). */
typedef struct ts_merge_list {
    size_t n;
    void (*merge)(const void *ctx, size_t i, const char **left, size_t *n_left, const char **right,
                  size_t *n_right);
    const void *ctx;
    const char *source;
} ts_merge_list;

/* Builds t->bpe from the merges (t's vocabulary is loaded). TS_E_FORMAT naming the source on an
 * empty half. */
int ts_bpe_load(ts_tokenizer *t, const ts_merge_list *merges);
void ts_bpe_free(ts_bpe *b);

/* ---- building a vocabulary (vocab.c), for the readers of each file format ---- */

/* Allocates room for n tokens whose texts take `text_bytes` bytes in all, with every special id
 * set to -1. TS_E_NOMEM. */
int ts_vocab_alloc(ts_tokenizer *t, int32_t n, size_t text_bytes);
/* Sets token i (each i once, in increasing order). Empty texts are never looked up. */
int ts_vocab_set(ts_tokenizer *t, int32_t i, const char *text, size_t len, float score,
                 uint8_t type);
/* Once the tokens, special ids and flags are set: finds the special tokens that llama.cpp finds
 * by their text, the end-of-generation set, the pieces, and the tokens matched before splitting;
 * with llama_cpp_types, changes token types as llama.cpp does (see vocab.c). `source` names the
 * file in errors. */
int ts_vocab_finish(ts_tokenizer *t, const char *source, bool llama_cpp_types);
/* The byte of a "<0xXX>" token text, or -1. */
int ts_vocab_byte_token_value(const char *s, size_t n);

#endif
