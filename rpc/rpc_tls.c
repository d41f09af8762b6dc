/* rpc_tls.c — TLS certificate, key and CA files (see rpc_tls.h). */
#include "rpc/rpc_tls.h"

#include "common/error.h"
#include "common/log.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <string.h>

static int read_pem(const char *flag, const char *path, ts_buf *out) {
    int rc = ts_buf_read_file(out, path);
    if (rc) return ts_error_wrap(rc, "%s", flag);
    if (!out->len) return ts_error_set(TS_E_INVALID, "%s %s: the file is empty", flag, path);
    return TS_OK;
}

/* The first certificate in PEM text, or NULL. */
static X509 *first_cert(const ts_buf *pem) {
    BIO *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

static int no_password(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1; /* an encrypted key cannot be loaded unattended */
}

int ts_tls_server_load(const char *cert_path, const char *key_path, ts_tls_server *out) {
    memset(out, 0, sizeof *out);
    if (!cert_path && !key_path) return TS_OK;
    if (!cert_path || !key_path)
        return ts_error_set(TS_E_INVALID, "--tls-cert and --tls-key go together (got only %s)",
                            cert_path ? "--tls-cert" : "--tls-key");
    int rc = read_pem("--tls-cert", cert_path, &out->cert);
    if (!rc) rc = read_pem("--tls-key", key_path, &out->key);
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    if (!rc && !(cert = first_cert(&out->cert)))
        rc = ts_error_set(TS_E_INVALID, "--tls-cert %s: no PEM certificate in it", cert_path);
    if (!rc) {
        BIO *bio = BIO_new_mem_buf(out->key.data, (int)out->key.len);
        key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL) : NULL;
        BIO_free(bio);
        if (!key)
            rc = ts_error_set(TS_E_INVALID, "--tls-key %s: no unencrypted PEM private key in it",
                              key_path);
    }
    if (!rc && X509_check_private_key(cert, key) != 1)
        rc = ts_error_set(TS_E_INVALID, "--tls-key %s is not the private key of --tls-cert %s",
                          key_path, cert_path);
    if (!rc && X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
        TS_WARN("--tls-cert %s: the certificate has expired: clients will refuse it", cert_path);
    if (!rc && X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
        TS_WARN("--tls-cert %s: the certificate is not valid yet: clients will refuse it",
                cert_path);
    ERR_clear_error();
    X509_free(cert);
    EVP_PKEY_free(key);
    if (rc) ts_tls_server_free(out);
    return rc;
}

int ts_tls_server_on(const ts_tls_server *t) {
    return t->cert.len > 0;
}

void ts_tls_server_free(ts_tls_server *t) {
    if (t->key.data) memset(t->key.data, 0, t->key.len);
    ts_buf_free(&t->cert);
    ts_buf_free(&t->key);
}

int ts_tls_ca_load(const char *ca_path, ts_buf *out) {
    int rc = read_pem("--tls-ca", ca_path, out);
    X509 *x = rc ? NULL : first_cert(out);
    if (!rc && !x)
        rc = ts_error_set(TS_E_INVALID, "--tls-ca %s: no PEM certificate in it", ca_path);
    X509_free(x);
    ERR_clear_error();
    if (rc) ts_buf_free(out);
    return rc;
}
