#!/usr/bin/python3
"""Prefill/decode disaggregation (issue 5) under cancellation and failures: retry or a clean
error, and no KV block leaked on any surviving group (Health's kv_blocks_free == total; blocks
kept in a prefix cache count as free, kv_pool.h).

A coordinator (debug log: it names each request's prefill and decode group) with two prefill
groups and one decode group, all single-process nodes on loopback.
  1. Cancel mid-stream (the request is on the decode group).
  2. Cancel during the transfer: the decode group is SIGSTOPped, so the transfer cannot finish;
     the client cancels after the first token; after SIGCONT nothing is left anywhere.
  3. The prefill group killed during the transfer (decode SIGSTOPped, first token streamed):
     the decode side drops the broken transfer and the request fails over (a replay of the
     token it streamed), its stream equal to an unfaulted run; a new request then completes.
  4. A prefill group killed before it streamed anything (SIGSTOPped with a request on it): the
     request is retried (new transfer id) on the other prefill group and completes exactly.
  5. The decode group killed mid-stream: the stream fails over to a prefill group (which runs
     requests whole when no decode group is left) and equals an unfaulted run; the prefill
     groups hold nothing afterwards.
  6. Back-pressure: a new decode group with room for one long request; a second request waits in
     the coordinator (not even prefilled) until the first is cancelled, then completes exactly.

  test_disagg_faults.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import re
import threading
import time

import harness
import serving_cluster as sc
from serving_cluster import drain_status, stream_until

CTX = ("--ctx", "8192")
LONG = dict(max_tokens=6000, ignore_eos=True)


def prefill_of(c, n_before):
    """The prefill group chosen for the first request the coordinator logged after line
    n_before."""
    lines = c.log_full(c.coordinator).splitlines()[n_before:]
    for l in lines:
        m = re.search(r"prefill on (\S+), decode on", l)
        if m:
            return m.group(1)
    return None


def main():
    f = harness.Failures()
    c = sc.from_args()
    cases = harness.greedy_cases()
    case = cases[0]
    want = harness.reference_completion(case)
    try:
        c.start_coordinator("--log-level", "debug", "--heartbeat-timeout-ms", "20000")
        nodes = {}
        for name, role in [("p0", "prefill"), ("p1", "prefill"), ("d0", "decode")]:
            nodes[name] = c.start_node(name, "--role", role, *CTX)
        c.wait_groups(3)

        # 1. cancel mid-stream
        call, _ = stream_until(c, 20, prompt="Once upon a time", **LONG)
        call.cancel()
        f.check(c.wait_kv_idle(15), "cancel mid-stream: every block free (%s)" % c.health())
        print("ok   1. cancel mid-stream")

        # 2. cancel during the transfer
        sc.signal_proc(nodes["d0"], sc.SIGSTOP)
        call, _ = stream_until(c, 1, prompt="Once upon a time", **LONG)
        call.cancel()
        time.sleep(0.5)
        sc.signal_proc(nodes["d0"], sc.SIGCONT)
        f.check(c.wait_kv_idle(15), "cancel during the transfer: every block free (%s)"
                % c.health())
        text, _, _ = c.generate(timeout=60, prompt_ids=case["prompt_ids"],
                                max_tokens=case["n_predict"])
        f.check(text == want, "after the cancels: a request completes exactly")
        print("ok   2. cancel during the transfer")

        # 3. the prefill group killed during the transfer: the client has the first token, so
        # the request fails over (a replay of that token) and the stream equals an unfaulted run
        _, want_long, _ = c.generate(timeout=120, prompt="Once upon a time", **LONG)
        sc.signal_proc(nodes["d0"], sc.SIGSTOP)
        n_lines = len(c.log_full(c.coordinator).splitlines())
        call = c.generate_call(timeout=120, prompt="Once upon a time", **LONG)
        it = iter(call)
        got = sc.read_ids(it, 1)
        victim = prefill_of(c, n_lines)
        f.check(victim in ("p0", "p1"), "the coordinator names the prefill group (%s)" % victim)
        if victim in nodes:
            sc.signal_proc(nodes[victim], sc.SIGKILL)
        time.sleep(0.3)
        sc.signal_proc(nodes["d0"], sc.SIGCONT)
        rest, r = sc.rest_of(c, it)
        got += rest
        f.check(r[0] == c.grpc.StatusCode.OK and got == want_long,
                "prefill killed during the transfer: the stream fails over and equals an "
                "unfaulted run (%s, %d of %d tokens)" % (r, len(got), len(want_long)))
        c.wait_groups(2, timeout=20)
        f.check(c.wait_kv_idle(15), "prefill killed during the transfer: every block free on "
                "the surviving groups (%s)" % c.health())
        text, _, _ = c.generate(timeout=60, prompt_ids=case["prompt_ids"],
                                max_tokens=case["n_predict"])
        f.check(text == want, "after the prefill group died: a request completes exactly")
        print("ok   3. prefill group %s killed during the transfer: %s" % (victim, r))

        # 4. a prefill group killed before it streamed anything: retry elsewhere
        nodes["p2"] = c.start_node("p2", "--role", "prefill", *CTX)
        c.wait_groups(3)
        other = [n for n in ("p0", "p1") if n != victim][0]
        # Both prefill groups stopped: the two requests go one to each (fewest outstanding
        # tokens); then p2 resumes and the other one dies with its request unstarted.
        sc.signal_proc(nodes[other], sc.SIGSTOP)
        sc.signal_proc(nodes["p2"], sc.SIGSTOP)
        results = [None, None]

        def run(i):
            try:
                results[i] = c.generate(timeout=90, prompt_ids=case["prompt_ids"],
                                        max_tokens=case["n_predict"])[0]
            except c.grpc.RpcError as e:
                results[i] = "error %s %s" % (e.code(), e.details())

        ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
        n_lines = len(c.log_full(c.coordinator).splitlines())
        for th in ths:
            th.start()
        harness.wait_for(lambda: c.log_full(c.coordinator).splitlines()[n_lines:].__str__()
                         .count("prefill on") >= 2, 30)
        sc.signal_proc(nodes["p2"], sc.SIGCONT)
        harness.wait_for(lambda: any(x is not None for x in results), 30)
        sc.signal_proc(nodes[other], sc.SIGKILL)
        for th in ths:
            th.join(60)
        f.check(results == [want, want], "prefill group killed before streaming: both requests "
                "complete exactly (the stuck one retried) (%s)" % [str(x)[:60] for x in results])
        f.check("failed before any token: retrying" in c.log_full(c.coordinator),
                "the stuck request was retried (coordinator log)")
        c.wait_groups(2, timeout=20)
        f.check(c.wait_kv_idle(15), "after the retry: every block free (%s)" % c.health())
        print("ok   4. prefill group killed before streaming: retried")

        # 5. the decode group killed mid-stream: the stream fails over (a replay of what it
        # streamed) to a prefill group, which runs it whole now that no decode group is left
        _, want_long, _ = c.generate(timeout=120, prompt="The boat", **LONG)
        call = c.generate_call(timeout=120, prompt="The boat", **LONG)
        it = iter(call)
        got = sc.read_ids(it, 50)
        sc.signal_proc(nodes["d0"], sc.SIGKILL)
        rest, r = sc.rest_of(c, it)
        got += rest
        f.check(r[0] == c.grpc.StatusCode.OK and got == want_long,
                "decode killed mid-stream: the stream continues on a prefill group, equal to an "
                "unfaulted run (%s, %d of %d tokens)" % (r, len(got), len(want_long)))
        c.wait_groups(1, timeout=20)
        f.check(c.wait_kv_idle(15), "decode killed: the prefill group holds nothing (%s)"
                % c.health())
        text, _, _ = c.generate(timeout=60, prompt_ids=case["prompt_ids"],
                                max_tokens=case["n_predict"])
        f.check(text == want, "no decode group left: the prefill group runs requests whole")
        f.check(c.wait_kv_idle(15), "after the fallback: every block free (%s)" % c.health())
        print("ok   5. decode group killed mid-stream: %s; then the fallback" % (r,))

        # 6. back-pressure: a decode group whose KV holds one long request at a time
        # 34 blocks of 16 tokens (10240 bytes each for this model): one context of 512 needs 32
        nodes["d1"] = c.start_node("d1", "--role", "decode", "--kv-memory", "348160", "--ctx",
                                   "512")
        h = c.wait_groups(2)
        total = [g.kv_blocks_total for g in h.groups if g.name == "d1"][0]
        f.check(total == 34, "the small decode group has 34 KV blocks (%d)" % total)
        # A reserves 32 blocks (5 + 506 tokens), leaving 2; B needs 5 (10 + 64 tokens)
        a_max = 506
        n_lines = len(c.log_full(c.coordinator).splitlines())
        # d1 stopped: A streams its first token (from the prefill group), moves to d1 and stays
        sc.signal_proc(nodes["d1"], sc.SIGSTOP)
        call_a, it_a = stream_until(c, 1, prompt="Once upon a time", max_tokens=a_max,
                                    ignore_eos=True)
        out_b = {}

        def run_b():
            try:
                out_b["text"] = c.generate(timeout=90, prompt_ids=case["prompt_ids"],
                                           max_tokens=case["n_predict"])[0]
            except c.grpc.RpcError as e:
                out_b["text"] = "error %s %s" % (e.code(), e.details())

        th = threading.Thread(target=run_b, daemon=True)
        th.start()
        time.sleep(1.0)
        started = c.log_full(c.coordinator).splitlines()[n_lines:].__str__().count("prefill on")
        f.check(started == 1 and "text" not in out_b,
                "back-pressure: the second request waits while the decode pool is full "
                "(%d dispatched)" % started)
        sc.signal_proc(nodes["d1"], sc.SIGCONT)
        call_a.cancel()
        th.join(60)
        f.check(out_b.get("text") == want, "back-pressure: the waiting request runs once the "
                "first leaves, exactly (%r)" % str(out_b.get("text"))[:80])
        f.check(c.wait_kv_idle(15), "at the end: every block free (%s)" % c.health())
        print("ok   6. back-pressure: a full decode pool holds new requests in the queue")
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
