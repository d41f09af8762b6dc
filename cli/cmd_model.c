/*
 * cmd_model.c — `tessera model inspect | synth`.
 *
 *   tessera model inspect MODEL [--json] [--metadata]
 *       The file's GGUF header, the model's hyper-parameters (when general.architecture is one
 *       Tessera runs; such a file that does not validate is an error), every tensor's name,
 *       type, shape and size, and totals.
 *   tessera model synth --shape NAME | --dim N --layers N --heads N --kv-heads N --ff N
 *                       --vocab N --ctx N   -o OUT.gguf [--type T] [--vocab-from GGUF|none]
 *                       [--seed S] [--tied] [--arch llama|qwen2] [--rope-freqs] [--rope-linear F]
 *                       [--std F]
 *       A GGUF of a Llama-family architecture with random weights (model/synth.h). Explicit
 *       dims given with --shape override that shape's values.
 */
#include "cli/commands.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "model/gguf.h"
#include "model/hf.h"
#include "model/model.h"
#include "model/synth.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MODEL_USAGE                                                                                \
    "usage: tessera model inspect MODEL [--json] [--metadata]\n"                                 \
    "       tessera model synth --shape NAME | --dim N --layers N --heads N --kv-heads N --ff N\n" \
    "                           --vocab N --ctx N  -o OUT.gguf [--type f16|f32|bf16|q8_0|q4_0]\n"  \
    "                           [--vocab-from GGUF|none] [--seed S] [--tied]\n"                    \
    "(tessera model SUBCOMMAND --help for its flags)\n"

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_error_setv(TS_E_INVALID, fmt, ap);
    va_end(ap);
    return ts_cli_fail("model", TS_EXIT_USAGE);
}

/* Parses flags after argv[1] (the subcommand); returns -1 to go on, else the exit code. */
static int parse_flags(const char *usage, const ts_flag *flags, int n_flags, int argc, char **argv,
                       ts_flags_result *result) {
    int rc = ts_flags_parse(usage, flags, n_flags, argc, argv, 2, result);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("model", TS_EXIT_USAGE);
    return -1;
}

static void format_shape(char *buf, size_t n, const ts_gguf_tensor *t) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < t->n_dims && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%" PRId64, i ? ", " : "", t->dims[i]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

/* ---- inspect: text ---- */

/* Prints at most 60 bytes of s in quotes, control characters escaped so that a value (a chat
 * template, say) cannot break the one-line-per-key layout or drive the terminal. */
