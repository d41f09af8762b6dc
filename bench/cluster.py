"""cluster.py — what the benchmark scripts share: the default model and one `tessera up` cluster
on free ports, started and stopped (bench/filler.py, bench/multiturn.py)."""
import os
import signal
import subprocess
import sys
import time

DEFAULT_MODEL = "~/.cache/tessera/bench/110m-f16.gguf"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def model_path(build, model):
    """The --model argument as a path: None gives the 110M synthetic shape (f16), made once under
    ~/.cache/tessera/bench; 'bundled' stays 'bundled' (tessera up without -m)."""
    if model:
        return model
    path = os.path.expanduser(DEFAULT_MODEL)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([os.path.join(build, "bin", "tessera"), "model", "synth", "--shape", "110m",
                        "--type", "f16", "-o", path], check=True)
    return path


def start(build, model, d, flags):
    """Starts `tessera up` (its log in d/up.log) and waits until it serves; returns (process,
    gRPC HOST:PORT, HTTP base URL)."""
    ep, hep = os.path.join(d, "endpoint"), os.path.join(d, "http.endpoint")
    cmd = [os.path.join(build, "bin", "tessera"), "up", "--port", "0", "--http-port", "0",
           "--endpoint-file", ep, "--http-endpoint-file", hep, "--log-level", "warn"]
    if model != "bundled":
        cmd += ["-m", model]
    cmd += flags
    log("+ " + " ".join(cmd))
    p = subprocess.Popen(cmd, stdout=open(os.path.join(d, "up.log"), "w"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while not (os.path.exists(ep) and open(ep).read().strip()):
        if p.poll() is not None or time.time() - t0 > 300:
            raise SystemExit("tessera up exited or never served; see %s/up.log" % d)
        time.sleep(0.1)
    return p, open(ep).read().strip(), "http://" + open(hep).read().strip()


def stop(p):
    """SIGTERM to the cluster's process group (an orderly stop), SIGKILL after 60 s."""
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)


def generate_stub(grpc, pb, ep):
    """(channel, Generate callable) on the cluster's gRPC API."""
    channel = grpc.insecure_channel(ep)
    return channel, channel.unary_stream(
        "/tessera.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
        response_deserializer=pb.GenerateResponse.FromString)


def stream(generate, pb, prompt_ids, max_tokens):
    """One greedy request of exactly max_tokens tokens (ignore_eos): (seconds to the first
    token, the token ids, the last usage). Raises grpc.RpcError."""
    t0, ttft, ids, usage = time.time(), None, [], None
    for m in generate(pb.GenerateRequest(prompt_ids=prompt_ids, max_tokens=max_tokens,
                                         ignore_eos=True), timeout=600):
        if m.token_ids and ttft is None:
            ttft = time.time() - t0
        ids.extend(m.token_ids)
        if m.HasField("usage"):
            usage = m.usage
    return ttft, ids, usage


def pct(values, q):
    """The nearest-rank q-quantile of values (0 when there are none)."""
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))] if v else 0.0
