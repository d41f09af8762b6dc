#!/usr/bin/python3
"""The sampling surface of the coordinator, over HTTP (the official `openai` client) and gRPC
(tessera.v1.Inference) against one coordinator and one node with the bundled model:
  1. Seeds: the same seed gives the same text at temperature 1; without a seed, requests differ
     (HTTP and gRPC: SamplingParams.seed unset); seed 0 given is a seed like any other.
  2. Stop strings: a stop string that spans two tokens of the greedy text ends the completion
     before it, with finish_reason "stop", streamed and not, over HTTP and gRPC; the stream sends
     the text before it in several chunks (only what could still become the stop is held back).
  3. presence_penalty and frequency_penalty change the greedy text (and give the gRPC text for
     the same values); logit_bias +100 forces a token at every step, -100 bans the greedy first
     token; the extensions top_k 1 and min_p 1 pick the greedy text at temperature 1;
     repetition_penalty changes it; priority and user are accepted. Seeded, penalised and biased
     requests run together give the texts each gave alone.
  4. Log-probabilities: completions logprobs=3 give tokens whose text is the choice's, offsets,
     and at each greedy step the token's logprob is the largest of its 3 top_logprobs (which
     are <= 0 and sum to at most 1); the values are gRPC's for the same request; a stream carries
     every token once; chat logprobs + top_logprobs=5 give content entries with exact bytes.
     Over gRPC (logprobs + sampling.top_logprobs) the greedy token is the first of the top ids.
     echo gives the prompt before the completion (a stream: as its first chunk).
  5. Bad values are openai.BadRequestError naming the param (null only for what needs the model:
     ids outside the vocabulary, a prompt longer than the context) and its limit (temperature above 2,
     five stop strings, penalties outside [-2, 2], logit_bias keys, ids and values, priority,
     user) and INVALID_ARGUMENT over gRPC.
  6. gRPC's n: n=3 streams samples 0-2 in one call, each with its last message and usage, the
     call's request_id, samples 1 and 2 reading the prompt's full blocks from the prefix cache;
     seeded, it is reproducible and sample j is the text of seed + j alone; greedy n=2 is the
     greedy text twice; n 129 and -1 are INVALID_ARGUMENT; cancelling an n=4 call frees the KV
     of every sample.
Everything the test starts is stopped.

  test_http_sampling.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
  (the client half runs as: VENV_PYTHON test_http_sampling.py --client JSON)
"""
import json
import os
import subprocess
import sys