static void print_string(ts_gguf_str s) {
    putchar('"');
    for (uint64_t i = 0; i < s.len && i < 60; i++) {
        unsigned char ch = (unsigned char)s.data[i];
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    fputs(s.len > 60 ? "...\"" : "\"", stdout);
}

static void print_kv_value(const ts_gguf_kv *kv) {
    switch (kv->type) {
    case TS_GGUF_STRING: print_string(kv->value.str); break;
    case TS_GGUF_FLOAT32: case TS_GGUF_FLOAT64: printf("%g", kv->value.f64); break;
    case TS_GGUF_INT8: case TS_GGUF_INT16: case TS_GGUF_INT32: case TS_GGUF_INT64:
        printf("%" PRId64, kv->value.i64);
        break;
    case TS_GGUF_BOOL: printf("%s", kv->value.u64 ? "true" : "false"); break;
    case TS_GGUF_ARRAY:
        printf("[%" PRIu64 " x %s]", kv->n_elems, ts_gguf_type_name(kv->elem_type));
        break;
    default: printf("%" PRIu64, kv->value.u64); break;
    }
}

static void print_hparams(const ts_model_hparams *hp) {
    printf("hyper-parameters: vocab %" PRId32 ", context %" PRId32 ", dim %" PRId32
           ", layers %" PRId32 ", ff %" PRId32 ",\n  heads %" PRId32 ", kv heads %" PRId32
           ", head dim %" PRId32 ", rope dims %" PRId32 " (%s), rope theta %g, rope scale %g,\n"
           "  rms eps %g, %s\n",
           hp->n_vocab, hp->n_ctx_train, hp->dim, hp->n_layers, hp->n_ff, hp->n_heads,
           hp->n_kv_heads, hp->head_dim, hp->rope_dims,
           hp->rope_mode == TS_ROPE_NEOX ? "neox" : "normal", (double)hp->rope_theta,
           (double)hp->rope_freq_scale, (double)hp->rms_eps,
           hp->tied_output ? "output tied to the embedding" : "separate output");
}

static void inspect_text(const ts_gguf *g, const ts_gguf_str *arch, const ts_model *m,
                         bool metadata) {
    printf("file: %s (GGUF v%" PRIu32 ", %zu bytes, alignment %" PRIu32 ", %zu keys)\n",
           ts_gguf_path(g), ts_gguf_version(g), ts_gguf_file_size(g), ts_gguf_alignment(g),
           ts_gguf_n_kv(g));
    if (arch) printf("architecture: %.*s\n", (int)arch->len, arch->data);
    else printf("architecture: (none)\n");
    if (m) print_hparams(&m->hp);
    if (metadata) {
        printf("metadata:\n");
        for (size_t i = 0; i < ts_gguf_n_kv(g); i++) {
            const ts_gguf_kv *kv = ts_gguf_kv_at(g, i);
            printf("  %-44.*s %-8s ", (int)kv->key.len, kv->key.data, ts_gguf_type_name(kv->type));
            print_kv_value(kv);
            printf("\n");
        }
    }
    uint64_t params = 0, bytes = 0;
    printf("tensors:\n");
    for (size_t i = 0; i < ts_gguf_n_tensors(g); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(g, i);
        char shape[96];
        format_shape(shape, sizeof shape, t);
        printf("  %-32s %-5s %-16s %12zu bytes\n", t->name_z, ts_dtype_name(t->type), shape,
               t->n_bytes);
        params += (uint64_t)t->n_elems;
        bytes += t->n_bytes;
    }
    printf("total: %zu tensors, %" PRIu64 " parameters, %" PRIu64 " bytes (%.1f MiB)\n",
           ts_gguf_n_tensors(g), params, bytes, (double)bytes / (1024.0 * 1024.0));
    if (m)
        printf("weights read per token: %" PRIu64 " bytes (%.1f MiB)\n", ts_model_bytes_per_token(m),
               (double)ts_model_bytes_per_token(m) / (1024.0 * 1024.0));
}

/* ---- inspect: JSON ---- */

static void json_hparams(ts_json_writer *j, const ts_model_hparams *hp) {
    ts_jw_key(j, "hparams");
    ts_jw_object_begin(j);
    const struct { const char *key; int32_t v; } ints[] = {
        {"n_vocab", hp->n_vocab}, {"n_ctx_train", hp->n_ctx_train}, {"dim", hp->dim},
        {"n_layers", hp->n_layers}, {"n_ff", hp->n_ff}, {"n_heads", hp->n_heads},
        {"n_kv_heads", hp->n_kv_heads}, {"head_dim", hp->head_dim}, {"rope_dims", hp->rope_dims},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        ts_jw_key(j, ints[i].key);
        ts_jw_int(j, ints[i].v);
    }
    ts_jw_key(j, "rope_theta");
    ts_jw_double(j, hp->rope_theta);
    ts_jw_key(j, "rope_mode");
    ts_jw_string(j, hp->rope_mode == TS_ROPE_NEOX ? "neox" : "normal");
    ts_jw_key(j, "rope_freq_scale");
    ts_jw_double(j, hp->rope_freq_scale);
    ts_jw_key(j, "rms_eps");
    ts_jw_double(j, hp->rms_eps);
    ts_jw_key(j, "tied_output");
    ts_jw_bool(j, hp->tied_output);
    ts_jw_object_end(j);
}

static void json_kv_value(ts_json_writer *j, const ts_gguf_kv *kv) {
    switch (kv->type) {
    case TS_GGUF_STRING: ts_jw_string_n(j, kv->value.str.data, (size_t)kv->value.str.len); break;
    case TS_GGUF_FLOAT32: case TS_GGUF_FLOAT64: ts_jw_double(j, kv->value.f64); break;
    case TS_GGUF_INT8: case TS_GGUF_INT16: case TS_GGUF_INT32: case TS_GGUF_INT64:
        ts_jw_int(j, kv->value.i64);
        break;
    case TS_GGUF_BOOL: ts_jw_bool(j, kv->value.u64 != 0); break;
    case TS_GGUF_ARRAY: /* arrays can be huge (vocabularies): type and length only */
        ts_jw_object_begin(j);
        ts_jw_key(j, "array_of");
        ts_jw_string(j, ts_gguf_type_name(kv->elem_type));
        ts_jw_key(j, "length");
        ts_jw_int(j, (int64_t)kv->n_elems);
        ts_jw_object_end(j);
        break;
    default: /* unsigned: JSON numbers are doubles in many readers; beyond 2^53 use a string */
        if (kv->value.u64 > (1ull << 53)) {
            char text[24];
            snprintf(text, sizeof text, "%" PRIu64, kv->value.u64);
            ts_jw_string(j, text);
        } else {
            ts_jw_int(j, (int64_t)kv->value.u64);
        }
        break;
    }
}

static int inspect_json(const ts_gguf *g, const ts_gguf_str *arch, const ts_model *m,
                        bool metadata) {
    ts_buf out = {0};
    ts_json_writer j;
    ts_jw_init(&j, &out);
    ts_jw_object_begin(&j);
    ts_jw_key(&j, "file");
    ts_jw_string(&j, ts_gguf_path(g));
    ts_jw_key(&j, "version");
    ts_jw_int(&j, ts_gguf_version(g));
    ts_jw_key(&j, "file_size");
    ts_jw_int(&j, (int64_t)ts_gguf_file_size(g));
    ts_jw_key(&j, "alignment");
    ts_jw_int(&j, ts_gguf_alignment(g));
    ts_jw_key(&j, "n_kv");
    ts_jw_int(&j, (int64_t)ts_gguf_n_kv(g));
    ts_jw_key(&j, "architecture");
    if (arch) ts_jw_string_n(&j, arch->data, (size_t)arch->len);
    else ts_jw_null(&j);
    if (m) json_hparams(&j, &m->hp);
    if (metadata) {
        ts_jw_key(&j, "metadata");
        ts_jw_object_begin(&j);
        for (size_t i = 0; i < ts_gguf_n_kv(g); i++) {
            const ts_gguf_kv *kv = ts_gguf_kv_at(g, i);
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(kv->key.len < 255 ? kv->key.len : 255),
                     kv->key.data);
            ts_jw_key(&j, key);
            json_kv_value(&j, kv);
        }
        ts_jw_object_end(&j);
    }
    uint64_t params = 0, bytes = 0;
    ts_jw_key(&j, "tensors");
    ts_jw_array_begin(&j);
    for (size_t i = 0; i < ts_gguf_n_tensors(g); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(g, i);
        ts_jw_object_begin(&j);
        ts_jw_key(&j, "name");
        ts_jw_string(&j, t->name_z);
        ts_jw_key(&j, "type");
        ts_jw_string(&j, ts_dtype_name(t->type));
        ts_jw_key(&j, "shape");
        ts_jw_array_begin(&j);
        for (uint32_t d = 0; d < t->n_dims; d++) ts_jw_int(&j, t->dims[d]);
        ts_jw_array_end(&j);
        ts_jw_key(&j, "offset");
        ts_jw_int(&j, (int64_t)t->offset);
        ts_jw_key(&j, "bytes");
        ts_jw_int(&j, (int64_t)t->n_bytes);
        ts_jw_object_end(&j);
        params += (uint64_t)t->n_elems;
        bytes += t->n_bytes;
    }
    ts_jw_array_end(&j);
    ts_jw_key(&j, "totals");
    ts_jw_object_begin(&j);
    ts_jw_key(&j, "tensors");
    ts_jw_int(&j, (int64_t)ts_gguf_n_tensors(g));
    ts_jw_key(&j, "parameters");
    ts_jw_int(&j, (int64_t)params);
    ts_jw_key(&j, "bytes");
    ts_jw_int(&j, (int64_t)bytes);
    if (m) {
        ts_jw_key(&j, "bytes_per_token");
        ts_jw_int(&j, (int64_t)ts_model_bytes_per_token(m));
    }
    ts_jw_object_end(&j);
    ts_jw_object_end(&j);
    int rc = ts_jw_finish(&j);
    if (!rc) printf("%s\n", out.data);
    ts_buf_free(&out);
    return rc;
}

