#!/usr/bin/python3
"""A real gRPC client (Python grpcio, protoc --python_out classes) against a real cluster.

Usage: test_server_python.py TESSERA --pydir DIR_WITH_tessera/v1/inference_pb2.py

- the Python example of docs/api.md, run as it is written there, streams the reference story;
- ListModels, Tokenize (ids equal to the reference prompt ids) and Health answer;
- 64 concurrent streams on one channel (8 prompts, 8 times each, different lengths) each give
  the reference greedy text, token ids that add up to usage.completion_tokens, and their
  request_id back on the first and the last message;
- a stream cancelled mid-way frees its KV blocks: Health shows every block free and nothing
  running again.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading

import cluster
import harness

DOC = os.path.join(harness.SOURCE_DIR, "docs", "api.md")


def doc_example():
    """The first whole program among the ```python blocks of docs/api.md (one that imports
    grpc: the page also has one-line fragments, e.g. of TLS channels)."""
    with open(DOC) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    programs = [b for b in blocks if re.search(r"^import grpc$", b, re.M)]
    if not programs:
        raise AssertionError("docs/api.md has no ```python example that imports grpc")
    return programs[0]


def methods(grpc, pb, channel):
    def unary(name, req, resp):
        return channel.unary_unary("/tessera.v1.Inference/" + name,
                                   request_serializer=req.SerializeToString,
                                   response_deserializer=resp.FromString)
    gen = channel.unary_stream("/tessera.v1.Inference/Generate",
                               request_serializer=pb.GenerateRequest.SerializeToString,
                               response_deserializer=pb.GenerateResponse.FromString)
    return (gen, unary("Tokenize", pb.TokenizeRequest, pb.TokenizeResponse),
            unary("ListModels", pb.ListModelsRequest, pb.ListModelsResponse),
            unary("Health", pb.HealthRequest, pb.HealthResponse))


def kv_all_free(health):
    h = health(health.pb.HealthRequest(), timeout=10)
    return (h.serving and h.groups and h.requests_active == 0 and
            all(g.running == 0 and g.kv_blocks_free == g.kv_blocks_total for g in h.groups))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--pydir", required=True)
    args = ap.parse_args()
    grpc, pb = cluster.import_grpc(args.pydir)
    f = harness.Failures()
    cases = harness.greedy_cases()
    expected = [harness.reference_completion(c) for c in cases]
    with cluster.Cluster(args.tessera) as c:
        # The documented example, verbatim.
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as tmp:
            tmp.write(doc_example())
        env = dict(os.environ, PYTHONPATH=args.pydir)
        p = subprocess.run(["/usr/bin/python3", tmp.name, c.target], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120, env=env)
        os.unlink(tmp.name)
        f.check(p.returncode == 0, "docs example exit 0 (got %d: %s)" % (p.returncode, p.stderr))
        first = next(i for i, cs in enumerate(cases) if cs["prompt"] == "Once upon a time")
        if not f.check(p.stdout.startswith(expected[first] + "\n[FINISH_REASON_LENGTH] 5 prompt + "
                                           "64 completion tokens"), "docs example output"):
            print("  got: %r" % p.stdout, file=sys.stderr)

        channel = grpc.insecure_channel(c.target)
        generate, tokenize, list_models, health = methods(grpc, pb, channel)
        health.pb = pb

        models = list_models(pb.ListModelsRequest(), timeout=10).models
        f.check(len(models) == 1 and models[0].vocab_size == 512 and
                models[0].context_length > 0 and models[0].node_groups == 1,
                "ListModels: one model, vocabulary 512, one group (%r)" % models)
        tok = tokenize(pb.TokenizeRequest(text=cases[0]["prompt"]), timeout=10)
        f.check(list(tok.ids) == cases[0]["prompt_ids"] and len(tok.pieces) == len(tok.ids),
                "Tokenize: the reference prompt ids, one piece each")
        h = health(pb.HealthRequest(), timeout=10)
        f.check(h.serving and len(h.groups) == 1 and h.groups[0].kv_blocks_total > 0,
                "Health: serving, one group with KV blocks")

        # 64 concurrent streams over one channel.
        results = [None] * 64

        def stream(i):
            case = cases[i % len(cases)]
            rid = "py-%d" % i
            req = pb.GenerateRequest(prompt=case["prompt"], max_tokens=case["n_predict"],
                                     request_id=rid)
            try:
                msgs = list(generate(req, timeout=300))
                results[i] = (msgs, rid)
            except grpc.RpcError as e:
                results[i] = (e, rid)

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (msgs, rid) in enumerate(results):
            name = "stream %d (%r)" % (i, cases[i % len(cases)]["prompt"])
            if not f.check(isinstance(msgs, list), "%s: succeeded (%r)" % (name, msgs)):
                continue
            text = "".join(m.text for m in msgs)
            ids = [t for m in msgs for t in m.token_ids]
            last = msgs[-1]
            f.check(text == expected[i % len(cases)], name + ": reference text")
            f.check(last.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP),
                    name + ": finish reason on the last message")
            f.check(all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in msgs[:-1]),
                    name + ": no finish reason before the last message")
            f.check(last.usage.completion_tokens == len(ids), name + ": usage counts the tokens")
            f.check(msgs[0].request_id == rid and last.request_id == rid,
                    name + ": request_id echoed")

        # Cancel mid-stream: the KV blocks come back.
        call = generate(pb.GenerateRequest(prompt="Once upon a time", max_tokens=400,
                                           ignore_eos=True), timeout=300)
        got = 0
        for _ in call:
            got += 1
            if got == 3:
                break
        call.cancel()
        f.check(got == 3, "cancel: three messages before the cancel")
        f.check(harness.wait_for(lambda: kv_all_free(health), 15, 0.2),
                "cancel: Health shows every KV block free and nothing running")
        channel.close()
        f.check(c.alive(), "the cluster is still up")
    f.finish()


if __name__ == "__main__":
    main()
