/*
 * remote.c — see remote.h. Unary calls of the public API, shared by the CLI's client commands.
 */
#include "cli/remote.h"

#include "common/buf.h"
#include "common/error.h"
#include "rpc/rpc_tls.h"
#include "tessera/v1/inference.pb-c.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ts_remote_connect(const char *target, const char *tls_ca, ts_rpc_channel **out) {
    *out = NULL;
    if (!target || !strchr(target, ':'))
        return ts_error_set(TS_E_INVALID, "--server: expected HOST:PORT, got '%s'",
                            target ? target : "");
    ts_rpc_channel_options o;
    ts_rpc_channel_options_default(&o);
    /* The cluster's API key, from the environment (never argv). */
    const char *key = getenv("TESSERA_API_KEY");
    char bearer[4200];
    ts_rpc_metadata md = {"authorization", bearer};
    if (key && key[0]) {
        if (snprintf(bearer, sizeof bearer, "Bearer %s", key) >= (int)sizeof bearer)
            return ts_error_set(TS_E_INVALID, "TESSERA_API_KEY: longer than 4096 bytes");
        o.metadata = &md;
        o.n_metadata = 1;
    }
    ts_buf ca = {0};
    int rc = tls_ca ? ts_tls_ca_load(tls_ca, &ca) : TS_OK;
    if (rc) rc = rc == TS_E_IO ? TS_E_INVALID : rc; /* a bad flag: a usage error */
    o.tls_ca_pem = tls_ca ? ca.data : NULL;
    if (!rc) rc = ts_rpc_channel_create(target, &o, out); /* copies the metadata and CA */
    explicit_bzero(bearer, sizeof bearer);
    ts_buf_free(&ca);
    return rc;
}

int ts_remote_exit_code(int rc) {
    return rc == TS_E_INVALID ? 2 : 1;
}

int ts_remote_pack(const ProtobufCMessage *msg, ts_buf *out) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    ts_buf_clear(out);
    if (ts_buf_reserve(out, n + 1)) return ts_error_set(TS_E_NOMEM, "out of memory");
    out->len = protobuf_c_message_pack(msg, (uint8_t *)out->data);
    return 0;
}

/* A unary call with a protobuf-c request; the reply's bytes land in `reply`. */
static int unary(ts_rpc_channel *ch, const char *method, const ProtobufCMessage *msg,
                 int timeout_ms, ts_buf *reply) {
    ts_buf req = {0};
    int rc = ts_remote_pack(msg, &req);
    if (!rc) rc = ts_rpc_unary(ch, method, req.data, req.len, timeout_ms, reply);
    ts_buf_free(&req);
    return rc;
}

int ts_remote_tokenize(ts_rpc_channel *ch, const char *model, const char *text, int no_bos,
                       int timeout_ms, int32_t **ids, size_t *n_ids) {
    Tessera__V1__TokenizeRequest req = TESSERA__V1__TOKENIZE_REQUEST__INIT;
    req.model = (char *)(model ? model : "");
    req.text = (char *)text;
    req.no_bos = no_bos != 0;
    ts_buf in = {0};
    int rc = unary(ch, TS_REMOTE_TOKENIZE, &req.base, timeout_ms, &in);
    if (rc) {
        ts_buf_free(&in);
        return rc;
    }
    Tessera__V1__TokenizeResponse *resp =
        tessera__v1__tokenize_response__unpack(NULL, in.len, (const uint8_t *)in.data);
    ts_buf_free(&in);
    if (!resp) return ts_error_set(TS_E_FORMAT, "Tokenize: the server's reply does not parse");
    int32_t *copy = malloc((resp->n_ids ? resp->n_ids : 1) * sizeof *copy);
    if (!copy) {
        tessera__v1__tokenize_response__free_unpacked(resp, NULL);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    if (resp->n_ids) memcpy(copy, resp->ids, resp->n_ids * sizeof *copy);
    *ids = copy;
    *n_ids = resp->n_ids;
    tessera__v1__tokenize_response__free_unpacked(resp, NULL);
    return 0;
}

int ts_remote_model_info(ts_rpc_channel *ch, const char *model, int timeout_ms,
                         ts_remote_model *out) {
    Tessera__V1__ListModelsRequest req = TESSERA__V1__LIST_MODELS_REQUEST__INIT;
    ts_buf in = {0};
    int rc = unary(ch, TS_REMOTE_LIST_MODELS, &req.base, timeout_ms, &in);
    if (rc) {
        ts_buf_free(&in);
        return rc;
    }
    Tessera__V1__ListModelsResponse *resp =
        tessera__v1__list_models_response__unpack(NULL, in.len, (const uint8_t *)in.data);
    ts_buf_free(&in);
    if (!resp) return ts_error_set(TS_E_FORMAT, "ListModels: the server's reply does not parse");
    bool named = model && model[0];
    size_t i = 0;
    while (i < resp->n_models && named && strcmp(resp->models[i]->name, model) != 0)
        i++;
    if (i < resp->n_models) {
        out->vocab_size = resp->models[i]->vocab_size;
        out->context_length = resp->models[i]->context_length;
    } else {
        rc = ts_error_set(TS_E_NOT_FOUND, "ListModels: the server serves no model%s%s",
                          named ? " named " : "", named ? model : "");
    }
    tessera__v1__list_models_response__free_unpacked(resp, NULL);
    return rc;
}
