#!/usr/bin/python3
"""The HTTP API's endpoints beside completions, against a real coordinator (--http-listen,
--chat-template chatml) and one node with the bundled model, over raw http.client:
  1. POST /tokenize: a prompt gives the ids and pieces of gRPC Tokenize (BOS as the model wants
     it; add_special_tokens false drops it), count and max_model_len (ListModels' context);
     chat messages give the prompt a chat completion counts; POST /detokenize gives the text
     back; bad fields are 400 with their param, an unknown model 404, GET 405.
  2. GET /health: 200 while the group serves, 503 once it is gone.
  3. API keys from TESSERA_API_KEY and --api-key-file (two keys), never on the command line: every
     key opens /v1/*, /tokenize and the gRPC Inference methods; no key or a wrong one is 401 /
     UNAUTHENTICATED (the tessera CLI too, until TESSERA_API_KEY is set); /health and /metrics
     are open, and guarded with --protect-metrics (gRPC Health too, but not on the Worker
     listener, which launchers watch with the cluster secret); a key file with a bad key or none stops the coordinator
     with exit 2 naming the line.
Everything the test starts is stopped.

  test_http_endpoints.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import http.client
import json
import os
import subprocess

import harness
import serving_cluster as sc


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers or {})
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--chat-template", "chatml",
                            "--heartbeat-timeout-ms", "1000")
        node = c.start_node("g0")
        c.wait_groups(1)

        # 1. tokenize, detokenize
        prompt = "Once upon a time, a cat"
        ref = c._unary("Tokenize", c.pb.TokenizeRequest(text=prompt), c.pb.TokenizeResponse)
        ctx = c.list_models().models[0].context_length
        status, doc = request(port, "POST", "/tokenize",
                              {"prompt": prompt, "return_token_strs": True})
        f.check(status == 200 and doc["tokens"] == list(ref.ids) and
                doc["count"] == len(ref.ids) and doc["max_model_len"] == ctx and
                doc["token_strs"] == list(ref.pieces),
                "tokenize: %s %s (gRPC: %s, context %d)" % (status, doc, list(ref.ids), ctx))
        no_bos = c._unary("Tokenize", c.pb.TokenizeRequest(text=prompt, no_bos=True),
                          c.pb.TokenizeResponse)
        status, doc = request(port, "POST", "/tokenize",
                              {"model": "llama", "prompt": prompt, "add_special_tokens": False})
        f.check(status == 200 and doc["tokens"] == list(no_bos.ids) and doc["token_strs"] is None,
                "tokenize without special tokens: %s %s" % (status, doc))
        status, doc = request(port, "POST", "/detokenize", {"tokens": list(ref.ids)})
        f.check(status == 200 and doc == {"prompt": prompt}, "detokenize: %s %s" % (status, doc))

        messages = [{"role": "user", "content": "Tell me a story."}]
        status, chat = request(port, "POST", "/v1/chat/completions",
                               {"messages": messages, "max_tokens": 1})
        status2, doc = request(port, "POST", "/tokenize", {"messages": messages})
        f.check(status == 200 and status2 == 200 and
                doc["count"] == chat["usage"]["prompt_tokens"] == len(doc["tokens"]),
                "tokenize messages: %s %s, chat usage %s" % (status2, doc, chat))
        status, bare = request(port, "POST", "/tokenize",
                               {"messages": messages, "add_generation_prompt": False})
        f.check(status == 200 and bare["count"] < doc["count"] and
                bare["tokens"] == doc["tokens"][:bare["count"]],
                "add_generation_prompt false: a prefix (%s %s)" % (status, bare))

        for path, body, param in [
                ("/tokenize", {"prompt": 5}, "prompt"),
                ("/tokenize", {}, "messages"),
                ("/tokenize", {"prompt": "a", "messages": messages}, "prompt"),
                ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens"),
                ("/detokenize", {"tokens": [1, 100000]}, "tokens"),
                ("/detokenize", {"tokens": [-1]}, "tokens"),
                ("/detokenize", {"tokens": "1 2"}, "tokens"),
                ("/detokenize", {}, "tokens")]:
            status, doc = request(port, "POST", path, body)
            f.check(status == 400 and isinstance(doc, dict) and
                    doc["error"]["param"] == param and doc["error"]["message"],
                    "%s %s: 400 param %s (%s %s)" % (path, body, param, status, doc))
        status, doc = request(port, "POST", "/tokenize", {"model": "gpt-9", "prompt": "a"})
        f.check(status == 404 and doc["error"]["code"] == "model_not_found",
                "tokenize, unknown model: 404 (%s %s)" % (status, doc))
        status, doc = request(port, "GET", "/detokenize")
        f.check(status == 405, "GET /detokenize: 405 (%s)" % status)
        print("ok   1. /tokenize and /detokenize")

        # 2. /health follows the groups
        status, doc = request(port, "GET", "/health")
        f.check(status == 200 and doc["status"] == "ok", "/health: %s %s" % (status, doc))
        harness.kill_tree(node)
        node.wait(timeout=10)
        f.check(harness.wait_for(lambda: request(port, "GET", "/health")[0] == 503, 10, 0.1),
                "/health is 503 once the only group is gone (%s)"
                % (request(port, "GET", "/health"),))
        print("ok   2. /health: 200, then 503 with no group")

        # 3. API keys
        env_key, file_keys = "sk-env-0123456789", ["sk-file-one", "sk-file-two"]
        keys = os.path.join(c.tmp, "keys")
        with open(keys, "w") as kf:
            kf.write("# comment\n\n  %s\n%s\t\n" % tuple(file_keys))
        for protect in (False, True):
            c.stop_all()
            c.procs = []
            c.api_key = None
            port = harness.free_port()
            flags = ["--http-listen", "127.0.0.1:%d" % port, "--api-key-file", keys]
            coord = c.start_coordinator(*(flags + (["--protect-metrics"] if protect else [])),
                                        env=dict(os.environ, TESSERA_API_KEY=env_key))
            c.start_node("g0")
            c.api_key = env_key
            c.wait_groups(1)
            with open("/proc/%d/cmdline" % coord.pid, "rb") as cl:
                cmdline = cl.read().decode()
            f.check(not any(k in cmdline for k in [env_key] + file_keys),
                    "no key on the coordinator's command line: %r" % cmdline)
            for key in [env_key] + file_keys:
                h = {"Authorization": "Bearer " + key}
                status, _ = request(port, "GET", "/v1/models", headers=h)
                status2, _ = request(port, "POST", "/tokenize", {"prompt": "a"}, headers=h)
                f.check(status == 200 and status2 == 200, "key %s: %s %s" % (key, status, status2))
                c.api_key = key
                text, _, _ = c.generate(prompt="Once", max_tokens=2)
                f.check(len(text) > 0, "gRPC Generate with key %s" % key)
            for h in [{}, {"Authorization": "Bearer sk-file-on"}, {"Authorization": env_key},
                      {"Authorization": "Bearer " + env_key + "x"}]:
                for method, path, body in [("GET", "/v1/models", None),
                                           ("POST", "/v1/completions", {"prompt": "a"}),
                                           ("POST", "/tokenize", {"prompt": "a"})]:
                    status, doc = request(port, method, path, body, headers=h)
                    f.check(status == 401 and doc["error"]["type"] == "authentication_error",
                            "%s %s with %s: 401 (%s %s)" % (method, path, h, status, doc))
            for key in [None, "sk-wrong"]:
                c.api_key = key
                for call in [lambda: c.list_models(), lambda: c.generate(prompt="a"),
                             lambda: c._unary("Tokenize", c.pb.TokenizeRequest(text="a"),
                                              c.pb.TokenizeResponse)]:
                    try:
                        call()
                        f.check(False, "gRPC with key %s was accepted" % key)
                    except c.grpc.RpcError as e:
                        f.check(e.code() == c.grpc.StatusCode.UNAUTHENTICATED,
                                "gRPC with key %s: %s" % (key, e.code()))
            c.api_key = None
            status_h, _ = request(port, "GET", "/health")
            status_m, _ = request(port, "GET", "/metrics")
            try:
                c.health()
                grpc_health = "OK"
            except c.grpc.RpcError as e:
                grpc_health = e.code().name
            want = (401, 401, "UNAUTHENTICATED") if protect else (200, 200, "OK")
            f.check((status_h, status_m, grpc_health) == want,
                    "protect-metrics %s: /health, /metrics, Health without a key: %s, want %s"
                    % (protect, (status_h, status_m, grpc_health), want))
            h = {"Authorization": "Bearer " + file_keys[1]}
            f.check(request(port, "GET", "/metrics", headers=h)[0] == 200 and
                    request(port, "GET", "/health", headers=h)[0] == 200,
                    "/health and /metrics with a key")
            worker = c.grpc.insecure_channel(c.worker_endpoint)
            try:
                hr = worker.unary_unary("/tessera.v1.Inference/Health",
                                        request_serializer=c.pb.HealthRequest.SerializeToString,
                                        response_deserializer=c.pb.HealthResponse.FromString)(
                                            c.pb.HealthRequest(), timeout=10,
                                            metadata=[("tessera-cluster-secret", c.secret)])
                f.check(len(hr.groups) == 1, "Health on the Worker listener, no key: %s" % hr)
            finally:
                worker.close()
        tessera = os.path.join(c.bin_dir, "tessera")
        gen = [tessera, "generate", "--server", c.endpoint, "-p", "Once", "-n", "2"]
        env = {k: v for k, v in os.environ.items() if k != "TESSERA_API_KEY"}
        r = subprocess.run(gen, env=env, capture_output=True, text=True, timeout=60)
        f.check(r.returncode == 1 and "API key" in r.stderr,
                "tessera generate without TESSERA_API_KEY: %s %r" % (r.returncode, r.stderr))
        r = subprocess.run(gen, env=dict(env, TESSERA_API_KEY=file_keys[0]), capture_output=True,
                           text=True, timeout=60)
        f.check(r.returncode == 0 and r.stdout.startswith("Once"),
                "tessera generate with TESSERA_API_KEY: %s %r" % (r.returncode, r.stderr))
        c.stop_all()
        coordinator = os.path.join(c.bin_dir, "tessera-coordinator")
        for content, words in [("sk-good\nsk bad\n", "line 2"), ("# only a comment\n", "no keys")]:
            with open(keys, "w") as kf:
                kf.write(content)
            r = subprocess.run([coordinator, "--listen", "127.0.0.1:0", "--api-key-file", keys],
                               capture_output=True, text=True, timeout=60)
            f.check(r.returncode == 2 and words in r.stderr and "sk-good" not in r.stderr,
                    "key file %r: exit 2 naming %s: %s %r" % (content, words, r.returncode,
                                                                r.stderr))
        print("ok   3. API keys: HTTP 401 and gRPC UNAUTHENTICATED, --protect-metrics, the CLI")
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    import sys
    sys.exit(main())
