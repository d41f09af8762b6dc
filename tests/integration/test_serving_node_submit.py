#!/usr/bin/python3
"""tessera-node against a test driver that speaks tessera.v1.Worker (a Python grpcio server in
this process, standing where the coordinator would): the node's own checks of Submit.

The coordinator validates requests before they reach a node, so these bad Submits can only come
from a broken or foreign coordinator; the node must answer each with a finishing TokenEvent
FINISH_REASON_ERROR, a reason and error_status INVALID_ARGUMENT, and keep serving:
  ids outside the vocabulary, a prompt longer than the context, max_tokens < 1, an empty prompt,
  bad sampling values, too many stop ids, a duplicate request id (then Cancel ends the first).
Then a good Submit streams its tokens (the reference greedy ids), Register carries the runtime's
figures, heartbeats come every Welcome.heartbeat_ms, and Shutdown ends the node with exit 0.

  test_serving_node_submit.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import os
import queue
import subprocess
import time
from concurrent import futures

import harness
import serving_cluster as sc


def main():
    f = harness.Failures()
    c = sc.from_args()
    grpc = c.grpc
    from tessera.v1 import worker_pb2 as wpb
    inbox = queue.Queue()   # NodeMessages from the node
    outbox = queue.Queue()  # CoordinatorMessages to send (None ends the stream)

    def attach(request_iterator, context):
        def reader():
            for m in request_iterator:
                inbox.put(m)
        futures.ThreadPoolExecutor(1).submit(reader)
        while True:
            m = outbox.get()
            if m is None:
                return
            yield m

    handler = grpc.method_handlers_generic_handler("tessera.v1.Worker", {
        "Attach": grpc.stream_stream_rpc_method_handler(
            attach, request_deserializer=wpb.NodeMessage.FromString,
            response_serializer=wpb.CoordinatorMessage.SerializeToString)})
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    node = None
    try:
        log = open(os.path.join(c.tmp, "node.log"), "w")
        node = subprocess.Popen([os.path.join(c.bin_dir, "tessera-node"), "--coordinator",
                                 "127.0.0.1:%d" % port, "--name", "probe", "-m", harness.MODEL_F32,
                                 "--threads", "1", "--ctx", "8192"], stdout=log, stderr=subprocess.STDOUT)
        node.log_path = log.name
        c.procs.append(node)

        reg = inbox.get(timeout=60)
        f.check(reg.WhichOneof("msg") == "register", "first message is Register")
        r = reg.register
        f.check(r.group_name == "probe" and r.role == "mixed" and r.vocab_size == 512 and
                r.context_length == 8192 and r.tp == 1 and r.kv_blocks_total > 0 and
                r.block_size == 16 and r.max_batch_seqs > 0 and r.model_fingerprint,
                "Register carries the runtime's figures (%s)" % r)
        outbox.put(wpb.CoordinatorMessage(welcome=wpb.Welcome(cluster="test", heartbeat_ms=100)))

        events = {}

        def pump(timeout):
            """Collects the events of one NodeMessage (waiting up to timeout)."""
            try:
                m = inbox.get(timeout=timeout)
            except queue.Empty:
                return
            if m.WhichOneof("msg") == "events":
                for ev in m.events.events:
                    events.setdefault(ev.request_id, []).append(ev)

        def wait_finish(rid, timeout=20):
            """Collects NodeMessages until request rid finished; returns its events."""
            end = time.time() + timeout
            while time.time() < end:
                evs = events.get(rid, [])
                if evs and evs[-1].finish_reason != 0:
                    return evs
                pump(0.5)
            return events.get(rid, [])

        case = harness.greedy_cases()[0]
        good = dict(prompt_ids=case["prompt_ids"], max_tokens=case["n_predict"])
        bad = [
            ("id outside the vocabulary", dict(prompt_ids=[1, 600], max_tokens=4)),
            ("negative id", dict(prompt_ids=[1, -5], max_tokens=4)),
            ("prompt longer than the context", dict(prompt_ids=[1] + [300] * 9000, max_tokens=4)),
            ("max_tokens 0", dict(prompt_ids=[1, 300], max_tokens=0)),
            ("negative max_tokens", dict(prompt_ids=[1, 300], max_tokens=-3)),
            ("empty prompt", dict(prompt_ids=[], max_tokens=4)),
            ("negative temperature", dict(prompt_ids=[1, 300], max_tokens=4,
                                          sampling=c.pb.SamplingParams(temperature=-1))),
            ("top_p above 1", dict(prompt_ids=[1, 300], max_tokens=4,
                                   sampling=c.pb.SamplingParams(top_p=3))),
            ("too many stop ids", dict(prompt_ids=[1, 300], max_tokens=4, stop_ids=[2] * 40)),
        ]
        for i, (what, fields) in enumerate(bad):
            rid = 100 + i
            outbox.put(wpb.CoordinatorMessage(submit=wpb.Submit(request_id=rid, **fields)))
            evs = wait_finish(rid)
            ok = (len(evs) == 1 and evs[0].finish_reason == c.pb.FINISH_REASON_ERROR and
                  evs[0].token == -1 and evs[0].error)
            f.check(ok, "%s → one ERROR event with a reason (%s)" % (what, evs))
            # The reason's code, not its text, tells the coordinator not to retry (3 =
            # INVALID_ARGUMENT: the request is bad, not the group).
            f.check(ok and evs[0].error_status == 3,
                    "%s → its error_status is INVALID_ARGUMENT (%s)" % (what, evs))
        # A duplicate id while the first is still running (a long one), then a Cancel of it.
        outbox.put(wpb.CoordinatorMessage(submit=wpb.Submit(request_id=7, prompt_ids=[1, 300],
                                                            max_tokens=6000)))
        outbox.put(wpb.CoordinatorMessage(submit=wpb.Submit(request_id=7, prompt_ids=[1, 300],
                                                            max_tokens=6000)))
        end = time.time() + 20
        while time.time() < end and not any(e.finish_reason == c.pb.FINISH_REASON_ERROR
                                            for e in events.get(7, [])):
            pump(0.5)  # until the duplicate's ERROR event
        outbox.put(wpb.CoordinatorMessage(cancel=wpb.Cancel(request_id=7)))
        end = time.time() + 20
        while time.time() < end and not any(e.finish_reason == c.pb.FINISH_REASON_CANCELLED
                                            for e in events.get(7, [])):
            pump(0.5)
        seven = events.get(7, [])
        f.check(sum(e.finish_reason == c.pb.FINISH_REASON_ERROR for e in seven) == 1 and
                seven and seven[-1].finish_reason == c.pb.FINISH_REASON_CANCELLED,
                "duplicate id refused while the first runs on; Cancel ends it (%s)" % seven[-3:])
        outbox.put(wpb.CoordinatorMessage(submit=wpb.Submit(request_id=8, **good)))
        evs = wait_finish(8)
        toks = [e.token for e in evs if e.token >= 0]
        f.check(node.poll() is None, "the node survived every bad Submit")
        f.check(len(toks) == case["n_predict"] and evs[-1].finish_reason in
                (c.pb.FINISH_REASON_LENGTH, c.pb.FINISH_REASON_STOP) and
                evs[0].prompt_tokens == len(case["prompt_ids"]),
                "a good Submit streams its tokens and finishes (%d tokens)" % len(toks))
        # Heartbeats keep coming at about the Welcome period.
        n_hb, end = 0, time.time() + 1.5
        while time.time() < end:
            try:
                m = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            n_hb += m.WhichOneof("msg") == "heartbeat"
        f.check(n_hb >= 5, "heartbeats every ~100 ms (%d in 1.5 s)" % n_hb)
        outbox.put(wpb.CoordinatorMessage(shutdown=wpb.Shutdown(reason="test over")))
        rc = sc.wait_exit(node, 30)
        f.check(rc == 0, "Shutdown: the node exits 0 (got %s)" % rc)
    finally:
        outbox.put(None)
        server.stop(0)
        sc.finish(c, f)


if __name__ == "__main__":
    main()
