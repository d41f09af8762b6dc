/* secret.c — shared secrets (see secret.h). */
#include "common/secret.h"

#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int ts_secret_create_file(const char *path) {
    unsigned char bits[32];
    size_t got = 0;
    while (got < sizeof bits) {
        ssize_t n = getrandom(bits + got, sizeof bits - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return ts_error_set(TS_E_IO, "cannot make a secret: getrandom: %s", strerror(errno));
        got += (size_t)n;
    }
    char text[2 * sizeof bits + 2];
    for (size_t i = 0; i < sizeof bits; i++)
        snprintf(text + 2 * i, 3, "%02x", bits[i]);
    text[2 * sizeof bits] = '\n';
    text[2 * sizeof bits + 1] = '\0';
    memset(bits, 0, sizeof bits);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return ts_error_set(TS_E_IO, "%s: cannot create it: %s", path, strerror(errno));
    size_t len = strlen(text), done = 0;
    int rc = TS_OK;
    while (!rc && done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            rc = ts_error_set(TS_E_IO, "%s: cannot write it: %s", path, strerror(errno));
        else
            done += (size_t)n;
    }
    if (close(fd) != 0 && !rc) rc = ts_error_set(TS_E_IO, "%s: %s", path, strerror(errno));
    memset(text, 0, sizeof text);
    if (rc) unlink(path);
    return rc;
}

/* Trims surrounding whitespace of buf[0..n) in place into out; checks the characters. */
static int accept_secret(const char *what, const char *buf, size_t n, char *out, size_t size) {
    while (n &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    while (n && (*buf == ' ' || *buf == '\t')) {
        buf++;
        n--;
    }
    if (!n) return ts_error_set(TS_E_INVALID, "%s: the cluster secret is empty", what);
    if (n >= size || n >= TS_SECRET_MAX)
        return ts_error_set(TS_E_INVALID, "%s: the cluster secret is longer than %d bytes", what,
                            TS_SECRET_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if (buf[i] <= ' ' || buf[i] > '~')
            return ts_error_set(TS_E_INVALID,
                                "%s: the cluster secret must be one line of printable ASCII "
                                "without spaces",
                                what);
    memcpy(out, buf, n);
    out[n] = '\0';
    return TS_OK;
}

int ts_secret_load(const char *flag, const char *path, const char *env_name, char *out,
                   size_t size) {
    out[0] = '\0';
    if (!path) {
        const char *env = env_name ? getenv(env_name) : NULL;
        return env && env[0] ? accept_secret(env_name, env, strlen(env), out, size) : TS_OK;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ts_error_set(TS_E_IO, "%s %s: %s", flag, path, strerror(errno));
    struct stat st;
    int rc = TS_OK;
    if (fstat(fd, &st) != 0)
        rc = ts_error_set(TS_E_IO, "%s %s: %s", flag, path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = ts_error_set(TS_E_INVALID, "%s %s: not a regular file", flag, path);
    else if (st.st_mode & 077)
        rc = ts_error_set(TS_E_INVALID,
                          "%s %s: others may read or change it (mode %03o): chmod 600 it", flag,
                          path, (unsigned)(st.st_mode & 0777));
    char buf[TS_SECRET_MAX + 2];
    ssize_t n = 0;
    if (!rc) {
        do
            n = read(fd, buf, sizeof buf);
        while (n < 0 && errno == EINTR);
        if (n < 0) rc = ts_error_set(TS_E_IO, "%s %s: %s", flag, path, strerror(errno));
    }
    close(fd);
    if (!rc) {
        char what[512];
        snprintf(what, sizeof what, "%s %s", flag, path);
        rc = accept_secret(what, buf, (size_t)n, out, size);
    }
    memset(buf, 0, sizeof buf);
    return rc;
}

bool ts_secret_equal(const char *a, size_t a_len, const char *b, size_t b_len) {
    unsigned char diff = (unsigned char)(a_len != b_len);
    for (size_t i = 0; i < a_len; i++)
        diff |= (unsigned char)(a[i] ^ (i < b_len ? b[i] : 0));
    return diff == 0;
}
