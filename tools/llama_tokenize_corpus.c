/*
 * llama_tokenize_corpus.c — llama.cpp's tokenizer as a reference: prints the ids llama.cpp gives
 * each text of a corpus under a GGUF vocabulary (no BOS), and its end-of-generation set.
 *
 *   llama_tokenize_corpus VOCAB.gguf CORPUS PARSE_SPECIAL   one line of ids per text
 *   llama_tokenize_corpus VOCAB.gguf --eog                  the EOG ids, one line
 *
 * CORPUS holds texts separated by lines "__ggml_vocab_test__" (llama.cpp's test layout).
 * Built by hand against libllama (see tests/data/SOURCE.md); not part of Tessera's build.
 */
#define _GNU_SOURCE
#include "llama.h"

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char *text, void *data) {
    (void)level; (void)text; (void)data;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) return 2;
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    if (!strcmp(argv[2], "--eog")) {
        for (int32_t i = 0; i < llama_vocab_n_tokens(vocab); i++)
            if (llama_vocab_is_eog(vocab, i)) printf("%d ", i);
        printf("\n");
        return 0;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (fread(text, 1, (size_t)n, f) != (size_t)n) return 1;
    text[n] = 0;
    fclose(f);
    bool parse = atoi(argv[3]) != 0;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int32_t *ids = malloc(sizeof *ids * ((size_t)n + 16));
    for (char *p = text; p <= text + n;) {
        char *e = memmem(p, (size_t)(text + n - p), sep, sizeof sep - 1);
        size_t len = e ? (size_t)(e - p) : (size_t)(text + n - p);
        int32_t k = llama_tokenize(vocab, p, (int32_t)len, ids, (int32_t)n + 16, false, parse);
        if (k < 0) return 1;
        for (int32_t i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (!e) break;
        p = e + sizeof sep - 1;
    }
    return 0;
}