static int cmd_inspect(int argc, char **argv) {
    static const char usage[] = "tessera model inspect MODEL [--json] [--metadata]";
    bool json = false, metadata = false;
    const ts_flag flags[] = {
        {"json", 0, TS_FLAG_BOOL, &json, "print JSON instead of text", 0, 0},
        {"metadata", 0, TS_FLAG_BOOL, &metadata, "also list every metadata key", 0, 0},
    };
    const char *positionals[1];
    ts_flags_result res = {positionals, 1, 0};
    int exit_code = parse_flags(usage, flags, 2, argc, argv, &res);
    if (exit_code >= 0) return exit_code;
    if (res.n_positionals != 1) return usage_error("inspect: missing MODEL (%s)", usage);

    ts_gguf *g;
    int rc = ts_hf_open_model(positionals[0], &g);
    if (rc) return ts_cli_fail("model", ts_cli_exit_code(rc));
    ts_gguf_str arch;
    bool has_arch = ts_gguf_get_str(g, "general.architecture", &arch) == TS_OK;
    ts_model m = {0};
    bool known = has_arch && ts_arch_find(arch.data, (size_t)arch.len);
    /* A vocab-only file names an architecture but has no tensors: describe it rather than fail. */
    if (known && ts_gguf_n_tensors(g) > 0) {
        rc = ts_model_load(g, &m);
        if (rc) {
            ts_gguf_close(g);
            return ts_cli_fail("model", TS_EXIT_FAILURE);
        }
    }
    const ts_model *mp = m.layers ? &m : NULL;
    if (json) rc = inspect_json(g, has_arch ? &arch : NULL, mp, metadata);
    else inspect_text(g, has_arch ? &arch : NULL, mp, metadata);
    ts_model_free(&m);
    ts_gguf_close(g);
    return rc ? ts_cli_fail("model", TS_EXIT_FAILURE) : TS_EXIT_OK;
}

