#!/usr/bin/python3
"""The Files and Batches API (issue 16) through the official `openai` client (cached venv) and
raw http.client, on a real coordinator (--http-listen, --state-dir, --chat-template chatml) with
one node of the bundled model:
  1. files.create / list / retrieve / content / delete; an upload that is not multipart, has
     another purpose, or more than 50,000 lines is a 400 naming the problem.
  2. A completions batch and a chat batch run to `completed`: one output line per custom_id,
     each greedy text equal to the same request sent to /v1/completions or
     /v1/chat/completions, request_counts and usage filled, every state's timestamp set; a line
     the one validation refuses (temperature 500) is a failed line (status 400, error file); a
     prompt whose prefix is cached reports usage cached_tokens in its line and in the batch.
  3. A file with bad lines fails the batch at validation with every bad line and its number in
     errors.data (invalid JSON, duplicate custom_id, wrong url, wrong method, a body field of the
     wrong type, an unknown model).
  4. Interactive requests sent while the batch fills every sequence slot (--batch-seqs 4) give
     their greedy texts at once (the router lets them displace batch work, the node preempts it).
     Cancel keeps partial results: the finished lines in the output file, the others in the
     error file as batch_cancelled, each custom_id exactly once.
  5. An expired window (completion_window "3s", an extension): status expired, finished work
     kept, the rest batch_expired.
  6. batches.list pages with limit/after; bad creates (unknown file, endpoint, window) are
     NotFoundError / BadRequestError with the param.
  7. tessera up --state-dir passes the state to its coordinator (a batch completes).
  8. Durable state refused when broken: a database over --state-max-size fails the batch with
     state_write_failed naming the full state; a corrupt tessera.db stops the coordinator at
     start with a message saying so (exit 2); a coordinator without --state-dir answers 404
     naming the flag.
  test_batch_api.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import json
import os
import subprocess
import sys
import time

PROMPTS = ["Once upon a time", "The little dog", "Lily wanted", "One day, a bird", "Tom and Sue"]
N = 12


def client(cfg):
    import openai

    bad = []

    def check(cond, what):
        if not cond:
            bad.append(what)
        return cond

    c = openai.OpenAI(base_url=cfg["base_url"], api_key="unused", max_retries=0, timeout=60)
    tmp = cfg["tmp"]

    def upload(name, lines):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            for l in lines:
                f.write((l if isinstance(l, str) else json.dumps(l)) + "\n")
        with open(path, "rb") as f:
            return c.files.create(file=f, purpose="batch"), path

    def wait(bid, states=("completed", "failed", "expired", "cancelled"), timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            b = c.batches.retrieve(bid)
            if b.status in states:
                return b
            time.sleep(0.1)
        return c.batches.retrieve(bid)

    def lines_of(file_id):
        if not file_id:
            return []
        return [json.loads(l) for l in c.files.content(file_id).text.splitlines()]

    def line(cid, prompt, **body):
        b = {"prompt": prompt, "max_tokens": N, "temperature": 0}
        b.update(body)
        return {"custom_id": cid, "method": "POST", "url": "/v1/completions", "body": b}

    # 1. files
    good = [line("req-%d" % i, p) for i, p in enumerate(PROMPTS)]
    good.append(line("bad-temp", "Once", temperature=500))
    f, path = upload("good.jsonl", good)
    check(f.purpose == "batch" and f.bytes == os.path.getsize(path) and f.filename == "good.jsonl",
          "files.create: %s" % f)
    check(c.files.retrieve(f.id).id == f.id, "files.retrieve")
    check(f.id in [x.id for x in c.files.list().data], "files.list has the file")
    check(c.files.content(f.id).read() == open(path, "rb").read(), "files.content is the upload")

    # 2. a completions batch
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/completions",
                         completion_window="24h", metadata={"run": "one"})
    check(b.status == "validating" and b.metadata == {"run": "one"} and
          b.expires_at == b.created_at + 86400, "batches.create: %s" % b)
    b = wait(b.id)
    check(b.status == "completed", "the batch completed: %s" % b)
    check(b.request_counts.total == 6 and b.request_counts.completed == 5 and
          b.request_counts.failed == 1, "request_counts: %s" % b.request_counts)
    check(b.in_progress_at and b.finalizing_at and b.completed_at and b.usage and
          b.usage.output_tokens == 5 * N, "timestamps and usage: %s" % b)
    out = lines_of(b.output_file_id)
    refs = {}
    check(sorted(o["custom_id"] for o in out) == ["req-%d" % i for i in range(5)],
          "one output line per custom_id: %s" % [o["custom_id"] for o in out])
    for o in out:
        i = int(o["custom_id"].split("-")[1])
        ref = c.completions.create(model=cfg["model"], prompt=PROMPTS[i], max_tokens=N,
                                   temperature=0)
        refs[PROMPTS[i]] = ref.choices[0].text
        check(o["response"]["status_code"] == 200 and o["error"] is None and
              o["response"]["body"]["choices"][0]["text"] == ref.choices[0].text,
              "line %s: the text of /v1/completions (%r vs %r)" %
              (o["custom_id"], o["response"]["body"]["choices"][0]["text"], ref.choices[0].text))
    errs = lines_of(b.error_file_id)
    check(len(errs) == 1 and errs[0]["custom_id"] == "bad-temp" and
          errs[0]["response"]["status_code"] == 400 and
          "temperature" in errs[0]["response"]["body"]["error"]["message"],
          "the refused line is in the error file with 400: %s" % errs)

    # ... a chat batch
    msgs = [{"role": "user", "content": "Tell me about a cat."}]
    chat = [{"custom_id": "chat-1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": msgs, "max_tokens": N, "temperature": 0}}]
    cf, _ = upload("chat.jsonl", chat)
    cb = wait(c.batches.create(input_file_id=cf.id, endpoint="/v1/chat/completions",
                               completion_window="24h").id)
    ref = c.chat.completions.create(model=cfg["model"], messages=msgs, max_tokens=N,
                                    temperature=0)
    out = lines_of(cb.output_file_id)
    check(cb.status == "completed" and len(out) == 1 and
          out[0]["response"]["body"]["object"] == "chat.completion" and
          out[0]["response"]["body"]["choices"][0]["message"]["content"] ==
          ref.choices[0].message.content, "chat batch = chat.completions: %s vs %s" % (out, ref))

    # ... n choices in a line: each its own sample (seed + j), as /v1/completions gives them
    sampled = dict(temperature=0.9, seed=77, max_tokens=N, ignore_eos=True)
    nf, _ = upload("n.jsonl", [line("n-3", PROMPTS[1], n=3, **sampled),
                               line("n-1", PROMPTS[1], **sampled)])
    nb = wait(c.batches.create(input_file_id=nf.id, endpoint="/v1/completions",
                               completion_window="24h").id)
    out = {o["custom_id"]: o["response"]["body"] for o in lines_of(nb.output_file_id)}
    ref = c.completions.create(model=cfg["model"], prompt=PROMPTS[1], n=3, temperature=0.9,
                               seed=77, max_tokens=N, extra_body={"ignore_eos": True})
    three = out.get("n-3", {})
    got = [(ch["index"], ch["text"]) for ch in three.get("choices", [])]
    want = [(ch.index, ch.text) for ch in sorted(ref.choices, key=lambda ch: ch.index)]
    check(nb.status == "completed" and got == want and len(set(t for _, t in got)) > 1,
          "a line with n=3 has the 3 choices of /v1/completions: %s vs %s" % (got, want))
    check(three.get("usage", {}).get("completion_tokens") == 3 * N and
          three.get("usage", {}).get("prompt_tokens") == ref.usage.prompt_tokens,
          "its usage: the prompt once, every choice's tokens: %s" % three.get("usage"))
    one = out.get("n-1", {}).get("choices", [{}])
    check(one[0].get("text") == want[0][1], "choice 0 is the n=1 answer of the same seed")

    # ... usage counts the prefix cache: a long prompt sent interactively first (its full 16-token
    # blocks published), then as a batch line, is served from the cache in both the line's usage
    # and the batch's
    long_prompt = " ".join(PROMPTS * 4)
    c.completions.create(model=cfg["model"], prompt=long_prompt, max_tokens=1, temperature=0)
    uf, _ = upload("cached.jsonl", [line("cached-1", long_prompt)])
    ub = wait(c.batches.create(input_file_id=uf.id, endpoint="/v1/completions",
                               completion_window="24h").id)
    out = lines_of(ub.output_file_id)
    got = out[0]["response"]["body"]["usage"] if len(out) == 1 else {}
    cached = got.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    check(ub.status == "completed" and cached >= 16 and
          ub.usage.input_tokens_details.cached_tokens == cached and
          ub.usage.input_tokens == got.get("prompt_tokens"),
          "cached prompt tokens in the line's usage (%s) and the batch's (%s)" % (got, ub.usage))

    # 3. validation errors with line numbers
    bad_lines = [
        line("v-1", "Once"),
        '{"custom_id": "v-2", "method": "POST", ',  # 2: not JSON
        line("v-3", "Once"),
        line("v-1", "Once"),  # 4: duplicate
        dict(line("v-5", "Once"), url="/v1/embeddings"),  # 5
        dict(line("v-6", "Once"), method="GET"),  # 6
        line("v-7", "Once", temperature="hot"),  # 7
        line("v-8", "Once", model="no-such-model"),  # 8
        "",  # blank lines are skipped
        line("v-10", "Once"),
        line("v-11", "Once", logprobs=2),  # 11: refused, not silently dropped
    ]
    vf, _ = upload("bad.jsonl", bad_lines)
    vb = wait(c.batches.create(input_file_id=vf.id, endpoint="/v1/completions",
                               completion_window="24h").id)
    data = vb.errors.data if vb.errors else []
    got = {(e.line, e.code) for e in data}
    want = {(2, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "invalid_url"),
            (6, "invalid_method"), (7, "invalid_request"), (8, "model_not_found"),
            (11, "invalid_request")}
    check(vb.status == "failed" and vb.failed_at and got == want,
          "validation: failed with each bad line: %s" % [(e.line, e.code, e.message) for e in data])
    check(any(e.line == 4 and "line 1" in e.message for e in data), "the duplicate names line 1")
    check(any(e.line == 7 and e.param == "body.temperature" for e in data),
          "the type error names body.temperature: %s" % data)
    check(any(e.line == 11 and e.param == "body.logprobs" for e in data),
          "logprobs in a batch line is refused naming body.logprobs: %s" % data)

    # 4. cancel keeps partial results
    # (the bundled model runs ~20k tokens/s: enough lines that the batch outlasts the checks)
    many = [line("c-%d" % i, PROMPTS[i % 5], max_tokens=120, ignore_eos=True)
            for i in range(1500)]
    mf, _ = upload("many.jsonl", many)
    mb = c.batches.create(input_file_id=mf.id, endpoint="/v1/completions",
                          completion_window="24h")
    end = time.time() + 60
    while time.time() < end and c.batches.retrieve(mb.id).request_counts.completed < 2:
        time.sleep(0.05)
    # interactive requests while the batch fills every slot (--batch-seqs 4: three batch, one
    # kept): four at once, so three displace batch sequences on the node; all give their text
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        t0 = time.time()
        futs = [ex.submit(c.completions.create, model=cfg["model"], prompt=PROMPTS[i],
                          max_tokens=N, temperature=0) for i in range(4)]
        texts = [fu.result().choices[0].text for fu in futs]
        took = time.time() - t0
    check(texts == [refs[PROMPTS[i]] for i in range(4)],
          "interactive requests beside a running batch: %s" % texts)
    check(c.batches.retrieve(mb.id).status == "in_progress" and took < 10,
          "they did not wait for the batch (%.1f s)" % took)
    cancelled = c.batches.cancel(mb.id)
    check(cancelled.status in ("cancelling", "cancelled"), "cancel: %s" % cancelled.status)
    mb = wait(mb.id)
    out, errs = lines_of(mb.output_file_id), lines_of(mb.error_file_id)
    ids = [o["custom_id"] for o in out + errs]
    check(mb.status == "cancelled" and mb.cancelling_at and mb.cancelled_at, "cancelled: %s" % mb)
    check(len(out) >= 2 and len(out) < 1500 and len(out) == mb.request_counts.completed,
          "partial results kept: %d lines, counts %s" % (len(out), mb.request_counts))
    check(sorted(ids) == sorted("c-%d" % i for i in range(1500)),
          "every custom_id once across output and error files")
    check(all(e["error"]["code"] == "batch_cancelled" for e in errs), "batch_cancelled lines")
    check(c.batches.cancel(mb.id).status == "cancelled", "cancelling again is harmless")

    # 5. an expired window (extension: 3s)
    ef, _ = upload("expire.jsonl", [line("e-%d" % i, PROMPTS[i % 5], max_tokens=120,
                                         ignore_eos=True) for i in range(4000)])
    eb = c.batches.create(input_file_id=ef.id, endpoint="/v1/completions",
                          completion_window="3s")
    check(eb.expires_at == eb.created_at + 3, "a 3s window: %s" % eb)
    eb = wait(eb.id, timeout=60)
    out, errs = lines_of(eb.output_file_id), lines_of(eb.error_file_id)
    check(eb.status == "expired" and eb.expired_at, "expired: %s" % eb)
    check(len(out) + len(errs) == 4000 and len(errs) > 0 and
          all(e["error"]["code"] == "batch_expired" for e in errs) and
          all(o["response"]["status_code"] == 200 for o in out),
          "finished work kept, the rest batch_expired (%d + %d)" % (len(out), len(errs)))

    # 6. list pages; bad creates
    page = c.batches.list(limit=2)
    check(len(page.data) == 2 and page.has_more, "list limit 2: %s" % page)
    rest = c.batches.list(limit=100, after=page.data[-1].id)
    all_ids = [x.id for x in page.data] + [x.id for x in rest.data]
    check(len(all_ids) == 7 and len(set(all_ids)) == 7 and all_ids[0] == eb.id,
          "newest first, pages continue after: %s" % all_ids)
    for kw, err, param in [
            ({"input_file_id": "file-nope"}, openai.NotFoundError, "input_file_id"),
            ({"endpoint": "/v1/embeddings"}, openai.BadRequestError, "endpoint"),
            ({"completion_window": "25x"}, openai.BadRequestError, "completion_window"),
            ({"completion_window": "0s"}, openai.BadRequestError, "completion_window")]:
        args = {"input_file_id": f.id, "endpoint": "/v1/completions", "completion_window": "24h"}
        args.update(kw)
        try:
            c.batches.create(**args)
            check(False, "%s accepted" % kw)
        except err as e:
            check(e.param == param, "%s: param %s (%s)" % (kw, e.param, e))
    try:
        c.batches.retrieve("batch_nope")
        check(False, "an unknown batch was found")
    except openai.NotFoundError:
        pass
    d = c.files.delete(vf.id)
    check(d.deleted and d.id == vf.id, "files.delete: %s" % d)
    try:
        c.files.retrieve(vf.id)
        check(False, "a deleted file is still there")
    except openai.NotFoundError:
        pass
    for b_ in bad:
        print("FAIL (openai client): " + b_)
    return 1 if bad else 0


def multipart(fields, file_name, content):
    boundary = "tesseraBoundary7MA4YWxk"
    out = b""
    for k, v in fields.items():
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                % (boundary, k, v)).encode()
    if content is not None:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                "Content-Type: application/jsonl\r\n\r\n" % (boundary, file_name)).encode()
        out += content + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return out, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def main():
    import harness
    import serving_cluster as sc
    from test_http_api import raw
    free_port = harness.free_port

    f = harness.Failures()
    python = harness.venv_python(["openai==3.57.0"])
    c = sc.from_args()
    try:
        port = free_port()
        state = os.path.join(c.tmp, "state")
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--state-dir", state,
                            "--chat-template", "chatml")
        c.start_node("g0", "--batch-seqs", "4")
        c.wait_groups(1)
        h = c.list_models()
        cfg = {"base_url": "http://127.0.0.1:%d/v1" % port, "model": h.models[0].name,
               "tmp": c.tmp}
        cl = subprocess.run([python, os.path.abspath(__file__), "--client", json.dumps(cfg)],
                            capture_output=True, text=True, timeout=400)
        f.check(cl.returncode == 0, "the openai client checks:\n%s%s" % (cl.stdout, cl.stderr))

        # uploads the client would never send
        status, doc = raw(port, "POST", "/v1/files", b"{}", {"Content-Type": "application/json"})
        f.check(status == 400 and "multipart" in doc["error"]["message"],
                "not multipart: 400 (%s %s)" % (status, doc))
        body, hdr = multipart({"purpose": "fine-tune"}, "x.jsonl", b"{}\n")
        status, doc = raw(port, "POST", "/v1/files", body, hdr)
        f.check(status == 400 and doc["error"]["param"] == "purpose",
                "purpose fine-tune: 400 (%s %s)" % (status, doc))
        body, hdr = multipart({"purpose": "batch"}, "big.jsonl", b"{}\n" * 50001)
        status, doc = raw(port, "POST", "/v1/files", body, hdr)
        f.check(status == 400 and "50000" in doc["error"]["message"],
                "50,001 lines: 400 (%s %s)" % (status, doc))
        body, hdr = multipart({"purpose": "batch"}, "t.jsonl", b"{}\n")
        status, doc = raw(port, "POST", "/v1/files", body[:-10], hdr)
        f.check(status == 400 and "multipart" in doc["error"]["message"],
                "a truncated multipart body: 400 (%s %s)" % (status, doc))
        status, doc = raw(port, "POST", "/v1/files", body, hdr)
        f.check(status == 200 and doc["object"] == "file", "a raw multipart upload: %s" % doc)
        status, doc = raw(port, "GET", "/v1/files/%s/nope" % doc["id"])
        f.check(status == 404, "unknown path under a file: 404 (%s)" % status)
        status, doc = raw(port, "PUT", "/v1/batches")
        f.check(status == 405, "PUT /v1/batches: 405 (%s)" % status)
        status, doc = raw(port, "GET", "/v1/batches?limit=0")
        f.check(status == 400 and doc["error"]["param"] == "limit", "limit=0: 400 (%s)" % doc)

        # a full state: the batch fails with the reason, never a wrong output
        c.stop_all()
        c.procs = []
        small = os.path.join(c.tmp, "small-state")
        port = free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--state-dir", small,
                            "--state-max-size", "96K")
        c.start_node("g1")
        c.wait_groups(1)
        lines = b"".join(json.dumps({"custom_id": "f-%d-%s" % (i, "x" * 300), "method": "POST",
                                     "url": "/v1/completions",
                                     "body": {"prompt": "Once", "max_tokens": 4,
                                              "temperature": 0}}).encode() + b"\n"
                         for i in range(60))
        body, hdr = multipart({"purpose": "batch"}, "full.jsonl", lines)
        status, fdoc = raw(port, "POST", "/v1/files", body, hdr)
        f.check(status == 200, "upload under the cap: %s %s" % (status, fdoc))
        status, bdoc = raw(port, "POST", "/v1/batches", json.dumps(
            {"input_file_id": fdoc["id"], "endpoint": "/v1/completions",
             "completion_window": "24h"}), {"Content-Type": "application/json"})
        end = time.time() + 60
        while time.time() < end and bdoc.get("status") not in ("failed", "completed"):
            time.sleep(0.1)
            status, bdoc = raw(port, "GET", "/v1/batches/" + bdoc["id"])
        errors = (bdoc.get("errors") or {}).get("data") or [{}]
        f.check(bdoc.get("status") == "failed" and errors[0].get("code") == "state_write_failed"
                and "full" in errors[0].get("message", ""),
                "a full state fails the batch with the reason: %s" % bdoc)
        body, hdr = multipart({"purpose": "batch"}, "huge.jsonl", lines * 4)
        status, doc = raw(port, "POST", "/v1/files", body, hdr)
        f.check(status == 500 and "full" in doc["error"]["message"],
                "an upload over the cap: 500 naming the full state (%s %s)" % (status, doc))

        # a corrupt database stops the coordinator at start
        c.stop_all()
        c.procs = []
        for extra in ("-wal", "-shm"):
            if os.path.exists(os.path.join(small, "tessera.db" + extra)):
                os.remove(os.path.join(small, "tessera.db" + extra))
        with open(os.path.join(small, "tessera.db"), "wb") as db:
            db.write(b"this is not an SQLite database at all" * 200)
        p = subprocess.run([os.path.join(c.bin_dir, "tessera-coordinator"), "--listen",
                            "127.0.0.1:0", "-m", harness.MODEL_F32, "--http-listen",
                            "127.0.0.1:0", "--state-dir", small],
                           capture_output=True, text=True, timeout=30)
        f.check(p.returncode == 2 and "corrupt" in p.stderr and "tessera.db" in p.stderr,
                "a corrupt database: exit 2 naming it (%d %s)" % (p.returncode, p.stderr))

        # no --state-dir: 404 naming the flag
        port = free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port)
        status, doc = raw(port, "GET", "/v1/batches")
        f.check(status == 404 and "--state-dir" in doc["error"]["message"],
                "no --state-dir: 404 naming it (%s %s)" % (status, doc))

        # tessera up --state-dir: the coordinator it starts serves batches
        c.stop_all()
        c.procs = []
        port = free_port()
        sc.start_up(c, "--groups", "1", "--http-port", str(port), "--state-dir",
                    os.path.join(c.tmp, "up-state"))
        body, hdr = multipart({"purpose": "batch"}, "up.jsonl", json.dumps(
            {"custom_id": "u", "method": "POST", "url": "/v1/completions",
             "body": {"prompt": "Once", "max_tokens": 4, "temperature": 0}}).encode() + b"\n")
        status, fdoc = raw(port, "POST", "/v1/files", body, hdr)
        status, bdoc = raw(port, "POST", "/v1/batches", json.dumps(
            {"input_file_id": fdoc["id"], "endpoint": "/v1/completions",
             "completion_window": "24h"}), {"Content-Type": "application/json"})
        end = time.time() + 60
        while time.time() < end and bdoc.get("status") not in ("failed", "completed"):
            time.sleep(0.1)
            status, bdoc = raw(port, "GET", "/v1/batches/" + bdoc["id"])
        f.check(bdoc.get("status") == "completed" and bdoc["request_counts"]["completed"] == 1,
                "a batch through tessera up --state-dir: %s" % bdoc)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(client(json.loads(sys.argv[2])))
    sys.exit(main())
