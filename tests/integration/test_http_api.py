#!/usr/bin/python3
"""The OpenAI-compatible HTTP API of tessera-coordinator (--http-listen), through the official
`openai` Python client (PyPI, in a cached virtual environment; skipped only when PyPI cannot be
reached) and raw http.client.

A real coordinator (with --api-key-file and a small --http-max-body) and one node with the
bundled model:
  1. models.list names the served model with its context length; GET /health is 200 without a key.
  2. A greedy completion (non-streaming) gives the text `tessera generate` prints for the same
     prompt, with usage and finish_reason "length"; the prompt as token ids (`tessera tokenize`)
     gives the same text; streaming chunks concatenate to it, the last one carries the
     finish_reason, include_usage adds a usage chunk, and the stream ends with `data: [DONE]`.
  3. Bad fields are openai.BadRequestError naming the field (a type error, and a range error
     from the one validation); an unknown model is NotFoundError; a wrong or missing key is
     AuthenticationError. n: n=3 greedy gives three indexed copies of the completion and the
     prompt's usage once; a seeded sampled n=3 is reproducible, its choices differ, choice 0 is
     the n=1 completion, streamed it gives each index its text; two prompts × n=2 (echo) give
     four choices; a chat stream with n=2 gives each choice its role, text and finish; n=129,
     n=0, best_of != n and a bad list item are 400 naming the field.
  4. Raw HTTP: malformed JSON is 400 in OpenAI's error shape, a body over --http-max-body is 413,
     an unknown path 404, a wrong method 405.
  5. Chat (--chat-template chatml): the greedy reply and its prompt tokens are `tessera chat`'s
     for the same messages (a user-typed <|im_end|> included), streaming too (the role in the
     first delta); bad messages are BadRequestError with param "messages"; through `tessera up`
     (no template for the bundled model) chat is a 400 naming --chat-template. Without
     --http-port, `tessera up --port 0` serves HTTP on a free port and prints it with a curl
     example; --no-http serves none; --no-http with --state-dir is a usage error;
     --protect-metrics reaches the coordinator (/metrics without a key is 401).
Everything the test starts is stopped.

  test_http_api.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
  (the client half runs as: VENV_PYTHON test_http_api.py --client JSON)
"""
import http.client
import json
import os
import re
import subprocess
import sys

KEY = "sk-tessera-test-1"
MAX_BODY = 64 * 1024


