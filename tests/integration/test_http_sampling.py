#!/usr/bin/python3
"""The sampling surface of the coordinator, over HTTP (the official `openai` client) and gRPC
(tessera.v1.Inference) against one coordinator and one node with the bundled model:
  1. Seeds: the same seed gives the same text at temperature 1; without a seed, requests differ
     (HTTP and gRPC: SamplingParams.seed unset); seed 0 given is a seed like any other.
  2. Stop strings: a stop string that spans two tokens of the greedy text ends the completion
     before it, with finish_reason "stop", streamed and not, over HTTP and gRPC; the stream sends
     the text before it in several chunks (only what could still become the stop is held back).
  3. Bad values are openai.BadRequestError naming the param and its limit (temperature above 2,
     five stop strings) and INVALID_ARGUMENT over gRPC.
Everything the test starts is stopped.

  test_http_sampling.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
  (the client half runs as: VENV_PYTHON test_http_sampling.py --client JSON)
"""
import json
import os
import subprocess
import sys

PROMPT = "Once upon a time"


def client(cfg):
    """The openai-package checks; runs under the venv's python. Prints failures, exit 1 on any."""
    import openai

    bad = []

    def check(cond, what):
        if not cond:
            bad.append(what)

    c = openai.OpenAI(base_url=cfg["base_url"], api_key="none", max_retries=0, timeout=60)
    model = cfg["model"]

    def text(**kw):
        kw.setdefault("max_tokens", 16)
        return c.completions.create(model=model, prompt=PROMPT, **kw).choices[0].text

    # 1. seeds
    a, b = text(temperature=1, seed=1234), text(temperature=1, seed=1234)
    check(a == b, "seed 1234 twice: %r != %r" % (a, b))
    check(text(temperature=1, seed=0) == text(temperature=1, seed=0), "seed 0 reproducible")
    unseeded = {text(temperature=1) for _ in range(4)}
    check(len(unseeded) >= 3, "4 unseeded requests at temperature 1 gave %d texts: %s"
          % (len(unseeded), unseeded))
    chat = [{"role": "user", "content": "Tell me a story."}]
    replies = {c.chat.completions.create(model=model, messages=chat, max_tokens=12,
                                         temperature=1).choices[0].message.content
               for _ in range(3)}
    check(len(replies) >= 2, "unseeded chat replies all equal: %s" % replies)
    same = {c.chat.completions.create(model=model, messages=chat, max_tokens=12, temperature=1,
                                      seed=77).choices[0].message.content for _ in range(2)}
    check(len(same) == 1, "seeded chat replies differ: %s" % same)

    # 2. a stop string spanning two tokens
    stop, expected = cfg["stop"], cfg["stop_expected"]
    r = c.completions.create(model=model, prompt=PROMPT, max_tokens=cfg["n"], temperature=0,
                             stop=[stop])
    check(r.choices[0].text == expected and r.choices[0].finish_reason == "stop",
          "stop %r: %r (%s), expected %r" % (stop, r.choices[0].text, r.choices[0].finish_reason,
                                             expected))
    chunks = list(c.completions.create(model=model, prompt=PROMPT, max_tokens=cfg["n"],
                                       temperature=0, stop=["zzzz-never", stop], stream=True))
    streamed = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    check(streamed == expected, "streamed with stop %r: %r, expected %r" % (stop, streamed,
                                                                         expected))
    check(chunks[-1].choices[0].finish_reason == "stop", "streamed finish_reason: %s" % chunks[-1])
    pieces = [ch.choices[0].text for ch in chunks if ch.choices and ch.choices[0].text]
    check(len(pieces) >= cfg["stop_tokens_before"] - 1,
          "the stream held back more than the stop's prefix: %d pieces for %d tokens"
          % (len(pieces), cfg["stop_tokens_before"]))
    check(all(stop not in p for p in pieces), "a chunk carries the stop string")

    # 3. bad values name the param and the limit
    for fields, param, words in [({"temperature": 2.5}, None, "[0, 2]"),
                                 ({"stop": ["a", "b", "c", "d", "e"]}, None, "0 to 4 strings"),
                                 ({"seed": "x"}, "seed", "seed")]:
        try:
            c.completions.create(model=model, prompt=PROMPT, max_tokens=2, **fields)
            check(False, "%s was accepted" % fields)
        except openai.BadRequestError as e:
            msg = e.body.get("message", "") if isinstance(e.body, dict) else str(e)
            check(words in msg, "%s: the message names the limit %r: %r" % (fields, words, msg))
            check(param is None or e.param == param, "%s: param %s, got %s"
                  % (fields, param, e.param))
    print("".join("FAIL (openai client): %s\n" % b for b in bad), end="")
    return 1 if bad else 0


