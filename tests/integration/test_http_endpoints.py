#!/usr/bin/python3
"""The HTTP API's endpoints beside completions, against a real coordinator (--http-listen,
--chat-template chatml) and one node with the bundled model, over raw http.client:
  1. POST /tokenize: a prompt gives the ids and pieces of gRPC Tokenize (BOS as the model wants
     it; add_special_tokens false drops it), count and max_model_len (ListModels' context);
     chat messages give the prompt a chat completion counts; POST /detokenize gives the text
     back; bad fields are 400 with their param, an unknown model 404, GET 405.
  2. GET /health: 200 while the group serves, 503 once it is gone.
Everything the test starts is stopped.

  test_http_endpoints.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import http.client
import json

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
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    import sys
    sys.exit(main())
