#!/usr/bin/python3
"""Bad requests get INVALID_ARGUMENT with a message, garbage on the port is shrugged off, and
the server keeps serving.

Usage: test_server_bad_requests.py TESSERA --pydir DIR_WITH_tessera/v1/inference_pb2.py

With Python grpcio against a real cluster: an empty prompt, negative max_tokens, an unknown
model, a prompt longer than the context (as ids and as text), token ids outside the vocabulary,
and out-of-range sampling values each end the Generate call with INVALID_ARGUMENT and a
non-empty message. Then raw sockets write garbage bytes, an HTTP/1.1 request and a broken
HTTP/2 stream to the port. Afterwards a normal request still streams the reference text, no
KV block is held, and `tessera generate --server` still works.
"""
import argparse
import json
import socket

import cluster
import harness


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--pydir", required=True)
    args = ap.parse_args()
    grpc, pb = cluster.import_grpc(args.pydir)
    f = harness.Failures()
    case = harness.greedy_cases()[0]
    expected = harness.reference_completion(case)
    with cluster.Cluster(args.tessera) as c:
        channel = grpc.insecure_channel(c.target)
        generate = channel.unary_stream("/tessera.v1.Inference/Generate",
                                        request_serializer=pb.GenerateRequest.SerializeToString,
                                        response_deserializer=pb.GenerateResponse.FromString)
        list_models = channel.unary_unary("/tessera.v1.Inference/ListModels",
                                          request_serializer=pb.ListModelsRequest.SerializeToString,
                                          response_deserializer=pb.ListModelsResponse.FromString)
        health = channel.unary_unary("/tessera.v1.Inference/Health",
                                     request_serializer=pb.HealthRequest.SerializeToString,
                                     response_deserializer=pb.HealthResponse.FromString)
        model = list_models(pb.ListModelsRequest(), timeout=10).models[0]
        ctx, vocab = model.context_length, model.vocab_size
        S = pb.SamplingParams
        bad = {
            "empty prompt": pb.GenerateRequest(prompt=""),
            "negative max_tokens": pb.GenerateRequest(prompt="Once", max_tokens=-1),
            "unknown model": pb.GenerateRequest(model="no-such-model", prompt="Once"),
            "prompt ids longer than the context": pb.GenerateRequest(prompt_ids=[5] * (ctx + 1)),
            "prompt ids filling the context": pb.GenerateRequest(prompt_ids=[5] * ctx),
            "text longer than the context": pb.GenerateRequest(prompt="Once upon a time " * ctx),
            "id beyond the vocabulary": pb.GenerateRequest(prompt_ids=[1, vocab]),
            "negative id": pb.GenerateRequest(prompt_ids=[1, -5]),
            "negative temperature": pb.GenerateRequest(prompt="Once", sampling=S(temperature=-1)),
            "NaN temperature": pb.GenerateRequest(prompt="Once",
                                                  sampling=S(temperature=float("nan"))),
            "negative top_k": pb.GenerateRequest(prompt="Once", sampling=S(top_k=-1)),
            "top_p above 1": pb.GenerateRequest(prompt="Once", sampling=S(top_p=1.5)),
            "negative top_p": pb.GenerateRequest(prompt="Once", sampling=S(top_p=-0.5)),
            "min_p above 1": pb.GenerateRequest(prompt="Once", sampling=S(min_p=2)),
            "negative repetition_penalty": pb.GenerateRequest(
                prompt="Once", sampling=S(repetition_penalty=-1)),
            "empty stop string": pb.GenerateRequest(prompt="Once", stop=["."] + [""]),
            "negative repetition_last_n": pb.GenerateRequest(
                prompt="Once", sampling=S(repetition_last_n=-1)),
        }
        for what, req in bad.items():
            try:
                msgs = list(generate(req, timeout=60))
                f.check(False, "%s: refused (it streamed %d messages)" % (what, len(msgs)))
            except grpc.RpcError as e:
                ok = e.code() == grpc.StatusCode.INVALID_ARGUMENT and bool(e.details())
                f.check(ok, "%s: INVALID_ARGUMENT with a message (got %s: %r)"
                        % (what, e.code().name, e.details()))
                if ok:
                    print("ok   %s: %s" % (what, e.details()))

        # Garbage on the port: each on its own connection, which the server drops.
        for junk in (b"\x00\xff garbage \x13\x37" * 500,
                     b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x09\x00\x00\x00\x00\x01junk"):
            s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
            try:
                s.sendall(junk)
                s.settimeout(5)
                try:
                    while s.recv(4096):
                        pass
                except (socket.timeout, ConnectionResetError):
                    pass
            finally:
                s.close()
        # A connection that sends half an HTTP/2 preface and goes quiet must not block others.
        idle = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        idle.sendall(b"PRI * HTTP/2.0\r\n")

        msgs = list(generate(pb.GenerateRequest(prompt=case["prompt"],
                                                max_tokens=case["n_predict"]), timeout=60))
        f.check("".join(m.text for m in msgs) == expected,
                "after the bad requests and the garbage a normal request streams the reference")
        p = harness.run([args.tessera, "generate", "--server", c.target, "-p", case["prompt"],
                         "-n", str(case["n_predict"]), "--json"], timeout=60)
        f.check(json.loads(p.stdout)["completion"] == expected,
                "tessera generate --server still works")
        idle.close()

        def settled():
            h = health(pb.HealthRequest(), timeout=10)
            return h.serving and h.requests_active == 0 and all(
                g.running == 0 and g.waiting == 0 and g.kv_blocks_free == g.kv_blocks_total
                for g in h.groups)
        f.check(harness.wait_for(settled, 15, 0.2), "no request or KV block left behind")
        channel.close()
        f.check(c.alive(), "the cluster is still up")
    f.finish()


if __name__ == "__main__":
    main()
