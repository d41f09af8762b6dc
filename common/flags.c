/* flags.c — see flags.h. */
#include "common/flags.h"

#include "common/buf.h"
#include "common/error.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int ts_parse_size(const char *text, size_t *out) {
    errno = 0;
    char *end = NULL;
    if (text[0] == '-' || text[0] == '\0')
        return ts_error_set(TS_E_INVALID, "'%s' is not a size (e.g. 512M, 2G)", text);
    double v = strtod(text, &end);
    if (errno || end == text) return ts_error_set(TS_E_INVALID, "'%s' is not a size (e.g. 512M, 2G)", text);
    double mult = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mult = 1024.0; break;
        case 'm': case 'M': mult = 1024.0 * 1024; break;
        case 'g': case 'G': mult = 1024.0 * 1024 * 1024; break;
        case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
        default: return ts_error_set(TS_E_INVALID, "'%s' is not a size (e.g. 512M, 2G)", text);
        }
        end++;
        if (*end == 'i') end++;
        if (*end == 'B' || *end == 'b') end++;
        if (*end) return ts_error_set(TS_E_INVALID, "'%s' is not a size (e.g. 512M, 2G)", text);
    }
    v *= mult;
    if (!(v >= 0) || v > 1.8e19) return ts_error_set(TS_E_INVALID, "size '%s' out of range", text);
    *out = (size_t)v;
    return TS_OK;
}

static int check_range(const ts_flag *f, double v, const char *text) {
    if (f->min < f->max && (v < f->min || v > f->max || isnan(v)))
        return ts_error_set(TS_E_INVALID, "--%s: must be between %g and %g, got %s", f->name, f->min,
                            f->max, text);
    return TS_OK;
}

static int set_value(const ts_flag *f, const char *text) {
    char *end = NULL;
    errno = 0;
    switch (f->type) {
    case TS_FLAG_BOOL: {
        if (!strcmp(text, "true") || !strcmp(text, "1") || !strcmp(text, "yes")) *(bool *)f->value = true;
        else if (!strcmp(text, "false") || !strcmp(text, "0") || !strcmp(text, "no")) *(bool *)f->value = false;
        else return ts_error_set(TS_E_INVALID, "--%s: expected true or false, got '%s'", f->name, text);
        return TS_OK;
    }
    case TS_FLAG_INT:
    case TS_FLAG_INT64: {
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end)
            return ts_error_set(TS_E_INVALID, "--%s: expected an integer, got '%s'", f->name, text);
        if (f->type == TS_FLAG_INT && (v < -2147483647LL - 1 || v > 2147483647LL))
            return ts_error_set(TS_E_INVALID, "--%s: %s is out of range", f->name, text);
        int rc = check_range(f, (double)v, text);
        if (rc) return rc;
        if (f->type == TS_FLAG_INT) *(int *)f->value = (int)v;
        else *(int64_t *)f->value = v;
        return TS_OK;
    }
    case TS_FLAG_DOUBLE: {
        double v = strtod(text, &end);
        if (errno || end == text || *end || isnan(v))
            return ts_error_set(TS_E_INVALID, "--%s: expected a number, got '%s'", f->name, text);
        int rc = check_range(f, v, text);
        if (rc) return rc;
        *(double *)f->value = v;
        return TS_OK;
    }
    case TS_FLAG_STRING: *(const char **)f->value = text; return TS_OK;
    case TS_FLAG_SIZE: {
        size_t v;
        if (ts_parse_size(text, &v)) return ts_error_wrap(TS_E_INVALID, "--%s", f->name);
        int rc = check_range(f, (double)v, text);
        if (rc) return rc;
        *(size_t *)f->value = v;
        return TS_OK;
    }
    }
    return ts_error_set(TS_E_INTERNAL, "--%s: bad flag type", f->name);
}

static const ts_flag *find_long(const ts_flag *flags, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) return &flags[i];
    return NULL;
}

static const ts_flag *find_short(const ts_flag *flags, int n, char c) {
    for (int i = 0; i < n; i++)
        if (flags[i].short_name && flags[i].short_name == c) return &flags[i];
    return NULL;
}

/* Storage for strings read from config files; lives as long as the process. */
/* String values read from a --config file must outlive the file's buffer: flag targets point at
 * them for the rest of the process, like they point into argv. They are chained on a static list
 * so that they stay reachable (and leak checkers agree) until the process exits. */
typedef struct kept_string {
    struct kept_string *next;
    char text[];
} kept_string;
static kept_string *kept_strings;

static char *keep_string(const char *s, size_t n) {
    kept_string *k = malloc(sizeof *k + n + 1);
    if (!k) return NULL;
    memcpy(k->text, s, n);
    k->text[n] = '\0';
    k->next = kept_strings;
    kept_strings = k;
    return k->text;
}

