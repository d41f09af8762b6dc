#!/usr/bin/python3
"""Node groups failing under a serving coordinator: requests fail or are retried, never hang.

  1. A node SIGKILLed mid-stream: the stream ends with UNAVAILABLE within seconds (it had
     streamed tokens, so it is not retried); the group leaves Health; new requests get
     UNAVAILABLE while no group serves.
  2. Two groups, one SIGSTOPped (hung): requests sent to it have streamed nothing, so after the
     heartbeat timeout they are retried on the other group and complete with the right text;
     after SIGCONT the hung node finds its stream gone, reconnects and registers again.
  3. A node whose group is SIGTERMed mid-stream finishes or fails its requests and exits 0.
     An idle TP group (mpirun -np 2 --tp 2) outlives its followers' --comm-timeout-ms.
  4. The coordinator killed: the node retries for --connect-timeout-ms, then exits 1 with a
     message; a node pointed at no coordinator does the same.

  test_serving_faults.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import threading
import time

import harness
import serving_cluster as sc
from serving_cluster import drain_status, stream_until

LONG = dict(max_tokens=6000, ignore_eos=True)


def check_killed_node(c, f):
    node = c.start_node("victim", "--ctx", "8192")
    c.wait_groups(1)
    _, it = stream_until(c, 50, prompt="The boat", **LONG)
    sc.signal_proc(node, sc.SIGKILL)
    r = drain_status(c, it, 20)
    f.check(r is not None, "killed node: the stream ended (did not hang)")
    if r:
        f.check(r[0] == c.grpc.StatusCode.UNAVAILABLE and "victim" in r[1],
                "killed node: UNAVAILABLE naming the group (%s %r)" % (r[0], r[1]))
    c.wait_groups(0, timeout=15)
    code, details = c.status_of(timeout=10, prompt="Hello", max_tokens=4)
    f.check(code == c.grpc.StatusCode.UNAVAILABLE, "no group: UNAVAILABLE (%s %r)" % (code, details))


def check_hung_node_retried(c, f):
    a = c.start_node("a", "--connect-timeout-ms", "30000")
    b = c.start_node("b", "--connect-timeout-ms", "30000")
    c.wait_groups(2)
    sc.signal_proc(a, sc.SIGSTOP)
    case = harness.greedy_cases()[0]
    expected = harness.reference_text(case)
    results = [None] * 4

    def one(i):
        try:
            text, _, _ = c.generate(timeout=60, prompt=case["prompt"],
                                    max_tokens=case["n_predict"])
            results[i] = case["prompt"] + text
        except c.grpc.RpcError as e:
            results[i] = "%s %s" % (e.code(), e.details())

    # Several at once: the router spreads them, so some go to the hung group.
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    f.check(all(r == expected for r in results),
            "hung group: every request completes with the right text (%r)" % results)
    h = c.health()
    f.check([g.name for g in h.groups] == ["b"], "hung group removed from Health (%s)" % h)
    sc.signal_proc(a, sc.SIGCONT)
    c.wait_groups(2, timeout=30)
    f.check(True, "the resumed node attached again")
    text, _, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
    f.check(case["prompt"] + text == expected, "serving with both groups again")
    # SIGTERM one group mid-stream: it finishes or fails the request, leaves, exits 0.
    _, it = stream_until(c, 20, prompt="The tree", max_tokens=300, ignore_eos=True)
    sc.signal_proc(b, sc.SIGTERM)
    sc.signal_proc(a, sc.SIGTERM)
    r = drain_status(c, it, 30)
    f.check(r is not None and r[0] in (c.grpc.StatusCode.OK, c.grpc.StatusCode.UNAVAILABLE),
            "SIGTERMed group: its stream ends cleanly (%s)" % (r,))
    f.check(sc.wait_exit(a, 30) == 0 and sc.wait_exit(b, 30) == 0,
            "SIGTERMed nodes exit 0 (%s, %s)" % (a.poll(), b.poll()))
    c.wait_groups(0, timeout=15)


def check_idle_tp_group(c, f):
    """An idle TP group outlives its followers' --comm-timeout-ms (the leader's keep-alive)."""
    node = c.start_node("tp2", "--comm-timeout-ms", "2000", np=2, tp=2)
    h = c.wait_groups(1)
    f.check(h.groups[0].tp == 2, "TP group registers with tp 2 (%s)" % h)
    time.sleep(5)
    case = harness.greedy_cases()[2]
    try:
        text, _, _ = c.generate(timeout=30, prompt=case["prompt"], max_tokens=case["n_predict"])
        ok = case["prompt"] + text == harness.reference_text(case)
    except c.grpc.RpcError as e:
        ok, text = False, "%s %s" % (e.code(), e.details())
    f.check(ok and node.poll() is None,
            "idle TP group still serves after 2.5 x its comm timeout (%r)" % text)
    # SIGTERM to the ranks (mpirun itself exits 1 on SIGTERM whatever its ranks do): the leader
    # drains and releases the follower; both exit 0, so mpirun does too.
    for pid in sc.descendants(node.pid):
        sc.signal_proc_pid(pid, sc.SIGTERM)
    f.check(sc.wait_exit(node, 30) == 0, "TP group ranks exit 0 on SIGTERM (%s)" % node.poll())
    c.wait_groups(0, timeout=15)


def check_coordinator_gone(c, f):
    node = c.start_node("orphan", "--connect-timeout-ms", "1500")
    c.wait_groups(1)
    sc.signal_proc(c.coordinator, sc.SIGKILL)
    rc = sc.wait_exit(node, 30)
    log = c.log(node)
    f.check(rc == 1 and "cannot reach the coordinator" in log,
            "coordinator gone: the node gives up after --connect-timeout-ms with exit 1 (%s)\n%s"
            % (rc, log[-600:]))
    # No coordinator at all (an unused port).
    p = c.start_node("lonely", "--connect-timeout-ms", "1000")
    rc = sc.wait_exit(p, 30)
    f.check(rc == 1 and "cannot reach the coordinator" in c.log(p),
            "no coordinator: exit 1 with a message (%s)" % rc)


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        c.start_coordinator("--heartbeat-ms", "100", "--heartbeat-timeout-ms", "1500")
        check_killed_node(c, f)
        check_hung_node_retried(c, f)
        check_idle_tp_group(c, f)
        check_coordinator_gone(c, f)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