def spanning_stop(pieces):
    """A stop string over the boundary of two tokens of the greedy text (pieces: each token's
    text), from the middle of it; (stop, the text before its first occurrence, tokens before)."""
    full = "".join(pieces)
    for k in range(len(pieces) // 2, len(pieces) - 1):
        left, right = pieces[k], pieces[k + 1]
        if len(left) >= 2 and len(right) >= 2 and left.strip() and right.strip():
            stop = left[-2:] + right[:2]
            cut = full.find(stop)
            before = 0
            while len("".join(pieces[:before + 1])) <= cut:
                before += 1
            return stop, full[:cut], before
    return None, None, 0


def grpc_checks(f, c, stop, expected):
    S = c.pb.SamplingParams
    t1, _, _ = c.generate(prompt=PROMPT, max_tokens=16, sampling=S(temperature=1, seed=99))
    t2, _, _ = c.generate(prompt=PROMPT, max_tokens=16, sampling=S(temperature=1, seed=99))
    f.check(t1 == t2, "gRPC seed 99 twice: %r != %r" % (t1, t2))
    z1, _, _ = c.generate(prompt=PROMPT, max_tokens=16, sampling=S(temperature=1, seed=0))
    z2, _, _ = c.generate(prompt=PROMPT, max_tokens=16, sampling=S(temperature=1, seed=0))
    f.check(z1 == z2, "gRPC seed 0 twice: %r != %r" % (z1, z2))
    texts = {c.generate(prompt=PROMPT, max_tokens=16, sampling=S(temperature=1))[0]
             for _ in range(4)}
    f.check(len(texts) >= 3, "gRPC: 4 unseeded requests gave %d texts" % len(texts))
    t, _, msgs = c.generate(prompt=PROMPT, max_tokens=24, stop=[stop])
    f.check(t == expected and msgs[-1].finish_reason == c.pb.FINISH_REASON_STOP,
            "gRPC stop %r: %r, expected %r" % (stop, t, expected))
    for fields, words in [(dict(sampling=S(temperature=2.5)), "[0, 2]"),
                          (dict(stop=["a", "b", "c", "d", "e"]), "0 to 4 strings")]:
        code, details = c.status_of(prompt=PROMPT, max_tokens=2, **fields)
        f.check(code == c.grpc.StatusCode.INVALID_ARGUMENT and words in details,
                "gRPC %s: INVALID_ARGUMENT naming %r (%s %r)" % (fields, words, code, details))


def main():
    import harness
    import serving_cluster as sc

    f = harness.Failures()
    python = harness.venv_python(["openai==3.57.0"])
    c = sc.from_args()
    try:
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--chat-template", "chatml")
        c.start_node("g0")
        c.wait_groups(1)
        n = 24
        _, _, msgs = c.generate(prompt=PROMPT, max_tokens=n, ignore_eos=True)
        pieces = [m.text for m in msgs if m.token_ids]
        stop, expected, before = spanning_stop(pieces)
        f.check(stop is not None, "a stop string spanning two tokens in %r" % pieces)
        grpc_checks(f, c, stop, expected)
        h = c.list_models()
        cfg = {"base_url": "http://127.0.0.1:%d/v1" % port, "model": h.models[0].name, "n": n,
               "stop": stop, "stop_expected": expected, "stop_tokens_before": before}
        cl = subprocess.run([python, os.path.abspath(__file__), "--client", json.dumps(cfg)],
                            capture_output=True, text=True, timeout=300)
        f.check(cl.returncode == 0, "the openai client checks:\n%s%s" % (cl.stdout, cl.stderr))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(client(json.loads(sys.argv[2])))
    sys.exit(main())
