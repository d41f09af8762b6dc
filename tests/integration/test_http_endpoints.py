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
  4. Connections (raw sockets; --http-idle-timeout-s 1, --http-max-header 8192, a node of one
     sequence at a time and --max-queued-requests 0): two requests on one keep-alive connection;
     a client that stops mid-header is dropped after the idle timeout; an oversized header is
     431; a request that would wait in a full queue is 429 with Retry-After; a client that
     disconnects mid-stream (its node paused, its KV blocks held) cancels its request: the
     blocks come back, request_success_total{finished_reason="abort"} counts it, and it
     generated far fewer than its max_tokens; the same for a non-streaming request.
Everything the test starts is stopped.

  test_http_endpoints.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time

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

        # 4. connections: keep-alive, slow clients, big headers, 429, disconnects
        c.procs = []
        c.api_key = None
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--http-idle-timeout-s", "1",
                            "--http-max-header", "8192", "--max-queued-requests", "0",
                            "--heartbeat-ms", "10", "--heartbeat-timeout-ms", "5000")
        node = c.start_node("g0", "--batch-seqs", "1", "--ctx", "512")
        c.wait_groups(1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        statuses, socks = [], []
        for _ in range(2):
            conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "Once"}))
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
            socks.append(conn.sock)
        conn.close()
        f.check(statuses == [200, 200] and socks[0] is socks[1] and socks[0] is not None,
                "keep-alive: two requests on one connection (%s)" % statuses)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        t = time.time()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        got = s.recv(100)
        s.close()
        f.check(got == b"" and time.time() - t < 4,
                "a stalled client is dropped after the idle timeout (%r in %.1f s)"
                % (got, time.time() - t))
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        got = s.recv(100)
        s.close()
        f.check(got.startswith(b"HTTP/1.1 431"), "an oversized header: 431 (%r)" % got[:40])

        def kv_held():
            return any(g.kv_blocks_free < g.kv_blocks_total for g in c.health().groups)

        def counters():
            """(aborted requests, generated tokens) of group g0, from /metrics."""
            status, text = request(port, "GET", "/metrics")
            m = re.search(rb'^tessera:request_success_total\{[^}]*group="g0"[^}]*'
                          rb'finished_reason="abort"\} (\d+)', text, re.M)
            gen = sum(float(v) for v in re.findall(
                rb'^tessera:generation_tokens_total\{[^}]*group="g0"[^}]*\} (\S+)', text, re.M))
            return (int(m.group(1)) if m else 0), gen

        def stream_then_pause(stream):
            """A long request over a raw socket; once the node holds its KV, the node is paused.
            Returns the socket, or None when the request finished first."""
            body = json.dumps({"prompt": "Once upon a time", "max_tokens": 480,
                               "ignore_eos": True, "stream": stream}).encode()
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body)
            harness.wait_for(kv_held, 5, 0.002)  # heartbeats every 10 ms
            sc.signal_proc(node, signal.SIGSTOP)
            time.sleep(0.1)
            # the last heartbeat before the pause: it runs, holding blocks, and has not finished
            if kv_held() and c.health().requests_active > 0:
                return s
            sc.signal_proc(node, signal.SIGCONT)
            while s.recv(65536):  # it finished first: read it to the end (no disconnect)
                pass
            s.close()
            return None

        for stream in (True, False):
            s = None
            for _ in range(10):  # the node may finish before it is paused: again
                aborts, gen = counters()
                s = stream_then_pause(stream)
                if s:
                    break
            f.check(s is not None, "stream %s: caught the request while it held KV" % stream)
            if not s:
                continue
            # while it holds the only sequence, another request would wait: the queue is full
            status, doc = None, None
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "Once"}))
                r = conn.getresponse()
                status, retry, doc = r.status, r.getheader("Retry-After"), json.loads(r.read())
            finally:
                conn.close()
            f.check(status == 429 and retry and int(retry) >= 1 and
                    doc["error"]["type"] == "rate_limit_error",
                    "a full queue: 429 with Retry-After (%s %s %s)" % (status, retry, doc))
            s.close()  # the client goes away while its node is paused
            time.sleep(0.5)  # the coordinator notices and sends the cancel
            sc.signal_proc(node, signal.SIGCONT)
            f.check(c.wait_kv_idle(10), "stream %s: KV blocks back after the disconnect (%s)"
                    % (stream, c.health()))
            aborts2, gen2 = counters()
            f.check(aborts2 == aborts + 1 and gen2 - gen < 480,
                    "stream %s: counted as abort (%d -> %d), stopped early (%d of 480 tokens)"
                    % (stream, aborts, aborts2, gen2 - gen))
        print("ok   4. keep-alive, idle timeout, 431, 429 with Retry-After, disconnects cancel")
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    import sys
    sys.exit(main())