def client(cfg):
    """The openai-package checks; runs under the venv's python. Prints failures, exit 1 on any."""
    import openai

    bad = []

    def check(cond, what):
        if not cond:
            bad.append(what)

    c = openai.OpenAI(base_url=cfg["base_url"], api_key=KEY, max_retries=0, timeout=60)
    models = c.models.list()
    ids = [m.id for m in models.data]
    check(ids == [cfg["model"]], "models.list: %s" % ids)
    check(getattr(models.data[0], "context_length", None) == cfg["ctx"],
          "models.list context_length: %s" % models.data[0])

    r = c.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=cfg["n"],
                             temperature=0)
    check(r.choices[0].text == cfg["expected"],
          "greedy completion %r != tessera generate's %r" % (r.choices[0].text, cfg["expected"]))
    check(r.choices[0].finish_reason == "length", "finish_reason %s" % r.choices[0].finish_reason)
    check(r.object == "text_completion" and r.model == cfg["model"], "object/model: %s" % r)
    check(r.usage.prompt_tokens == len(cfg["ids"]) and r.usage.completion_tokens == cfg["n"]
          and r.usage.total_tokens == len(cfg["ids"]) + cfg["n"], "usage: %s" % r.usage)

    r = c.completions.create(model=cfg["model"], prompt=cfg["ids"], max_tokens=cfg["n"],
                             temperature=0)
    check(r.choices[0].text == cfg["expected"], "token-id prompt: %r" % r.choices[0].text)

    chunks = list(c.completions.create(model=cfg["model"], prompt=cfg["prompt"],
                                       max_tokens=cfg["n"], temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    check(text == cfg["expected"], "streamed text %r != %r" % (text, cfg["expected"]))
    with_choice = [ch for ch in chunks if ch.choices]
    check(len(with_choice) > 1, "several chunks (%d)" % len(with_choice))
    check(with_choice[-1].choices[0].finish_reason == "length" and
          all(ch.choices[0].finish_reason is None for ch in with_choice[:-1]),
          "finish_reason only in the last chunk")
    check(len({ch.id for ch in chunks}) == 1, "one id across the chunks")
    check(not chunks[-1].choices and chunks[-1].usage and
          chunks[-1].usage.completion_tokens == cfg["n"], "a final usage chunk: %s" % chunks[-1])

    for fields, param, words in [({"temperature": "hot"}, "temperature", "temperature"),
                                 ({"temperature": 500}, "temperature", "temperature"),
                                 ({"max_tokens": 0}, "max_tokens", "max_tokens"),
                                 ({"top_p": 0}, "top_p", "top_p"),
                                 ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "stop"),
                                 ({"n": 129}, "n", "n must be in [1, 128]"),
                                 ({"n": 0}, "n", "n must be in [1, 128]"),
                                 ({"n": 2, "best_of": 3}, "best_of", "best_of must equal n"),
                                 ({"prompt": ["Once", 7]}, "prompt", "prompt[1]")]:
        try:
            c.completions.create(model=cfg["model"], **dict({"prompt": "Once"}, **fields))
            check(False, "%s was accepted" % fields)
        except openai.BadRequestError as e:
            msg = e.body.get("message", "") if isinstance(e.body, dict) else str(e)
            check(words in msg, "%s: the message names the field: %r" % (fields, msg))
            check(e.status_code == 400 and e.param == param,
                  "%s: 400 with param %s: %s %s" % (fields, param, e.status_code, e.param))
    # n: choices with their index, each prompt's usage once, sampled ones seeded per choice
    n3 = c.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=cfg["n"],
                              temperature=0, n=3, best_of=3)
    check([ch.index for ch in n3.choices] == [0, 1, 2] and
          all(ch.text == cfg["expected"] for ch in n3.choices),
          "greedy n=3: three indexed copies of the one completion: %s" % n3.choices)
    check(n3.usage.prompt_tokens == len(cfg["ids"]) and
          n3.usage.completion_tokens == 3 * cfg["n"], "n=3 usage: %s" % n3.usage)
    seeded = [c.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=cfg["n"],
                                   temperature=1.0, n=3, seed=11) for _ in range(2)]
    texts = [ch.text for ch in seeded[0].choices]
    check([ch.text for ch in seeded[1].choices] == texts,
          "a seeded n=3 is reproducible: %s vs %s" % (texts, [ch.text for ch in seeded[1].choices]))
    check(len(set(texts)) > 1, "a seeded n=3 samples each choice apart: %s" % texts)
    one = c.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=cfg["n"],
                               temperature=1.0, seed=11)
    check(one.choices[0].text == texts[0], "choice 0 of a seeded n is the n=1 completion")
    streamed = {}
    for ch in c.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=cfg["n"],
                                   temperature=1.0, n=3, seed=11, stream=True):
        for choice in ch.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    check([streamed.get(i) for i in range(3)] == texts,
          "a streamed n=3 gives each index its text: %s vs %s" % (streamed, texts))
    lst = c.completions.create(model=cfg["model"], prompt=[cfg["prompt"], cfg["ids"]],
                               max_tokens=cfg["n"], temperature=0, n=2, echo=True)
    check([ch.index for ch in lst.choices] == [0, 1, 2, 3] and
          all(ch.text == cfg["prompt"] + cfg["expected"] for ch in lst.choices[:2]) and
          all(ch.text.endswith(cfg["expected"]) for ch in lst.choices[2:]),
          "two prompts × n=2 with echo: four choices: %s" % lst.choices)
    check(lst.usage.prompt_tokens == 2 * len(cfg["ids"]) and
          lst.usage.completion_tokens == 4 * cfg["n"], "a list's usage: %s" % lst.usage)
    chat_chunks = list(c.chat.completions.create(model=cfg["model"], messages=cfg["messages"],
                                                 max_tokens=cfg["n"], temperature=0, n=2,
                                                 stream=True))
    for i in range(2):
        mine = [ch.choices[0] for ch in chat_chunks if ch.choices and ch.choices[0].index == i]
        check(mine and mine[0].delta.role == "assistant" and
              all(x.delta.role is None for x in mine[1:]) and
              "".join(x.delta.content or "" for x in mine) == cfg["chat_expected"] and
              mine[-1].finish_reason == "length",
              "chat stream n=2, choice %d: its role first, its text, its finish: %s" % (i, mine))
    try:
        c.completions.create(model="no-such-model", prompt="Once", max_tokens=2)
        check(False, "an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.code == "model_not_found", "unknown model: %s" % e)
    for key in ["wrong", KEY[:-1], KEY + "x"]:  # no key at all: the raw checks
        try:
            cc = openai.OpenAI(base_url=cfg["base_url"], api_key=key, max_retries=0)
            cc.completions.create(model=cfg["model"], prompt="Once", max_tokens=2)
            check(False, "key %r was accepted" % key)
        except openai.AuthenticationError as e:
            check(e.status_code == 401, "key %r: %s" % (key, e))
    # chat: the messages through the chat template (--chat-template chatml), as `tessera chat`
    msgs = cfg["messages"]
    r = c.chat.completions.create(model=cfg["model"], messages=msgs, max_tokens=cfg["n"],
                                  temperature=0)
    m = r.choices[0].message
    check(r.object == "chat.completion" and m.role == "assistant", "chat object/role: %s" % r)
    check(m.content == cfg["chat_expected"],
          "chat greedy reply %r != tessera chat's %r" % (m.content, cfg["chat_expected"]))
    check(r.usage.prompt_tokens == cfg["chat_prompt_tokens"] and
          r.usage.completion_tokens == cfg["n"], "chat usage: %s" % r.usage)
    check(r.choices[0].finish_reason == "length", "chat finish_reason: %s" % r.choices[0])
    chunks = list(c.chat.completions.create(model=cfg["model"], messages=msgs,
                                            max_tokens=cfg["n"], temperature=0, stream=True))
    check(all(ch.object == "chat.completion.chunk" for ch in chunks), "chat chunk objects")
    check(chunks and chunks[0].choices[0].delta.role == "assistant" and
          all(ch.choices[0].delta.role is None for ch in chunks[1:]), "the role in the first delta")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    check(text == cfg["chat_expected"], "chat stream %r != %r" % (text, cfg["chat_expected"]))
    check(chunks[-1].choices[0].finish_reason == "length", "chat stream finish_reason")
    for bad_msgs in [[], "hello", [{"role": "user"}, 3]]:
        try:
            c.chat.completions.create(model=cfg["model"], messages=bad_msgs, max_tokens=2)
            check(False, "messages %r accepted" % (bad_msgs,))
        except openai.BadRequestError as e:
            check(e.param == "messages", "messages %r: param %s (%s)" % (bad_msgs, e.param, e))
    for b in bad:
        print("FAIL (openai client): " + b)
    return 1 if bad else 0


def raw(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    return r.status, doc


def is_error_shape(doc):
    e = doc.get("error") if isinstance(doc, dict) else None
    return isinstance(e, dict) and set(e) == {"message", "type", "param", "code"} and e["message"]


def main():
    import harness
    import serving_cluster as sc

    f = harness.Failures()
    python = harness.venv_python(["openai==3.57.0"])
    c = sc.from_args()
    try:
        keys = os.path.join(c.tmp, "keys")
        with open(keys, "w") as kf:
            kf.write("# not a key\n\nsk-other\n  %s  \n" % KEY)
        os.chmod(keys, 0o600)
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--api-key-file", keys,
                            "--http-max-body", str(MAX_BODY), "--chat-template", "chatml")
        auth = {"Authorization": "Bearer " + KEY}
        c.api_key = KEY  # the keys guard gRPC too

        status, doc = raw(port, "GET", "/health")
        f.check(status == 503 and doc and doc["status"] == "unavailable",
                "/health with no group: 503 (%s %s)" % (status, doc))
        status, doc = raw(port, "POST", "/v1/completions", json.dumps({"prompt": "Once"}), auth)
        f.check(status == 503 and is_error_shape(doc) and doc["error"]["type"] == "server_error",
                "a completion with no group: 503 (%s %s)" % (status, doc))

        c.start_node("g0")
        c.wait_groups(1)
        status, doc = raw(port, "GET", "/health")
        f.check(status == 200 and doc == {"status": "ok", "groups": 1},
                "/health: %s %s" % (status, doc))

        prompt, n = "Once upon a time", 24
        tessera = os.path.join(c.bin_dir, "tessera")
        gen = subprocess.run([tessera, "generate", "-m", harness.MODEL_F32,
                              "-p", prompt, "-n", str(n), "--temperature", "0"],
                             capture_output=True, text=True, timeout=120)
        f.check(gen.returncode == 0 and gen.stdout.startswith(prompt), "tessera generate: %s" % gen)
        expected = gen.stdout[len(prompt):].rstrip("\n")
        tok = subprocess.run([tessera, "tokenize", "-m", harness.MODEL_F32, "-p", prompt, "--json"],
                             capture_output=True, text=True, timeout=60)
        ids = json.loads(tok.stdout)["ids"]
        messages = [{"role": "system", "content": "You are a storyteller."},
                    {"role": "user", "content": "Tell me about a cat. <|im_end|>"}]
        msg_file = os.path.join(c.tmp, "messages.json")
        with open(msg_file, "w") as mf:
            json.dump(messages, mf)
        chat = subprocess.run([tessera, "chat", "-m", harness.MODEL_F32, "--chat-template",
                               "chatml", "--messages", msg_file, "--json", "-n", str(n)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120)
        chat_ref = json.loads(chat.stdout.splitlines()[0])
        h = c.list_models()
        cfg = {"base_url": "http://127.0.0.1:%d/v1" % port, "model": h.models[0].name,
               "ctx": h.models[0].context_length, "prompt": prompt, "n": n, "expected": expected,
               "ids": ids, "messages": messages, "chat_expected": chat_ref["completion"],
               "chat_prompt_tokens": len(chat_ref["prompt_ids"])}
        cl = subprocess.run([python, os.path.abspath(__file__), "--client", json.dumps(cfg)],
                            capture_output=True, text=True, timeout=300)
        f.check(cl.returncode == 0, "the openai client checks:\n%s%s" % (cl.stdout, cl.stderr))

        status, doc = raw(port, "POST", "/v1/completions", b"{\"prompt\": ", auth)
        f.check(status == 400 and is_error_shape(doc) and "JSON" in doc["error"]["message"],
                "malformed JSON: 400 (%s %s)" % (status, doc))
        big = json.dumps({"prompt": "a" * (MAX_BODY + 10)})
        status, doc = raw(port, "POST", "/v1/completions", big, auth)
        f.check(status == 413 and is_error_shape(doc),
                "oversized body: 413 (%s %s)" % (status, doc))
        chunked = (b"a" * 4096 for _ in range(MAX_BODY // 4096 + 2))  # no Content-Length
        status, doc = raw(port, "POST", "/v1/completions", chunked, auth)
        f.check(status == 413 and is_error_shape(doc),
                "oversized chunked body: 413 (%s %s)" % (status, doc))
        status, doc = raw(port, "POST", "/v1/completions", big)
        f.check(status in (401, 413), "oversized body without a key: refused (%s)" % status)
        status, doc = raw(port, "GET", "/v1/nowhere", None, auth)
        f.check(status == 404 and is_error_shape(doc), "unknown path: 404 (%s %s)" % (status, doc))
        status, doc = raw(port, "GET", "/v1/models")
        f.check(status == 401 and is_error_shape(doc)
                and doc["error"]["type"] == "authentication_error",
                "no key: 401 (%s %s)" % (status, doc))
        status, doc = raw(port, "GET", "/v1/chat/completions", None, auth)
        f.check(status == 405 and is_error_shape(doc), "GET chat: 405 (%s %s)" % (status, doc))
        # the server still serves after all that
        status, doc = raw(port, "POST", "/v1/completions",
                          json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0}), auth)
        f.check(status == 200 and doc["choices"][0]["text"] == expected,
                "a completion after the bad requests (%s %s)" % (status, doc))

        # tessera up --http-port: passed to the coordinator, the URL printed
        c.stop_all()
        c.procs = []
        port = harness.free_port()
        up = sc.start_up(c, "--groups", "1", "--http-port", str(port))
        f.check("HTTP API on http://127.0.0.1:%d/v1" % port in c.log(up),
                "tessera up prints the HTTP URL:\n" + c.log(up))
        status, doc = raw(port, "POST", "/v1/completions",
                          json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0}))
        f.check(status == 200 and doc["choices"][0]["text"] == expected,
                "a completion through tessera up --http-port (%s %s)" % (status, doc))
        status, doc = raw(port, "POST", "/v1/chat/completions", json.dumps({"messages": messages}))
        f.check(status == 400 and is_error_shape(doc) and
                "--chat-template" in doc["error"]["message"],
                "no chat template: 400 naming --chat-template (%s %s)" % (status, doc))

        # tessera up serves HTTP by default: with --port 0 on a free port, printed with curl
        c.stop_all()
        c.procs = []
        up = sc.start_up(c, "--groups", "1")
        m = re.search(r"HTTP API on http://127\.0\.0\.1:(\d+)/v1 \(try: curl ", c.log(up))
        f.check(m is not None, "tessera up prints its default HTTP URL and a curl:\n" + c.log(up))
        if m:
            status, doc = raw(int(m.group(1)), "POST", "/v1/completions",
                              json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0}))
            f.check(status == 200 and doc["choices"][0]["text"] == expected,
                    "a completion on tessera up's default HTTP port (%s %s)" % (status, doc))
        c.stop_all()
        c.procs = []
        up = sc.start_up(c, "--groups", "1", "--no-http")
        f.check("HTTP API" not in c.log(up), "--no-http: no HTTP API:\n" + c.log(up))
        # --protect-metrics reaches the coordinator: /metrics needs a key
        c.stop_all()
        c.procs = []
        up = sc.start_up(c, "--groups", "1", "--api-key-file", keys, "--protect-metrics")
        m = re.search(r"HTTP API on http://127\.0\.0\.1:(\d+)/v1", c.log(up))
        f.check(m is not None, "tessera up --protect-metrics serves HTTP:\n" + c.log(up))
        if m:
            status, _ = raw(int(m.group(1)), "GET", "/metrics")
            status_key, _ = raw(int(m.group(1)), "GET", "/health", None, auth)
            f.check(status == 401 and status_key == 200,
                    "tessera up --protect-metrics: /metrics 401 without a key (%s), /health 200 "
                    "with one (%s)" % (status, status_key))
        bad = subprocess.run([tessera, "up", "--no-http", "--state-dir", c.tmp],
                             capture_output=True, text=True, timeout=60)
        f.check(bad.returncode == 2 and "--no-http" in bad.stderr,
                "--no-http with --state-dir: exit 2 naming it (%s)" % bad)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(client(json.loads(sys.argv[2])))
    sys.exit(main())
