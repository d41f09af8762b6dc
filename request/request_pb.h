/*
 * request_pb.h — the one mapping between the request model (request.h) and the protobuf
 * messages of tessera.v1 (GenerateRequest, SamplingParams, Submit).
 *
 * Wire conventions (inference.proto): zero sampling values mean "off" / the default
 * (top_p 0 → 1, repetition_penalty 0 → 1, repetition_last_n 0 → 64), GenerateRequest.max_tokens
 * 0 means 16; Submit.max_tokens is taken as it is (the coordinator always sets it). The mapping
 * checks nothing but what it must to copy (counts that fit in int32): validation is
 * ts_request_validate's, after the mapping.
 *
 * The *_to_* functions fill messages whose pointers point into the request (no copies): the
 * message is valid while the request lives and is not changed. The *_from_* functions copy.
 */
#ifndef TS_REQUEST_REQUEST_PB_H
#define TS_REQUEST_REQUEST_PB_H

#include "request/request.h"
#include "tessera/v1/inference.pb-c.h"
#include "tessera/v1/worker.pb-c.h"

/* GenerateRequest → a new request (ts_request_init'ed by this; free with ts_request_free, also
 * on failure). 0, TS_E_NOMEM, or TS_E_INVALID when a count does not fit. */
int ts_request_from_generate(const Tessera__V1__GenerateRequest *q, ts_request *out);

/* A request → GenerateRequest (q and sp are initialized here; q->sampling = sp). */
void ts_request_to_generate(const ts_request *r, Tessera__V1__GenerateRequest *q,
                            Tessera__V1__SamplingParams *sp);

/* Submit → node parameters (max_tokens, sampling, logprobs, priority, stop ids). */
void ts_request_params_from_submit(const Tessera__V1__Submit *m, ts_request_params *p);

/* Node parameters → the Submit fields above (s is not initialized here: the caller sets the
 * rest; s->sampling = sp). */
void ts_request_params_to_submit(const ts_request_params *p, Tessera__V1__Submit *s,
                                 Tessera__V1__SamplingParams *sp);

/* FinishReason ↔ ts_finish_reason (an unknown wire value is an error). */
ts_finish_reason ts_finish_reason_from_pb(Tessera__V1__FinishReason reason);
Tessera__V1__FinishReason ts_finish_reason_to_pb(ts_finish_reason reason);

/* Usage ↔ ts_request_usage. */
void ts_request_usage_to_pb(const ts_request_usage *u, Tessera__V1__Usage *out);

#endif
