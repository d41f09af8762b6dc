#!/usr/bin/python3
"""A real gRPC client (Python grpcio) against the rpc/ server: proves interoperability.

Starts tests/rpc/echo_server (our C server with the echo test service), then with grpcio's
generic calls (no generated stubs, no grpc_tools) and protoc --python_out message classes:
unary Echo, an error status with its message, UNIMPLEMENTED, a full server stream in order,
a mid-stream cancel that the server sees as on_done(cancelled) at once, a deadline, a bidi
Chat, many concurrent streams; then closes the server's stdin and checks that it shut down
cleanly with its invariants held.

  test_rpc_python.py --server PATH/rpc_echo_server --pydir DIR_WITH_echo_pb2
Exit 0 ok, 1 failure, 77 skipped (grpcio or protobuf not importable).
"""
import argparse
import subprocess
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--pydir", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.pydir)
    try:
        import grpc
        import echo_pb2
    except ImportError as e:
        print(f"SKIP: python grpcio/protobuf not importable: {e}")
        return 77

    server = subprocess.Popen([args.server], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        line = server.stdout.readline().split()
        assert line and line[0] == "port", f"server said {line!r}"
        port = int(line[1])
        ok = run_checks(grpc, echo_pb2, port)
    finally:
        try:  # communicate closes the server's stdin: it shuts down at end of file
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
            print("FAIL: the server did not shut down within 30 s")
            ok = False
    print(out.strip())
    if server.returncode != 0:
        print(f"FAIL: the server exited {server.returncode} (its invariants did not hold)")
        ok = False
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


def stats(grpc, pb, channel):
    call = channel.unary_unary("/tessera.test.Echo/Stats",
                               request_serializer=pb.EchoRequest.SerializeToString,
                               response_deserializer=pb.EchoReply.FromString)
    text = call(pb.EchoRequest(), timeout=5).text
    return dict((k, int(v)) for k, v in (kv.split("=") for kv in text.split()))


def wait_stat(grpc, pb, channel, key, value, timeout_s=3.0):
    end = time.monotonic() + timeout_s
    while True:
        st = stats(grpc, pb, channel)
        if st[key] >= value or time.monotonic() > end:
            return st
        time.sleep(0.01)


def run_checks(grpc, pb, port):
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    ser, de = pb.EchoRequest.SerializeToString, pb.EchoReply.FromString
    echo = ch.unary_unary("/tessera.test.Echo/Echo", request_serializer=ser,
                          response_deserializer=de)
    count = ch.unary_stream("/tessera.test.Echo/Count", request_serializer=ser,
                            response_deserializer=de)
    chat = ch.stream_stream("/tessera.test.Echo/Chat", request_serializer=ser,
                            response_deserializer=de)

    r = echo(pb.EchoRequest(text="hello from python", id=4), timeout=5)
    check(r.text == "hello from python" and r.id == 4, "unary Echo round trip")

    try:
        echo(pb.EchoRequest(text="invalid"), timeout=5)
        check(False, "INVALID_ARGUMENT with the handler's message")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "refused" in e.details(),
              f"INVALID_ARGUMENT with the handler's message ({e.code()}: {e.details()})")

    nope = ch.unary_unary("/tessera.test.Echo/Nope")
    try:
        nope(b"", timeout=5)
        check(False, "unknown method is UNIMPLEMENTED")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED, f"unknown method is UNIMPLEMENTED ({e.code()})")

    msgs = list(count(pb.EchoRequest(count=1000, id=7), timeout=10))
    check([m.seq for m in msgs] == list(range(1000)) and all(m.id == 7 for m in msgs)
          and msgs[5].text == "7:5", "server stream: 1000 messages in order")

    # Mid-stream cancel: the server's on_done(cancelled) must fire promptly.
    before = stats(grpc, pb, ch)
    it = count(pb.EchoRequest(count=1000000, interval_us=1000, id=8), timeout=60)
    got = 0
    for m in it:
        got += 1
        if got == 10:
            break
    t0 = time.monotonic()
    it.cancel()
    st = wait_stat(grpc, pb, ch, "cancelled", before["cancelled"] + 1)
    dt = time.monotonic() - t0
    check(st["cancelled"] == before["cancelled"] + 1 and dt < 2.0,
          f"mid-stream cancel reaches the server's on_done (cancelled) in {dt * 1000:.0f} ms")
    check(it.code() == grpc.StatusCode.CANCELLED, f"the cancelled call reports CANCELLED ({it.code()})")
    st = wait_stat(grpc, pb, ch, "late_send_cancelled", before["late_send_cancelled"] + 1)
    check(st["late_send_cancelled"] == before["late_send_cancelled"] + 1,
          "the server's sends after the cancel fail cleanly")

    # Deadline.
    before = stats(grpc, pb, ch)
    try:
        for _ in count(pb.EchoRequest(count=1000, interval_us=10000), timeout=0.3):
            pass
        check(False, "DEADLINE_EXCEEDED")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"DEADLINE_EXCEEDED ({e.code()})")
    st = wait_stat(grpc, pb, ch, "cancelled", before["cancelled"] + 1)
    check(st["cancelled"] == before["cancelled"] + 1, "the deadline reaches the server's on_done")

    # Bidi.
    replies = list(chat(iter([pb.EchoRequest(text=f"m{i}", id=i) for i in range(200)]), timeout=10))
    check([r.id for r in replies] == list(range(200)) and replies[199].text == "m199",
          "bidi Chat: 200 replies in order")

    # Many concurrent streams from threads.
    results = [None] * 32

    def worker(i):
        try:
            results[i] = [m.seq for m in count(pb.EchoRequest(count=300, id=i), timeout=30)]
        except grpc.RpcError as e:
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(r == list(range(300)) for r in results), "32 concurrent streams complete in order")

    st = stats(grpc, pb, ch)
    check(st["double_done"] == 0 and st["late_send_other"] == 0, f"server invariants: {st}")
    ch.close()
    return not failures


if __name__ == "__main__":
    sys.exit(main())