/* ---- synth ---- */

static void print_progress(void *ctx, uint64_t done, uint64_t total) {
    static int last_percent = -1;
    int percent = total ? (int)(done * 100 / total) : 100;
    if (percent == last_percent) return;
    last_percent = percent;
    fprintf(stderr, "\r%s: %3d%% of %.1f MiB", (const char *)ctx, percent,
            (double)total / (1024.0 * 1024.0));
    if (done == total) fprintf(stderr, "\n");
}

static int cmd_synth(int argc, char **argv) {
    static const char usage[] =
        "tessera model synth --shape NAME | --dim N --layers N --heads N --kv-heads N --ff N "
        "--vocab N --ctx N  -o OUT.gguf [flags]";
    const char *shape_name = NULL, *out = NULL, *type_name = "f16", *vocab = NULL;
    int dim = 0, layers = 0, heads = 0, kv_heads = 0, ff = 0, n_vocab = 0, ctx = 0;
    const char *arch = NULL;
    int64_t seed = 1;
    bool tied = false, rope_freqs = false;
    double rope_linear = 0.0, weight_std = 0.0;
    const ts_flag flags[] = {
        {"shape", 0, TS_FLAG_STRING, &shape_name,
         "named shape: tiny, qwen2-tiny, 110m, qwen2.5-0.5b, qwen2.5-1.5b or llama3-8b", 0, 0},
        {"arch", 0, TS_FLAG_STRING, &arch, "architecture: llama or qwen2 (default: the shape's)", 0,
         0},
        {"dim", 0, TS_FLAG_INT, &dim, "embedding width (overrides the shape's)", 0, 0},
        {"layers", 0, TS_FLAG_INT, &layers, "number of blocks", 0, 0},
        {"heads", 0, TS_FLAG_INT, &heads, "query heads", 0, 0},
        {"kv-heads", 0, TS_FLAG_INT, &kv_heads, "key/value heads", 0, 0},
        {"ff", 0, TS_FLAG_INT, &ff, "feed-forward hidden width", 0, 0},
        {"vocab", 0, TS_FLAG_INT, &n_vocab, "vocabulary size", 0, 0},
        {"ctx", 0, TS_FLAG_INT, &ctx, "training context length", 0, 0},
        {"output", 'o', TS_FLAG_STRING, &out, "the GGUF file to write", 0, 0},
        {"type", 0, TS_FLAG_STRING, &type_name, "weight type: f32, f16, bf16, q8_0 or q4_0", 0, 0},
        {"vocab-from", 0, TS_FLAG_STRING, &vocab,
         "vocab GGUF to copy the tokenizer from, or 'none' (default: the bundled 32000-token "
         "vocab)",
         0, 0},
        {"seed", 0, TS_FLAG_INT64, &seed, "random seed", 0, 0},
        {"tied", 0, TS_FLAG_BOOL, &tied, "tie the output head to the embedding", 0, 0},
        {"rope-freqs", 0, TS_FLAG_BOOL, &rope_freqs,
         "write rope_freqs.weight (Llama 3.1 RoPE scaling, original context = --ctx)", 0, 0},
        {"std", 0, TS_FLAG_DOUBLE, &weight_std,
         "standard deviation of the random matrices (default 0.02)", 0, 0},
        {"rope-linear", 0, TS_FLAG_DOUBLE, &rope_linear,
         "linear RoPE scaling with this factor (rope.scaling.type linear)", 0, 0},
    };
    const int n_flags = (int)(sizeof flags / sizeof flags[0]);
    const char *positionals[1];
    ts_flags_result res = {positionals, 0, 0};
    int exit_code = parse_flags(usage, flags, n_flags, argc, argv, &res);
    if (exit_code >= 0) return exit_code;
    if (!out) return usage_error("synth: missing -o OUT.gguf");

    ts_synth_options o = {.seed = (uint64_t)seed, .vocab_path = vocab};
    if (ts_dtype_parse(type_name, &o.type)) return ts_cli_fail("model", TS_EXIT_USAGE);
    int *const given[] = {&dim, &layers, &heads, &kv_heads, &ff, &n_vocab, &ctx};
    int32_t *const fields[] = {&o.shape.dim, &o.shape.n_layers, &o.shape.n_heads,
                               &o.shape.n_kv_heads, &o.shape.n_ff, &o.shape.n_vocab, &o.shape.n_ctx};
    static const char *const names[] = {"--dim", "--layers", "--heads", "--kv-heads", "--ff",
                                        "--vocab", "--ctx"};
    bool overridden = false;
    if (shape_name) {
        if (ts_synth_shape_by_name(shape_name, &o.shape)) return ts_cli_fail("model", TS_EXIT_USAGE);
    } else {
        o.shape = (ts_synth_shape){.name = "custom", .rope_theta = 10000.0f};
        for (size_t i = 0; i < 7; i++)
            if (*given[i] == 0) return usage_error("synth: give --shape NAME or all explicit dims "
                                                   "(missing %s)", names[i]);
    }
    for (size_t i = 0; i < 7; i++) {
        if (*given[i] != 0) {
            *fields[i] = *given[i];
            overridden = true;
        }
    }
    if (overridden) o.shape.name = "custom";
    if (tied) o.shape.tied_output = true;
    if (arch) o.shape.arch = arch;
    if (rope_linear < 0.0 || rope_linear > 1e6)
        return usage_error("synth: --rope-linear %g out of range (0 to 1e6)", rope_linear);
    o.rope = (ts_synth_rope){.llama3_freqs = rope_freqs, .linear_factor = (float)rope_linear};
    if (weight_std < 0.0 || weight_std > 100.0)
        return usage_error("synth: --std %g out of range (0 to 100)", weight_std);
    o.std = (float)weight_std;
    if (ts_synth_shape_check(&o.shape, o.type)) return ts_cli_fail("model", TS_EXIT_USAGE);

    if (isatty(STDERR_FILENO)) {
        o.progress = print_progress;
        o.progress_ctx = (void *)out;
    }
    int64_t t0 = ts_now_ns();
    int rc = ts_synth_write(&o, out);
    if (rc) return ts_cli_fail("model", ts_cli_exit_code(rc));
    printf("wrote %s: shape %s, %s weights, seed %" PRId64 ", in %.1f s\n", out, o.shape.name,
           ts_dtype_name(o.type), seed, ts_ns_to_s(ts_now_ns() - t0));
    return TS_EXIT_OK;
}

int ts_cmd_model(int argc, char **argv) {
    if (argc < 2) return usage_error("missing subcommand: inspect or synth (see tessera model --help)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(MODEL_USAGE, stdout);
        return TS_EXIT_OK;
    }
    if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc, argv);
    if (!strcmp(argv[1], "synth")) return cmd_synth(argc, argv);
    return usage_error("unknown subcommand '%s' (inspect or synth)", argv[1]);
}
