#!/usr/bin/python3
"""startup.py — how long `tessera up` takes to serve its first token, and what it keeps resident
(issue 19, item 5: a 1.5B model's first token within 2 s of `tessera up` on a warm page cache,
resident memory about weights + KV).

  bench/startup.py [--build BUILD] [--runs N] MODEL.gguf [tessera up flags ...]

Reads the model once first (the page cache warm), then N times: starts `tessera up -m MODEL
--port 0 --endpoint-file F` with the flags given, sends a 1-token Generate as soon as the
endpoint exists (retrying while no group serves yet), and reports the time from the start of
`tessera up` to the endpoint and to that first token, and the resident memory of the node
processes (Rss and Pss, after the token) against the file's size. Run with Debian's python3
(python3-grpcio). Prints one markdown row per run.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def node_memory():
    """(Rss, Pss) summed over the tessera-node processes of this run (bytes): Pss splits pages
    that ranks share (the mapped model file in the page cache) among them, so its sum is what
    the group really holds."""
    rss = pss = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
            with open("/proc/%s/smaps_rollup" % pid) as f:
                rollup = f.read()
        except OSError:
            continue
        if b"tessera-node" in cmd:
            rss += int(re.search(r"^Rss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
            pss += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
    return rss, pss


def one_run(args, grpc, pb):
    d = tempfile.mkdtemp(prefix="tessera-startup-")
    ep = os.path.join(d, "endpoint")
    cmd = [os.path.join(args.build, "bin", "tessera"), "up", "-m", args.model, "--port", "0",
           "--endpoint-file", ep, "--log-level", "warn"] + args.flags
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        while not (os.path.exists(ep) and open(ep).read().strip()):
            if p.poll() is not None or time.time() - t0 > 120:
                raise SystemExit("tessera up exited or never served: %s" % " ".join(cmd))
            time.sleep(0.005)
        t_endpoint = time.time() - t0
        channel = grpc.insecure_channel(open(ep).read().strip())
        generate = channel.unary_stream(
            "/tessera.v1.Inference/Generate",
            request_serializer=pb.GenerateRequest.SerializeToString,
            response_deserializer=pb.GenerateResponse.FromString)
        while True:
            try:
                next(iter(generate(pb.GenerateRequest(prompt="def fibonacci(n):", max_tokens=1),
                                   timeout=60)))
                break
            except grpc.RpcError:
                if time.time() - t0 > 120:
                    raise
                time.sleep(0.005)
        t_first = time.time() - t0
        mem = node_memory()
        channel.close()
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    return t_endpoint, t_first, mem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("model")
    ap.add_argument("flags", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.build, "rpc", "ts_proto", "python"))
    import grpc
    from tessera.v1 import inference_pb2 as pb

    with open(args.model, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    size = os.path.getsize(args.model)
    print("| run | endpoint written | first token | nodes' Rss | nodes' Pss | model file |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i in range(args.runs):
        t_endpoint, t_first, (rss, pss) = one_run(args, grpc, pb)
        print("| %d | %.2f s | %.2f s | %.0f MiB | %.0f MiB | %.0f MiB |"
              % (i + 1, t_endpoint, t_first, rss / 2**20, pss / 2**20, size / 2**20))


if __name__ == "__main__":
    main()