PROMPT = "Once upon a time"
PEN_N = 48  # tokens: the bundled model repeats itself (and the penalties bite) after ~26


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

    # 3. penalties, logit_bias, extensions
    greedy = cfg["greedy"]
    n = PEN_N
    check(text(temperature=0, max_tokens=n) == greedy, "greedy text")
    for name in ["presence_penalty", "frequency_penalty"]:
        t = text(temperature=0, max_tokens=n, **{name: 2.0})
        check(t != greedy, "%s 2 leaves the greedy text as it is" % name)
        check(t == cfg["grpc_" + name], "%s: HTTP %r != gRPC %r" % (name, t, cfg["grpc_" + name]))
        check(t == text(temperature=0, max_tokens=n, **{name: 2.0}), "%s is deterministic" % name)
    forced = cfg["forced_id"]
    r = c.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=1,
                             logit_bias={str(forced): 100})
    check(r.choices[0].text == cfg["forced_text"] and r.usage.completion_tokens == 5,
          "logit_bias +100 on %d: %r, expected gRPC's %r" % (forced, r.choices[0].text,
                                                             cfg["forced_text"]))
    first = cfg["greedy_first_id"]
    t = text(temperature=0, max_tokens=1, logit_bias={str(first): -100})
    check(t != cfg["greedy_first_text"], "logit_bias -100 bans the greedy first token: %r" % t)
    check(text(temperature=1, max_tokens=n, extra_body={"top_k": 1}) == greedy, "top_k 1")
    check(text(temperature=1, max_tokens=n, extra_body={"min_p": 1.0}) == greedy, "min_p 1")
    check(text(temperature=0, max_tokens=n, extra_body={"repetition_penalty": 1.5}) != greedy,
          "repetition_penalty 1.5 leaves the greedy text as it is")
    check(text(temperature=0, max_tokens=n, user="u-1", extra_body={"priority": -5}) == greedy,
          "priority and user accepted")
    # determinism whatever else runs: seeded, penalised, biased requests in one batch give what
    # each gave alone
    import concurrent.futures
    kinds = [dict(temperature=1, seed=11, frequency_penalty=1.0),
             dict(temperature=0.7, seed=12, presence_penalty=1.5, logit_bias={"300": 3}),
             dict(temperature=1, seed=13, top_p=0.9), dict(temperature=0, frequency_penalty=2.0)]
    alone = [text(max_tokens=n, **k) for k in kinds]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda k: text(max_tokens=n, **k), kinds * 2))
    check(together == alone * 2, "concurrent requests differ from each alone:\n%s\n%s"
          % (alone, together))

    # 4. logprobs
    import math
    r = c.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    check(lp is not None and len(lp.tokens) == 8 and "".join(lp.tokens) == r.choices[0].text,
          "completion logprobs tokens: %s" % lp)
    offsets = [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    check(lp.text_offset == offsets, "text_offset %s != %s" % (lp.text_offset, offsets))
    for i in range(8):
        top = lp.top_logprobs[i]
        check(len(top) == 3 and abs(max(top.values()) - lp.token_logprobs[i]) < 1e-6 and
              all(v <= 0 for v in top.values()) and sum(math.exp(v) for v in top.values()) <= 1.0001,
              "step %d: the greedy token's logprob %s is the max of %s" % (i, lp.token_logprobs[i],
                                                                           top))
    grpc_lps = cfg["grpc_logprobs"]
    check(all(abs(a - b) < 1e-6 for a, b in zip(lp.token_logprobs, grpc_lps)) and
          len(grpc_lps) == 8, "HTTP logprobs %s != gRPC's %s" % (lp.token_logprobs, grpc_lps))
    chunks = list(c.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0,
                                       logprobs=2, stream=True))
    toks = [t for ch in chunks if ch.choices and ch.choices[0].logprobs
            for t in ch.choices[0].logprobs.tokens]
    check("".join(toks) == r.choices[0].text and len(toks) == 8,
          "streamed logprobs tokens %s (text %r)" % (toks, r.choices[0].text))
    s = c.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=1, seed=5,
                             logprobs=5).choices[0].logprobs
    check(all(s.token_logprobs[i] <= max(s.top_logprobs[i].values()) + 1e-6 for i in range(8)),
          "sampled tokens: no logprob above the step's best")
    m = c.chat.completions.create(model=model, messages=chat, max_tokens=6, temperature=0,
                                  logprobs=True, top_logprobs=5)
    content = m.choices[0].logprobs.content
    check(len(content) == 6 and "".join(e.token for e in content) == m.choices[0].message.content,
          "chat logprobs content: %s" % content)
    for e in content:
        check(len(e.top_logprobs) == 5 and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6 and
              e.top_logprobs[0].token == e.token and bytes(e.bytes) == e.token.encode(),
              "chat entry %s" % e)
    m = c.chat.completions.create(model=model, messages=chat, max_tokens=3, temperature=0)
    check(m.choices[0].logprobs is None, "chat without logprobs: null")

    # echo: the prompt, then the completion (streamed: the prompt first)
    plain = text(temperature=0, max_tokens=8)
    check(text(temperature=0, max_tokens=8, echo=True) == PROMPT + plain, "echo")
    chunks = list(c.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0,
                                       echo=True, stream=True))
    pieces = [ch.choices[0].text for ch in chunks if ch.choices]
    check(pieces and pieces[0] == PROMPT and "".join(pieces) == PROMPT + plain,
          "streamed echo: %s" % pieces)

    # 5. bad values name the param and the limit
    for fields, param, words in [({"temperature": 2.5}, "temperature", "[0, 2]"),
                                 ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "0 to 4 strings"),
                                 ({"seed": "x"}, "seed", "seed"),
                                 ({"presence_penalty": 2.5}, "presence_penalty", "presence_penalty"),
                                 ({"frequency_penalty": -3}, "frequency_penalty", "[-2, 2]"),
                                 ({"logit_bias": {"abc": 1}}, "logit_bias", "token id"),
                                 ({"logit_bias": {"5": 101}}, "logit_bias", "[-100, 100]"),
                                 ({"logit_bias": {"99999": 1}}, None, "vocabulary"),  # judged at admission
                                 ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias",
                                  "0 to 300 entries"),
                                 ({"logit_bias": [1]}, "logit_bias", "object"),
                                 ({"extra_body": {"priority": 2000000}}, "priority", "got 2000000"),
                                 ({"user": 5}, "user", "user must be a string"),
                                 ({"logprobs": 6}, "logprobs", "0 to 5"),
                                 ({"logprobs": True}, "logprobs", "0 to 5"),
                                 ({"echo": True, "logprobs": 1}, "echo", "echo with logprobs"),
                                 ({"echo": "yes"}, "echo", "boolean")]:
        try:
            c.completions.create(model=model, prompt=PROMPT, max_tokens=2, **fields)
            check(False, "%s was accepted" % fields)
        except openai.BadRequestError as e:
            msg = e.body.get("message", "") if isinstance(e.body, dict) else str(e)
            check(words in msg, "%s: the message names the limit %r: %r" % (fields, words, msg))
            check(e.param == param, "%s: param %s, got %s"
                  % (fields, param, e.param))
    for fields, param, words in [({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "[0, 20]"),
                                 ({"top_logprobs": 2}, "top_logprobs", "logprobs: true"),
                                 ({"logprobs": 1}, "logprobs", "boolean")]:
        try:
            c.chat.completions.create(model=model, messages=chat, max_tokens=2, **fields)
            check(False, "chat %s was accepted" % fields)
        except openai.BadRequestError as e:
            msg = e.body.get("message", "") if isinstance(e.body, dict) else str(e)
            check(words in msg and e.param == param,
                  "chat %s: %r (param %s)" % (fields, msg, e.param))
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
    """The same fields over gRPC; returns what the HTTP half compares with."""
    S = c.pb.SamplingParams
    out = {}
    greedy, ids, gmsgs = c.generate(prompt=PROMPT, max_tokens=PEN_N)
    for name in ["presence_penalty", "frequency_penalty"]:
        t, _, _ = c.generate(prompt=PROMPT, max_tokens=PEN_N, sampling=S(**{name: 2.0}))
        f.check(t != greedy, "gRPC %s changes the greedy text" % name)
        out["grpc_" + name] = t
    forced = next(t for t in range(10, 500) if t not in ids)
    ftext, fids, _ = c.generate(prompt=PROMPT, max_tokens=5, ignore_eos=True,
                            sampling=S(temperature=1, logit_bias_ids=[forced],
                                       logit_bias_values=[100]))
    f.check(fids == [forced] * 5, "gRPC logit_bias +100 on %d: %s" % (forced, fids))
    _, bids, _ = c.generate(prompt=PROMPT, max_tokens=1,
                            sampling=S(logit_bias_ids=[ids[0]], logit_bias_values=[-100]))
    f.check(bids and bids[0] != ids[0], "gRPC logit_bias -100 bans %d: %s" % (ids[0], bids))
    for fields, words in [(dict(sampling=S(presence_penalty=5)), "presence_penalty"),
                          (dict(sampling=S(logit_bias_ids=[1, 2], logit_bias_values=[1])),
                           "1 values for 2"),
                          (dict(sampling=S(logit_bias_ids=[1], logit_bias_values=[-101])),
                           "[-100, 100]")]:
        code, details = c.status_of(prompt=PROMPT, max_tokens=2, **fields)
        f.check(code == c.grpc.StatusCode.INVALID_ARGUMENT and words in details,
                "gRPC %s: INVALID_ARGUMENT naming %r (%s %r)" % (fields, words, code, details))
    _, lids, lmsgs = c.generate(prompt=PROMPT, max_tokens=8, logprobs=True,
                                sampling=S(top_logprobs=4))
    f.check(all(len(m.top_logprobs) == len(m.token_ids) for m in lmsgs), "gRPC top_logprobs "
            "per token")
    tops = [t for m in lmsgs for t in m.top_logprobs]
    f.check(len(tops) == 8 and all(len(t.ids) == 4 and t.ids[0] == i for t, i in zip(tops, lids)),
            "gRPC: the greedy token first among 4 top ids: %s %s" % (lids, tops))
    lps = [v for m in lmsgs for v in m.logprobs]
    f.check(all(abs(t.logprobs[0] - v) < 1e-7 for t, v in zip(tops, lps)),
            "gRPC: the token's logprob is the top one's")
    code, details = c.status_of(prompt=PROMPT, max_tokens=2, logprobs=True,
                                sampling=S(top_logprobs=21))
    f.check(code == c.grpc.StatusCode.INVALID_ARGUMENT and "top_logprobs" in details,
            "gRPC top_logprobs 21: %s %s" % (code, details))
    out["grpc_logprobs"] = lps
    out.update(greedy=greedy, forced_id=forced, forced_text=ftext, greedy_first_id=ids[0],
               greedy_first_text=gmsgs[0].text)
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
    grpc_samples(f, c, greedy)
    return out


def grpc_samples(f, c, greedy):
    """GenerateRequest.n: indexed samples in one call, sharing the prompt's KV."""
    S = c.pb.SamplingParams

    def by_index(msgs):
        texts, ends = {}, {}
        for m in msgs:
            texts[m.index] = texts.get(m.index, "") + m.text
            if m.finish_reason:
                ends.setdefault(m.index, []).append(m)
        return texts, ends

    long_ids = [1 + (i * 29) % 400 for i in range(40)]  # two full KV blocks of 16 and a part
    kw = dict(prompt_ids=long_ids, max_tokens=16, ignore_eos=True, request_id="samples-1")
    _, _, msgs = c.generate(n=3, sampling=S(temperature=1, seed=7), **kw)
    texts, ends = by_index(msgs)
    f.check(sorted(texts) == [0, 1, 2] and all(len(ends.get(i, [])) == 1 for i in range(3)),
            "gRPC n=3: samples 0-2, each with one last message: %s" % sorted(ends.items()))
    usage = {i: e[0].usage for i, e in ends.items()}
    f.check(all(u.completion_tokens == 16 and u.prompt_tokens == 40 for u in usage.values()),
            "gRPC n=3: each sample's usage: %s" % usage)
    f.check(all(usage[i].cached_prompt_tokens >= 32 for i in (1, 2) if i in usage),
            "gRPC n=3: samples 1 and 2 read the prompt's full blocks from the cache: %s" % usage)
    f.check({m.request_id for m in msgs if m.request_id} == {"samples-1"},
            "gRPC n=3: the call's request_id on every sample")
    f.check(len(set(texts.values())) == 3, "gRPC n=3 sampled: three texts: %s" % texts)
    again, _ = by_index(list(c.generate_call(n=3, sampling=S(temperature=1, seed=7), **kw)))
    f.check(again == texts, "gRPC n=3 seeded: reproducible: %s vs %s" % (again, texts))
    for j in range(3):
        alone, _, _ = c.generate(sampling=S(temperature=1, seed=7 + j), **kw)
        f.check(texts.get(j) == alone, "gRPC n=3: sample %d is seed 7 + %d's text (%r vs %r)"
                % (j, j, texts.get(j), alone))
    _, _, msgs = c.generate(prompt=PROMPT, max_tokens=PEN_N, n=2)
    texts, _ = by_index(msgs)
    f.check(texts == {0: greedy, 1: greedy}, "gRPC greedy n=2: the greedy text twice: %s" % texts)
    for n in (129, -1):
        code, details = c.status_of(prompt=PROMPT, max_tokens=2, n=n)
        f.check(code == c.grpc.StatusCode.INVALID_ARGUMENT and "n must be in [1, 128]" in details,
                "gRPC n=%d: INVALID_ARGUMENT naming n (%s %r)" % (n, code, details))
    # Cancelled after the first message: every sample's KV is freed.
    call = c.generate_call(prompt_ids=long_ids, max_tokens=100, ignore_eos=True, n=4,
                           sampling=S(temperature=1))
    next(call)
    call.cancel()
    f.check(c.wait_kv_idle(), "gRPC n=4 cancelled: every sample's KV blocks are freed: %s"
            % c.health())


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
        cfg = grpc_checks(f, c, stop, expected)
        h = c.list_models()
        cfg.update({"base_url": "http://127.0.0.1:%d/v1" % port, "model": h.models[0].name,
                    "n": n, "stop": stop, "stop_expected": expected,
                    "stop_tokens_before": before})
        cl = subprocess.run([python, os.path.abspath(__file__), "--client", json.dumps(cfg)],
                            capture_output=True, text=True, timeout=300)
        f.check(cl.returncode == 0, "the openai client checks:\n%s%s" % (cl.stdout, cl.stderr))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(client(json.loads(sys.argv[2])))
    sys.exit(main())
