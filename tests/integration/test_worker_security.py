#!/usr/bin/python3
"""Who may attach as a node group (issue 15, security): the Worker service has its own listener.

A real tessera-coordinator (--listen and --worker-listen on loopback, port 0) and one real
tessera-node; a raw grpcio client plays an intruder:
  1. The public API port does not serve tessera.v1.Worker/Attach: a Register sent there is
     answered UNIMPLEMENTED, no Welcome, and Health never lists the intruder.
  2. The real node attaches on the Worker listener and the cluster serves a request.

  test_worker_security.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import harness
import serving_cluster as sc


def main():
    f = harness.Failures()
    c = sc.from_args()
    from tessera.v1 import worker_pb2 as wpb
    intruders = []
    try:
        c.start_coordinator("--heartbeat-ms", "100")
        f.check(c.endpoint != c.worker_endpoint,
                "the API and the Worker service listen apart (%s, %s)"
                % (c.endpoint, c.worker_endpoint))

        # 1. Attach on the public port: not served there.
        public = sc.FakeGroup(c, wpb, "on-public-port", target=c.endpoint)
        intruders.append(public)
        f.check(public.ended.wait(20), "Attach on the API port ends")
        f.check(public.code == c.grpc.StatusCode.UNIMPLEMENTED,
                "Attach on the API port: UNIMPLEMENTED (got %s %r)" % (public.code, public.details))
        f.check(not public.received, "Attach on the API port: nothing received (%s)"
                % public.received)

        # 2. The real node attaches on the Worker listener; the cluster serves.
        c.start_node("solo")
        h = c.wait_groups(1)
        f.check([g.name for g in h.groups] == ["solo"], "only the real node is listed (%s)"
                % [g.name for g in h.groups])
        text, ids, _ = c.generate(prompt="Once upon a time", max_tokens=8)
        f.check(len(ids) == 8 and text, "the real cluster serves (%r)" % text)
    finally:
        for i in intruders:
            i.close()
        sc.finish(c, f)


if __name__ == "__main__":
    main()
