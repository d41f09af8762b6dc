#!/usr/bin/python3
"""Cache-aware routing: tessera-coordinator + two tessera-node groups (4-token blocks), a Python
grpcio client.

Groups report the block keys of their prefix cache with their heartbeats, and the coordinator
sends a request where the work ahead of it is least: the group's outstanding tokens plus the
prompt tokens it does not hold. Checks:
  1. Two system prompts warm up on two different groups (A on g0 while it is alone; then B
     while g0 is busy with a long A request, which went to g0 because its prefix is there).
  2. Then requests of both kinds, one at a time, each find their whole system prompt cached
     (cached_prompt_tokens = 40): they went where their prefix is (a router that ignores caches
     sends them all to the same, first group, and half of them find nothing).
  3. An overloaded group is passed over: while a long request runs on the group holding system
     prompt A, a short request with prompt A goes to the other group (0 cached tokens) instead
     of queuing behind it.
  4. Prefill/decode split: the prefill group is chosen the same way. With system prompt A warm
     on prefill group p0 and a second prefill group p1 started after it (listed first, so a
     choice by load alone takes it on a tie), A's requests go to p0 and find A cached there.
The busy group is frozen with SIGSTOP (well within the heartbeat timeout) while the other
request is routed: the bundled model decodes a whole context in milliseconds, faster than a test
can look.

  test_cache_aware_routing.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import os
import signal
import time

import harness
import serving_cluster as sc


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        c.start_coordinator("--heartbeat-ms", "50")
        g0 = c.start_node("g0", "--block-size", "4")
        c.wait_groups(1)
        sys_a = [1 + (i * 37) % 500 for i in range(40)]
        sys_b = [1 + (i * 53 + 11) % 500 for i in range(40)]

        def question(k):
            return [1 + (k * 97 + i * 13) % 500 for i in range(8)]

        def cached_of(prompt, max_tokens=4):
            _, _, msgs = c.generate(prompt_ids=prompt, max_tokens=max_tokens)
            return msgs[-1].usage.cached_prompt_tokens

        def settle():
            time.sleep(0.3)  # a few heartbeats: the coordinator learns what the groups hold

        def frozen_long_request(prompt):
            """Freezes g0 (SIGSTOP) and sends it a long request, which then stays outstanding
            there however fast the tiny model decodes; returns the call once it is routed."""
            os.kill(g0.pid, signal.SIGSTOP)
            active = c.health().requests_active
            call = c.generate_call(timeout=60, prompt_ids=prompt, max_tokens=400, ignore_eos=True)
            if not harness.wait_for(lambda: c.health().requests_active > active, 10, 0.01):
                raise AssertionError("the long request was never admitted")
            return call

        def thaw(call):
            os.kill(g0.pid, signal.SIGCONT)
            call.cancel()
            c.wait_kv_idle()

        # 1. A warms up on g0 (alone); with g1 up, a long A request goes to g0 (its prefix is
        # there) and B, arriving while g0 is busy, goes to g1
        f.check(cached_of(sys_a + question(0)) == 0, "A's first request finds nothing")
        c.start_node("g1", "--block-size", "4")
        c.wait_groups(2)
        settle()
        call = frozen_long_request(sys_a + question(1))
        f.check(cached_of(sys_b + question(2)) == 0, "B's first request finds nothing")
        thaw(call)
        settle()
        # 2. one at a time, every request finds its system prompt on the group it is sent to
        hits = []
        for k in range(2, 10):
            prompt = (sys_a if k % 2 == 0 else sys_b) + question(k)
            hits.append(cached_of(prompt))
            settle()
        f.check(hits == [40] * 8, "requests go where their prefix is: cached %s" % hits)
        h = c.health()
        f.check(all(g.prefix_cache_hit_tokens > 0 for g in h.groups),
                "both groups served hits: %s" % [(g.name, g.prefix_cache_hit_tokens)
                                                  for g in h.groups])
        # 3. g0, holding A, is busy with a long request: a short A request goes to g1
        call = frozen_long_request(sys_a + question(20))
        got = cached_of(sys_a + question(21))
        f.check(got == 0, "an overloaded group is passed over (the short request went to the "
                "other group: 0 cached tokens, got %d)" % got)
        thaw(call)
        # and once it is idle again, A goes back to it
        settle()
        f.check(cached_of(sys_a + question(22)) == 40, "with the load gone, A returns to its "
                "group")

        # 4. the prefill choice of the split counts caches too
        c.stop_node("g0")
        c.stop_node("g1")
        c.wait_groups(0)
        c.start_node("p0", "--block-size", "4", "--role", "prefill")
        c.start_node("d0", "--block-size", "4", "--role", "decode")
        c.wait_groups(2)
        f.check(cached_of(sys_a + question(30)) == 0, "split: A's first request finds nothing")
        c.start_node("p1", "--block-size", "4", "--role", "prefill")
        c.wait_groups(3)
        settle()
        f.check(cached_of(sys_b + question(31)) == 0, "split: B's first request finds nothing")
        settle()
        hits = []
        for k in range(32, 38):
            hits.append(cached_of((sys_a if k % 2 == 0 else sys_b) + question(k)))
            settle()
        f.check(hits == [40] * 6, "split: each prompt goes to the prefill group holding its "
                "prefix: cached %s" % hits)
        h = c.health()
        served = {g.name: g.prefix_cache_hit_tokens for g in h.groups if g.role == "prefill"}
        f.check(len(served) == 2 and all(v > 0 for v in served.values()),
                "split: both prefill groups served hits: %s" % served)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