static int apply_config_file(const ts_flag *flags, int n_flags, const char *path) {
    ts_buf text = {0};
    int rc = ts_buf_read_file(&text, path);
    if (rc) return ts_error_wrap(TS_E_INVALID, "--config");
    char *line = text.data;
    int line_no = 0;
    while (line && *line) {
        line_no++;
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *key = line + strspn(line, " \t\r");
        size_t key_len = strcspn(key, " \t\r=");
        if (key_len > 0) {
            char *rest = key + key_len;
            rest += strspn(rest, " \t\r");
            if (*rest == '=') rest++;
            rest += strspn(rest, " \t\r");
            size_t vlen = strlen(rest);
            while (vlen && (rest[vlen - 1] == ' ' || rest[vlen - 1] == '\t' || rest[vlen - 1] == '\r')) vlen--;
            const ts_flag *f = find_long(flags, n_flags, key, key_len);
            if (!f) {
                key[key_len] = '\0';
                rc = ts_error_set(TS_E_INVALID, "%s:%d: unknown key '%s'", path, line_no, key);
                break;
            }
            char *value = keep_string(rest, vlen);
            if (!value) { rc = ts_error_set(TS_E_NOMEM, "out of memory"); break; }
            rc = set_value(f, value);
            if (rc) {
                rc = ts_error_wrap(rc, "%s:%d", path, line_no);
                break;
            }
        }
        line = next;
    }
    ts_buf_free(&text);
    return rc;
}

int ts_flags_parse(const char *usage, const ts_flag *flags, int n_flags, int argc, char **argv,
                   int first, ts_flags_result *result) {
    result->n_positionals = 0;
    /* The config file goes first so that flags on the command line override it. */
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        const char *path = NULL;
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return ts_error_set(TS_E_INVALID, "--config: missing value");
            path = argv[i + 1];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            path = argv[i] + 9;
        }
        if (path) {
            int rc = apply_config_file(flags, n_flags, path);
            if (rc) return rc;
        }
    }
    bool options_done = false;
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || arg[0] != '-' || arg[1] == '\0') {
            if (result->n_positionals >= result->max_positionals)
                return ts_error_set(TS_E_INVALID, "unexpected argument '%s' (see --help)", arg);
            result->positionals[result->n_positionals++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) { options_done = true; continue; }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            ts_flags_print_help(stdout, usage, flags, n_flags);
            return TS_FLAGS_HELP;
        }
        const ts_flag *f = NULL;
        const char *inline_value = NULL;
        bool negated = false;
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (eq) inline_value = eq + 1;
            if (len == 6 && !strncmp(name, "config", 6)) {
                if (!eq) i++;
                continue; /* already applied */
            }
            f = find_long(flags, n_flags, name, len);
            if (!f && len > 3 && !strncmp(name, "no-", 3)) {
                f = find_long(flags, n_flags, name + 3, len - 3);
                if (f && f->type == TS_FLAG_BOOL && !eq) negated = true;
                else f = NULL;
            }
        } else if (arg[2] == '\0') {
            f = find_short(flags, n_flags, arg[1]);
        }
        if (!f) return ts_error_set(TS_E_INVALID, "unknown flag '%s' (see --help)", arg);
        if (f->type == TS_FLAG_BOOL && !inline_value) {
            *(bool *)f->value = !negated;
            continue;
        }
        const char *value = inline_value;
        if (!value) {
            if (i + 1 >= argc) return ts_error_set(TS_E_INVALID, "--%s: missing value", f->name);
            value = argv[++i];
        }
        int rc = set_value(f, value);
        if (rc) return rc;
    }
    return TS_OK;
}

void ts_flags_print_help(FILE *out, const char *usage, const ts_flag *flags, int n_flags) {
    fprintf(out, "usage: %s\n\nflags:\n", usage);
    for (int i = 0; i < n_flags; i++) {
        const ts_flag *f = &flags[i];
        char left[64];
        const char *metavar = f->type == TS_FLAG_BOOL ? "" : f->type == TS_FLAG_STRING ? " TEXT"
                              : f->type == TS_FLAG_SIZE ? " SIZE" : " N";
        if (f->short_name) snprintf(left, sizeof left, "-%c, --%s%s", f->short_name, f->name, metavar);
        else snprintf(left, sizeof left, "    --%s%s", f->name, metavar);
        char def[96] = "";
        switch (f->type) {
        case TS_FLAG_BOOL: snprintf(def, sizeof def, "%s", *(bool *)f->value ? "on" : "off"); break;
        case TS_FLAG_INT: snprintf(def, sizeof def, "%d", *(int *)f->value); break;
        case TS_FLAG_INT64: snprintf(def, sizeof def, "%lld", (long long)*(int64_t *)f->value); break;
        case TS_FLAG_DOUBLE: snprintf(def, sizeof def, "%g", *(double *)f->value); break;
        case TS_FLAG_STRING: {
            const char *s = *(const char **)f->value;
            snprintf(def, sizeof def, "%s", s ? s : "none");
            break;
        }
        case TS_FLAG_SIZE: snprintf(def, sizeof def, "%zu bytes", *(size_t *)f->value); break;
        }
        fprintf(out, "  %-30s %s (default: %s)\n", left, f->help, def);
    }
    fprintf(out, "  %-30s %s\n", "    --config FILE", "read flags from FILE, one 'key = value' per line");
    fprintf(out, "  %-30s %s\n", "-h, --help", "show this help");
}
