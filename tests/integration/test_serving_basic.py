#!/usr/bin/python3
"""The serving path end to end: tessera-coordinator + one tessera-node on loopback, a Python
grpcio client.

Checks: Health lists the registered group; ListModels; greedy streams equal the reference text
(prompt text and prompt ids); request_id on the first and last message, usage; a stop string that
spans a token boundary ends the text right before it; bad requests get INVALID_ARGUMENT with a
message and the server keeps serving; garbage bytes and HTTP/1.1 on the port do not hurt it;
cancel mid-stream and a passed client deadline give every KV block back (Health's
kv_blocks_free counts evictable prefix-cache blocks as free, so it returns to kv_blocks_total);
SIGTERM refuses new requests, gives a running stream the grace period then UNAVAILABLE, stops
the coordinator with exit 0, and the node leaves with exit 0; with --max-queued-requests 1
and a group of one sequence, waiting requests run highest priority first and the fourth request
gets RESOURCE_EXHAUSTED.

  test_serving_basic.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import socket
import sys
import threading
import time

import harness
import serving_cluster as sc


def check_greedy(c, f):
    cases = harness.greedy_cases()[:3]
    for case in cases:
        name = repr(case["prompt"])
        text, ids, msgs = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"],
                                     request_id="rid-" + str(len(case["prompt"])))
        expected = harness.reference_text(case)
        if not f.check(case["prompt"] + text == expected, name + ": streamed text"):
            print("  expected: %r\n  got:      %r" % (expected, case["prompt"] + text))
        last = msgs[-1]
        f.check(msgs[0].request_id == "rid-" + str(len(case["prompt"])), name + ": first request_id")
        f.check(last.request_id == msgs[0].request_id, name + ": last request_id")
        f.check(last.finish_reason in (c.pb.FINISH_REASON_LENGTH, c.pb.FINISH_REASON_STOP),
                name + ": finish reason")
        f.check(all(m.finish_reason == 0 for m in msgs[:-1]), name + ": finish only at the end")
        f.check(last.usage.completion_tokens == len(ids), name + ": usage.completion_tokens")
        f.check(last.usage.prompt_tokens == len(case["prompt_ids"]), name + ": usage.prompt_tokens")
        f.check(last.usage.ttft_ms > 0 and last.usage.total_ms >= last.usage.ttft_ms,
                name + ": timings")
        # The same prompt as ids (no BOS added by the server) gives the same tokens.
        text2, ids2, _ = c.generate(prompt_ids=case["prompt_ids"], max_tokens=case["n_predict"])
        f.check(ids2 == ids and text2 == text, name + ": prompt_ids give the same completion")
    return cases


def check_stop_string(c, f):
    case = harness.greedy_cases()[0]
    full, _, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
    # "e girl" spans the tokens "little" and " girl": the match is only seen across tokens.
    stop = "e girl"
    f.check(stop in full, "stop-string fixture present in the reference text")
    text, ids, msgs = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"],
                                 stop=[stop, "never appears"])
    f.check(text == full[:full.index(stop)], "stop string: text ends right before the match "
            "(got %r)" % text)
    f.check(msgs[-1].finish_reason == c.pb.FINISH_REASON_STOP, "stop string: finish STOP")


def check_sampling_and_logprobs(c, f):
    sp = c.pb.SamplingParams(temperature=0.9, top_k=40, top_p=0.95, seed=1234)
    t1, ids1, _ = c.generate(prompt="The little dog", max_tokens=32, sampling=sp)
    t2, ids2, _ = c.generate(prompt="The little dog", max_tokens=32, sampling=sp)
    f.check(ids1 == ids2 and len(ids1) > 0, "sampling: same seed, same tokens")
    _, ids3, msgs = c.generate(prompt="The little dog", max_tokens=32, logprobs=True)
    f.check(all(len(m.logprobs) == len(m.token_ids) for m in msgs) and
            all(lp <= 0.0 for m in msgs for lp in m.logprobs) and len(ids3) > 0,
            "logprobs: one per token, each <= 0")


def check_bad_requests(c, f):
    S = c.grpc.StatusCode
    bad = [
        ("empty prompt", dict(prompt=""), "empty prompt"),
        ("negative max_tokens", dict(prompt="Hi", max_tokens=-1), "max_tokens"),
        ("unknown model", dict(prompt="Hi", model="no-such-model"), "unknown model"),
        ("prompt longer than the context", dict(prompt_ids=[1] + [300] * 9000), "context"),
        ("id outside the vocabulary", dict(prompt_ids=[1, 99999]), "vocabulary"),
        ("top_p above 1", dict(prompt="Hi", sampling=c.pb.SamplingParams(top_p=2.0)), "top_p"),
        ("negative temperature", dict(prompt="Hi", sampling=c.pb.SamplingParams(temperature=-1)),
         "temperature"),
        ("empty stop string", dict(prompt="Hi", stop=[""]), "stop"),
    ]
    for what, fields, word in bad:
        code, details = c.status_of(timeout=10, **fields)
        f.check(code == S.INVALID_ARGUMENT and word in details,
                "%s → INVALID_ARGUMENT mentioning %r (got %s %r)" % (what, word, code, details))


def check_garbage(c, f):
    host, port = c.endpoint.rsplit(":", 1)
    for payload in (b"\x00\xff garbage \x13\x37" * 100,
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(payload)
            s.settimeout(2)
            try:
                s.recv(4096)
            except (socket.timeout, ConnectionError):
                pass
            s.close()
        except OSError as e:
            f.check(False, "garbage connection failed oddly: %s" % e)
    f.check(c.coordinator.poll() is None, "garbage bytes: the coordinator is alive")
    f.check(len(c.health().groups) == 1, "garbage bytes: Health still answers")


def check_cancel_frees_kv(c, f):
    call = c.generate_call(timeout=120, prompt="A fresh prompt about a red fox", max_tokens=6000,
                           ignore_eos=True)
    n = 0
    for m in call:
        n += len(m.token_ids)
        if n >= 100:
            break
    # Wait for a heartbeat that shows the request holding blocks, then cancel.
    busy = harness.wait_for(lambda: any(g.kv_blocks_free < g.kv_blocks_total
                                        for g in c.health().groups), 10)
    f.check(busy, "cancel: Health shows blocks in use mid-stream")
    call.cancel()
    f.check(c.wait_kv_idle(15), "cancel mid-stream: every KV block is free again (%s)"
            % c.health())
    # Deadline: the client's deadline passes mid-stream.
    code, _ = c.status_of(timeout=1.0, prompt="Another fresh prompt", max_tokens=6000,
                          ignore_eos=True)
    f.check(code == c.grpc.StatusCode.DEADLINE_EXCEEDED, "deadline → DEADLINE_EXCEEDED (%s)" % code)
    f.check(c.wait_kv_idle(15), "deadline: every KV block is free again")


def check_queue_limit(c, f):
    """A group of --batch-seqs 1 runs one request; with --max-queued-requests 1 one request of
    each priority waits in the coordinator (the higher priority first), and the next one of a
    priority whose queue is full is refused with RESOURCE_EXHAUSTED."""
    c.start_coordinator("--max-queued-requests", "1", "--heartbeat-ms", "100")
    c.start_node("narrow", "--batch-seqs", "1", "--ctx", "8192")
    c.wait_groups(1)
    a = c.generate_call(timeout=120, prompt="First in line", **LONG)
    first = next(iter(a))
    f.check(len(first.token_ids) == 1, "queue: the first request streams")
    low = c.generate_call(timeout=120, prompt="Low priority", priority=0, **LONG)
    time.sleep(0.2)
    high = c.generate_call(timeout=120, prompt="High priority", priority=5, **LONG)
    time.sleep(0.3)
    code, details = c.status_of(timeout=10, prompt="One too many", max_tokens=4)
    f.check(code == c.grpc.StatusCode.RESOURCE_EXHAUSTED and "max-queued-requests" in details
            and "priority 0" in details,
            "queue full → RESOURCE_EXHAUSTED (%s %r)" % (code, details))
    first_token = {}

    def watch(name, call):
        try:
            next(iter(call))
            first_token[name] = time.time()
        except c.grpc.RpcError:
            pass

    watchers = [threading.Thread(target=watch, args=(n, x), daemon=True)
                for n, x in (("low", low), ("high", high))]
    for t in watchers:
        t.start()
    a.cancel()
    # One slot: the high-priority request gets it although it arrived later; the low one waits
    # for it to end.
    harness.wait_for(lambda: first_token, 30)
    time.sleep(0.5)
    f.check(list(first_token) == ["high"],
            "queue: the higher priority runs first once the slot frees (%s)" % first_token)
    high.cancel()
    harness.wait_for(lambda: "low" in first_token, 30)
    f.check("low" in first_token, "queue: then the lower priority runs")
    low.cancel()
    f.check(c.wait_kv_idle(15), "queue: every KV block free after the cancels")


LONG = dict(max_tokens=6000, ignore_eos=True)


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        c.start_coordinator("--heartbeat-ms", "100", "--grace-ms", "1500")
        # A large context makes long streams (seconds) possible for the cancel checks.
        node = c.start_node("solo", "--ctx", "8192")
        h = c.wait_groups(1)
        g = h.groups[0]
        f.check(h.serving and g.name == "solo" and g.tp == 1 and g.role == "mixed",
                "Health shows the registered group (%s)" % h)
        f.check(g.kv_blocks_total > 0 and g.kv_blocks_free == g.kv_blocks_total,
                "Health: all KV blocks free at start")
        models = c.list_models().models
        f.check(len(models) == 1 and models[0].vocab_size == 512 and models[0].node_groups == 1,
                "ListModels (%s)" % models)
        check_greedy(c, f)
        check_stop_string(c, f)
        check_sampling_and_logprobs(c, f)
        check_bad_requests(c, f)
        check_garbage(c, f)
        text, _, _ = c.generate(prompt="Once upon a time", max_tokens=8)
        f.check(len(text) > 0, "still serving after bad requests and garbage")
        check_cancel_frees_kv(c, f)
        f.check(c.health().requests_active == 0, "no request left active")

        # SIGTERM with a stream running: new requests are refused at once; the running one gets
        # the grace period, then UNAVAILABLE.
        it = iter(c.generate_call(timeout=120, prompt="Still running at shutdown", **LONG))
        next(it)
        sc.signal_proc(c.coordinator, sc.SIGTERM)
        time.sleep(0.2)
        code, details = c.status_of(timeout=10, prompt="Too late", max_tokens=4)
        f.check(code == c.grpc.StatusCode.UNAVAILABLE and "shutting down" in details,
                "during shutdown new requests get UNAVAILABLE (%s %r)" % (code, details))
        t0 = time.time()
        try:
            for _ in it:
                pass
            code, details = c.grpc.StatusCode.OK, ""
        except c.grpc.RpcError as e:
            code, details = e.code(), e.details()
        f.check(code == c.grpc.StatusCode.UNAVAILABLE and "shutting down" in details and
                time.time() - t0 < 15,
                "after the grace period the running stream ends UNAVAILABLE (%s %r)"
                % (code, details))
        rc = sc.wait_exit(c.coordinator, 30)
        f.check(rc == 0, "SIGTERM: the coordinator exits 0 (got %s)" % rc)
        rc = sc.wait_exit(node, 30)
        f.check(rc == 0, "after the coordinator's Shutdown the node exits 0 (got %s)" % rc)
        c.stop_all()
        check_queue_limit(c, f)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
