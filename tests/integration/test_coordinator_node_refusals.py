#!/usr/bin/python3
"""The coordinator tells a node's refusal of a request apart from a node failure by the event's
code, never its text (issue 13).

A real tessera-coordinator with fake node groups (Python grpcio clients of tessera.v1.Worker in
this process, which register like tessera-node and answer each Submit as the test says):
  1. A group answers the Submit with FINISH_REASON_ERROR and error_status INVALID_ARGUMENT: the
     client gets INVALID_ARGUMENT with the node's reason at once, the request is not sent to any
     other group, and Health.requests_retried stays 0.
  2. A group answers with FINISH_REASON_ERROR and no status (it could not run it): the request
     is retried on the other group, which serves it; requests_retried is 1.

  test_coordinator_node_refusals.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import harness
import serving_cluster as sc

INVALID_ARGUMENT = 3  # grpc_status_code


def main():
    f = harness.Failures()
    c = sc.from_args()
    from tessera.v1 import worker_pb2 as wpb
    error = c.pb.FINISH_REASON_ERROR
    groups = []
    try:
        c.start_coordinator("--heartbeat-timeout-ms", "60000")

        def refuse(g, s):
            g.event(request_id=s.request_id, token=-1, finish_reason=error, prompt_tokens=2,
                    error="sampling.top_k is not for this node", error_status=INVALID_ARGUMENT)

        def serve(g, s):
            g.event(request_id=s.request_id, token=300, prompt_tokens=len(s.prompt_ids))
            g.event(request_id=s.request_id, token=-1, finish_reason=c.pb.FINISH_REASON_LENGTH,
                    prompt_tokens=len(s.prompt_ids))

        served = []

        def fail_once_other_is_there(g, s):
            # Let the serving group attach first, so that the retry has somewhere to go.
            served.append(sc.FakeGroup(c, wpb, "serve", serve))
            groups.append(served[0])
            served[0].welcomed.wait(20)
            c.wait_groups(2)
            g.event(request_id=s.request_id, token=-1, finish_reason=error, prompt_tokens=2,
                    error="the node group failed")

        # 1. a refusal with INVALID_ARGUMENT: passed on, not retried
        refusing = sc.FakeGroup(c, wpb, "refuse", refuse)
        groups.append(refusing)
        f.check(refusing.welcomed.wait(20), "the refusing group is welcomed")
        c.wait_groups(1)
        code, details = c.status_of(timeout=20, prompt_ids=[1, 300], max_tokens=4)
        f.check(code == c.grpc.StatusCode.INVALID_ARGUMENT and "sampling.top_k" in details,
                "a node's INVALID_ARGUMENT reaches the client as INVALID_ARGUMENT with its reason "
                "(got %s %r)" % (code, details))
        h = c.health()
        f.check(h.requests_retried == 0, "not retried (requests_retried %d)" % h.requests_retried)
        f.check(len(refusing.submits) == 1, "sent once (%d Submits)" % len(refusing.submits))
        refusing.close()
        groups.remove(refusing)
        c.wait_groups(0)

        # 2. a failure without a status: retried on another group
        failing = sc.FakeGroup(c, wpb, "fail", fail_once_other_is_there)
        groups.append(failing)
        f.check(failing.welcomed.wait(20), "the failing group is welcomed")
        c.wait_groups(1)
        code, details = c.status_of(timeout=30, prompt_ids=[1, 300], max_tokens=4)
        f.check(code == c.grpc.StatusCode.OK, "a node failure is retried elsewhere and served "
                "(got %s %r)" % (code, details))
        h = c.health()
        f.check(h.requests_retried == 1, "one retry counted (requests_retried %d)"
                % h.requests_retried)
        f.check(len(failing.submits) == 1 and served and len(served[0].submits) == 1,
                "one Submit each (%d, %s)" % (len(failing.submits),
                                              served and len(served[0].submits)))
    finally:
        for g in groups:
            g.close()
        sc.finish(c, f)


if __name__ == "__main__":
    main()
