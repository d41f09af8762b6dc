#!/usr/bin/python3
"""Mid-stream failover (issue 18): a group that dies while a request streams does not end the
stream. The coordinator sends the prompt plus the tokens already streamed to another group as a
replay (Submit.replayed_tokens: the sampler skips the draws those tokens took), and the client's
stream goes on; what it receives equals, token for token, a run without the fault.

A coordinator (debug log: it names the group of each request) and two groups, on loopback:
  0. A request sent to a coordinator that has just started, before any group attached (as after
     a coordinator restart, while its nodes redial): it waits, and completes once they attach.
  1. Greedy: the serving group SIGKILLed after 20 tokens; the stream equals the reference run,
     Health.requests_failed_over and /metrics' tessera:request_failovers_total count it, the
     killed node comes back.
  2. Sampled (temperature 0.9, top_p 0.95, repetition penalty 1.15 over 32 tokens, presence
     and frequency penalties, a seed): the same, so the random stream, the penalty window and
     the counts of generated tokens continue where they stopped.
  3. The same two cases with two tensor-parallel groups of 2 ranks (mpirun), the victim's
     mpirun killed.
  4. The last group killed mid-stream: nothing can continue it, UNAVAILABLE naming the group.

  test_failover.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import http.client
import os
import re
import threading
import time

import harness
import serving_cluster as sc
from serving_cluster import drain_status, stream_until

CTX = ("--ctx", "4096")  # a 4000-token stream fits
N_TOKENS = 4000  # long enough to be mid-stream when the kill lands; the reference finishes it


def group_of(c, n_before):
    """The group chosen for the first request the coordinator logged after line n_before."""
    for line in open(c.coordinator.log_path).read().splitlines()[n_before:]:
        m = re.search(r"to group (\S+) \(", line)
        if m:
            return m.group(1)
    return None


def kill_group(p):
    """SIGKILL to a node and everything in its session (mpirun and its ranks)."""
    try:
        os.killpg(p.pid, sc.SIGKILL)
    except ProcessLookupError:
        pass


def log_lines(c):
    return len(open(c.coordinator.log_path).read().splitlines())


def ids_of(c, **fields):
    return c.generate(timeout=120, **fields)[1]


def metrics_failovers(c):
    """tessera:request_failovers_total from GET /metrics of the coordinator's HTTP port."""
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(r'^tessera:request_failovers_total\{model="[^"]*"\} (\d+)$', text, re.M)
    if not m:
        raise AssertionError("/metrics has no tessera:request_failovers_total:\n" + text)
    return int(m.group(1))


def check_failover(c, f, nodes, start, label, fields):
    want = ids_of(c, **fields)  # the reference: the same request, nothing killed
    f.check(len(want) == N_TOKENS, "%s: the reference ran to %d tokens (%d)"
            % (label, N_TOKENS, len(want)))
    before = c.health().requests_failed_over
    before_metrics = metrics_failovers(c)
    n = log_lines(c)
    call = c.generate_call(timeout=120, **fields)
    it = iter(call)
    got = sc.read_ids(it, 20)
    n_before = len(got)
    harness.wait_for(lambda: group_of(c, n) is not None, 10, 0.02)
    victim = group_of(c, n)
    f.check(victim in nodes, "%s: the coordinator names the group (%s)" % (label, victim))
    if victim not in nodes:
        call.cancel()
        return
    kill_group(nodes[victim])
    t0 = time.time()
    rest, status = sc.rest_of(c, it)
    got += rest
    f.check(status[0] == c.grpc.StatusCode.OK,
            "%s: the stream survives the kill of %s (%s %r)" % (label, victim, status[0],
                                                              status[1]))
    first_diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    f.check(got == want, "%s: the stream equals the reference (%d tokens before the kill, %d in "
            "all, %d wanted; first difference at %s)"
            % (label, n_before, len(got), len(want), first_diff))
    f.check(c.health().requests_failed_over == before + 1,
            "%s: Health counts one failover" % label)
    f.check(metrics_failovers(c) == before_metrics + 1,
            "%s: /metrics counts one failover (tessera:request_failovers_total)" % label)
    print("ok   %s: %s killed after %d tokens, %d more streamed in %.1f s"
          % (label, victim, n_before, len(got) - n_before, time.time() - t0))
    nodes[victim] = start(victim)  # back for the next case
    c.wait_groups(2, timeout=60)


def greedy(prompt):
    return dict(prompt=prompt, max_tokens=N_TOKENS, ignore_eos=True)


def sampled(prompt):
    return dict(prompt=prompt, max_tokens=N_TOKENS, ignore_eos=True,
                sampling=dict(temperature=0.9, top_p=0.95, repetition_penalty=1.15,
                              repetition_last_n=32, presence_penalty=0.4,
                              frequency_penalty=0.3, seed=1234))


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        c.http_port = harness.free_port()
        c.start_coordinator("--log-level", "debug", "--heartbeat-timeout-ms", "20000",
                            "--http-listen", "127.0.0.1:%d" % c.http_port)

        def start1(name):
            return c.start_node(name, *CTX)

        early = {}

        def send_early():
            try:
                early["ids"] = c.generate(timeout=60, **greedy("Once upon a time"))[1]
            except c.grpc.RpcError as e:
                early["error"] = "%s %s" % (e.code(), e.details())

        th = threading.Thread(target=send_early)
        th.start()
        time.sleep(0.5)  # the request is in before any node starts
        nodes = {name: start1(name) for name in ("a", "b")}
        c.wait_groups(2)
        th.join(60)
        f.check(early.get("ids") == ids_of(c, **greedy("Once upon a time")),
                "0. a request sent before any group attached completes exactly once one does "
                "(%s)" % early.get("error", "%d tokens" % len(early.get("ids", []))))
        print("ok   0. a request sent before any group attached waited and completed")
        check_failover(c, f, nodes, start1, "1. greedy", greedy("Once upon a time"))
        check_failover(c, f, nodes, start1, "2. sampled", sampled("The little dog"))
        for p in nodes.values():
            kill_group(p)
        c.wait_groups(0, timeout=30)

        def start2(name):
            return c.start_node(name, *CTX, np=2, tp=2)

        nodes = {name: start2(name) for name in ("t0", "t1")}
        c.wait_groups(2, timeout=90)
        check_failover(c, f, nodes, start2, "3. TP 2 greedy", greedy("The boat"))
        check_failover(c, f, nodes, start2, "3. TP 2 sampled", sampled("A red bird"))

        # 4. the last group: nothing can continue the stream
        kill_group(nodes["t1"])
        c.wait_groups(1, timeout=30)
        _, it = stream_until(c, 1, **greedy("The sun"))
        kill_group(nodes["t0"])
        r = drain_status(c, it, 30)
        f.check(r is not None and r[0] == c.grpc.StatusCode.UNAVAILABLE and "t0" in r[1],
                "4. last group killed: UNAVAILABLE naming it (%s)" % (r,))
        print("ok   4. last group killed mid-stream: %s" % (r,))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
