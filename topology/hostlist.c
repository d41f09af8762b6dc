/*
 * hostlist.c — see hostlist.h.
 *
 * Two passes per item: the first checks the syntax and counts the names (so a huge expansion is
 * refused before any allocation), the second writes them with an odometer over the bracket
 * groups, last group fastest.
 */
#include "topology/hostlist.h"

#include "common/error.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_SEGMENTS = 32, MAX_RANGES = 1024, MAX_DIGITS = 9 };

typedef struct {
    uint32_t lo, hi;
    int width;
} range;

typedef struct {
    const char *text; /* literal text, or NULL for a bracket group */
    int len;
    int first_range, n_ranges;
    uint64_t count; /* names this group yields */
} segment;

typedef struct {
    segment seg[MAX_SEGMENTS];
    int n_seg;
    range ranges[MAX_RANGES];
    int n_ranges;
} item;

/* kind: "hostlist" or "count list", for the message. */
static int fail(const char *kind, const char *expr, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(const char *kind, const char *expr, const char *at, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ts_error_set(TS_E_INVALID, "%s \"%.200s\": position %d: %s", kind, expr,
                        (int)(at - expr) + 1, what);
}

static bool name_char(char c) {
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

static const char *describe(char c, char *tmp, size_t n) {
    if (c == '\0') return "the end";
    if (isprint((unsigned char)c))
        snprintf(tmp, n, "'%c'", c);
    else
        snprintf(tmp, n, "byte 0x%02x", (unsigned char)c);
    return tmp;
}

/* Reads a decimal number at *p; advances *p. */
static int parse_number(const char *kind, const char *expr, const char **p, uint32_t *value,
                        int *width) {
    const char *s = *p;
    if (!isdigit((unsigned char)*s)) {
        char tmp[16];
        return fail(kind, expr, s, "expected a number, found %s", describe(*s, tmp, sizeof tmp));
    }
    uint32_t v = 0;
    int digits = 0;
    while (isdigit((unsigned char)*s)) {
        if (++digits > MAX_DIGITS)
            return fail(kind, expr, *p, "number longer than %d digits", MAX_DIGITS);
        v = v * 10 + (uint32_t)(*s - '0');
        s++;
    }
    *value = v;
    *width = digits;
    *p = s;
    return TS_OK;
}

static int decimal_digits(uint32_t v) {
    int d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* Parses one item [begin, end) with no top-level commas; fills it and its name count. */
static int parse_item(const char *expr, const char *begin, const char *end, item *it,
                      uint64_t *count) {
    char tmp[16];
    it->n_seg = 0;
    it->n_ranges = 0;
    *count = 1;
    int max_len = 0;
    if (begin == end)
        return fail("hostlist", expr, begin, "empty host name (two commas, or a comma at an end)");
    const char *p = begin;
    while (p < end) {
        if (it->n_seg == MAX_SEGMENTS)
            return fail("hostlist", expr, p, "more than %d parts in one host name", MAX_SEGMENTS);
        segment *sg = &it->seg[it->n_seg++];
        if (*p != '[') {
            const char *s = p;
            while (p < end && name_char(*p))
                p++;
            if (p == s) {
                if (*p == ']') return fail("hostlist", expr, p, "']' without a matching '['");
                return fail("hostlist", expr, p, "%s is not allowed in a host name",
                            describe(*p, tmp, sizeof tmp));
            }
            sg->text = s;
            sg->len = (int)(p - s);
            max_len += sg->len;
            continue;
        }
        const char *open = p++;
        sg->text = NULL;
        sg->first_range = it->n_ranges;
        sg->n_ranges = 0;
        sg->count = 0;
        int group_width = 0;
        for (;;) {
            if (p >= end || *p == '\0')
                return fail("hostlist", expr, p, "expected ']' to close the '[' at position %d",
                            (int)(open - expr) + 1);
            if (*p == '[')
                return fail("hostlist", expr, p, "'[' inside brackets (groups cannot nest)");
            if (*p == ']' || *p == ',')
                return fail("hostlist", expr, p, "empty range in the brackets at position %d",
                            (int)(open - expr) + 1);
            if (it->n_ranges == MAX_RANGES)
                return fail("hostlist", expr, p, "more than %d ranges in one host name",
                            MAX_RANGES);
            range *r = &it->ranges[it->n_ranges];
            const char *num = p;
            int rc = parse_number("hostlist", expr, &p, &r->lo, &r->width);
            if (rc) return rc;
            r->hi = r->lo;
            if (*p == '-') {
                p++;
                int hi_width;
                rc = parse_number("hostlist", expr, &p, &r->hi, &hi_width);
                if (rc) return rc;
                if (r->hi < r->lo)
                    return fail("hostlist", expr, num, "range %u-%u goes backwards", r->lo, r->hi);
            }
            it->n_ranges++;
            sg->n_ranges++;
            sg->count += (uint64_t)(r->hi - r->lo) + 1;
            int w = decimal_digits(r->hi) > r->width ? decimal_digits(r->hi) : r->width;
            if (w > group_width) group_width = w;
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == ']') {
                p++;
                break;
            }
            if (p >= end)
                return fail("hostlist", expr, p, "expected ']' to close the '[' at position %d",
                            (int)(open - expr) + 1);
            return fail("hostlist", expr, p, "expected ',', '-' or ']' in brackets, found %s",
                        describe(*p, tmp, sizeof tmp));
        }
        max_len += group_width;
        *count *= sg->count;
        if (*count > TS_HOSTLIST_MAX_HOSTS)
            return fail("hostlist", expr, begin, "expands to more than %d hosts",
                        TS_HOSTLIST_MAX_HOSTS);
    }
    if (max_len > TS_HOSTNAME_MAX)
        return fail("hostlist", expr, begin, "a host name longer than %d characters",
                    TS_HOSTNAME_MAX);
    return TS_OK;
}

/* Writes the name for odometer position `digit` (one index per group segment). */
static char *make_name(const item *it, const uint64_t *pos) {
    char name[TS_HOSTNAME_MAX + 1];
    int len = 0;
    for (int s = 0; s < it->n_seg; s++) {
        const segment *sg = &it->seg[s];
        if (sg->text) {
            memcpy(name + len, sg->text, (size_t)sg->len);
            len += sg->len;
            continue;
        }
        uint64_t k = pos[s];
        for (int r = sg->first_range; r < sg->first_range + sg->n_ranges; r++) {
            const range *rg = &it->ranges[r];
            uint64_t n = (uint64_t)(rg->hi - rg->lo) + 1;
            if (k < n) {
                len += snprintf(name + len, sizeof name - (size_t)len, "%0*u", rg->width,
                                rg->lo + (uint32_t)k);
                break;
            }
            k -= n;
        }
    }
    name[len] = '\0';
    return strdup(name);
}

static int expand_item(const item *it, ts_hostlist *out) {
    uint64_t pos[MAX_SEGMENTS] = {0};
    for (;;) {
        char *name = make_name(it, pos);
        if (!name) return ts_error_set(TS_E_NOMEM, "out of memory expanding a hostlist");
        out->names[out->n++] = name;
        int s = it->n_seg - 1;
        for (; s >= 0; s--) {
            if (it->seg[s].text) continue;
            if (++pos[s] < it->seg[s].count) break;
            pos[s] = 0;
        }
        if (s < 0) return TS_OK;
    }
}

/* Calls `visit` for each top-level item; commas inside brackets do not split. */
static const char *item_end(const char *p) {
    int depth = 0;
    for (; *p; p++) {
        if (*p == '[')
            depth++;
        else if (*p == ']' && depth > 0)
            depth--;
        else if (*p == ',' && depth == 0)
            break;
    }
    return p;
}

int ts_hostlist_parse(const char *expr, ts_hostlist *out) {
    out->names = NULL;
    out->n = 0;
    if (!expr || !*expr) return ts_error_set(TS_E_INVALID, "empty hostlist");
    item *it = malloc(sizeof *it);
    if (!it) return ts_error_set(TS_E_NOMEM, "out of memory parsing a hostlist");
    uint64_t total = 0;
    int rc = TS_OK;
    for (const char *p = expr;;) {
        const char *end = item_end(p);
        uint64_t count;
        rc = parse_item(expr, p, end, it, &count);
        if (rc) goto done;
        total += count;
        if (total > TS_HOSTLIST_MAX_HOSTS) {
            rc = fail("hostlist", expr, p, "the list expands to more than %d hosts",
                      TS_HOSTLIST_MAX_HOSTS);
            goto done;
        }
        if (!*end) break;
        p = end + 1;
    }
    out->names = calloc((size_t)total, sizeof *out->names);
    if (!out->names) {
        rc = ts_error_set(TS_E_NOMEM, "out of memory expanding a hostlist of %llu hosts",
                          (unsigned long long)total);
        goto done;
    }
    for (const char *p = expr;;) {
        const char *end = item_end(p);
        uint64_t count;
        rc = parse_item(expr, p, end, it, &count);
        if (!rc) rc = expand_item(it, out);
        if (rc) goto done;
        if (!*end) break;
        p = end + 1;
    }
done:
    free(it);
    if (rc) ts_hostlist_free(out);
    return rc;
}

void ts_hostlist_free(ts_hostlist *hl) {
    if (!hl) return;
    for (int i = 0; i < hl->n; i++)
        free(hl->names[i]);
    free(hl->names);
    hl->names = NULL;
    hl->n = 0;
}

int ts_hostlist_find(const ts_hostlist *hl, const char *name) {
    for (int i = 0; i < hl->n; i++)
        if (!strcmp(hl->names[i], name)) return i;
    return -1;
}

int ts_count_list_parse(const char *text, int **counts, int *n) {
    *counts = NULL;
    *n = 0;
    if (!text || !*text) return ts_error_set(TS_E_INVALID, "empty count list");
    char tmp[16];
    /* First pass counts, second fills: same loop, `fill` switches the writes on. */
    int total = 0;
    for (int fill = 0; fill < 2; fill++) {
        int k = 0;
        const char *p = text;
        for (;;) {
            uint32_t value, repeat = 1;
            int width;
            int rc = parse_number("count list", text, &p, &value, &width);
            if (rc) return rc;
            if (*p == '(') {
                const char *open = p;
                if (p[1] != 'x') return fail("count list", text, p + 1, "expected 'x' after '('");
                p += 2;
                rc = parse_number("count list", text, &p, &repeat, &width);
                if (rc) return rc;
                if (repeat == 0) return fail("count list", text, open, "repeat count (x0) is 0");
                if (*p != ')')
                    return fail("count list", text, p,
                                "expected ')' to close the '(' at "
                                "position %d",
                                (int)(open - text) + 1);
                p++;
            }
            if ((uint64_t)k + repeat > TS_HOSTLIST_MAX_HOSTS)
                return fail("count list", text, p, "more than %d entries", TS_HOSTLIST_MAX_HOSTS);
            for (uint32_t r = 0; r < repeat; r++) {
                if (fill) (*counts)[k] = (int)value;
                k++;
            }
            if (*p == '\0') break;
            if (*p != ',')
                return fail("count list", text, p, "expected ',' or '(', found %s",
                            describe(*p, tmp, sizeof tmp));
            p++;
        }
        if (!fill) {
            total = k;
            *counts = malloc((size_t)total * sizeof **counts);
            if (!*counts) return ts_error_set(TS_E_NOMEM, "out of memory");
        }
    }
    *n = total;
    return TS_OK;
}
