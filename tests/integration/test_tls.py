#!/usr/bin/python3
"""TLS on the coordinator's public listeners (issue 15, security): --tls-cert / --tls-key serve
the gRPC API and the HTTP API over TLS; clients trust a CA (--tls-ca, grpc's root certificates,
an httpx client's verify).

A test CA and a server certificate for localhost / 127.0.0.1 are made with openssl at test time.
  1. Bad TLS files stop the coordinator and `tessera up` before anything listens (exit 2, the
     flag named): a certificate without its key, a missing file, a file without a certificate,
     a key that is not the certificate's.
  2. A coordinator with the certificate and one node: grpcio over SSL trusting the CA gets
     Health and a greedy completion; a plaintext grpcio channel, and an SSL one that does not
     trust the CA, fail with UNAVAILABLE within seconds (no hang); `tessera generate --server
     --tls-ca CA` streams the same text, without --tls-ca it fails (exit 1), with a missing CA
     file it is a usage error (exit 2).
  3. HTTPS: the official openai client with an httpx client trusting the CA completes (streamed
     too); with the default trust store it gets APIConnectionError; plain HTTP to the HTTPS port
     fails at once instead of hanging.
  4. `tessera up --tls-cert --tls-key --http-port` serves gRPC and HTTPS with the certificate.

  test_tls.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
  (the client half runs as: VENV_PYTHON test_tls.py --client JSON)
"""
import http.client
import json
import os
import subprocess
import sys
import time


def client(cfg):
    """The openai-package checks over HTTPS; runs under the venv's python."""
    import openai

    failed = []

    def check(cond, what):
        if not cond:
            failed.append(what)
            print("FAIL " + what, file=sys.stderr)

    # The client's own httpx client (openai.DefaultHttpxClient), trusting the test CA.
    trusting = openai.DefaultHttpxClient(verify=cfg["ca"], timeout=30)
    c = openai.OpenAI(base_url=cfg["base_url"], api_key="none", max_retries=0,
                      http_client=trusting)
    r = c.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=8,
                             temperature=0)
    check(r.choices[0].text == cfg["expected"],
          "HTTPS completion through the openai client (%r, want %r)"
          % (r.choices[0].text, cfg["expected"]))
    text = "".join(ch.choices[0].text for ch in c.completions.create(
        model=cfg["model"], prompt=cfg["prompt"], max_tokens=8, temperature=0, stream=True)
        if ch.choices)
    check(text == cfg["expected"], "HTTPS streaming (%r)" % text)
    strict = openai.OpenAI(base_url=cfg["base_url"], api_key="none", max_retries=0, timeout=10)
    try:
        strict.completions.create(model=cfg["model"], prompt=cfg["prompt"], max_tokens=2)
        check(False, "a client that does not trust the CA is refused")
    except openai.APIConnectionError:
        pass
    sys.exit(1 if failed else 0)


if len(sys.argv) == 3 and sys.argv[1] == "--client":
    client(json.loads(sys.argv[2]))

import harness  # noqa: E402
import serving_cluster as sc  # noqa: E402


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_certs(d):
    """ca.pem; server.pem / server.key for localhost and 127.0.0.1 signed by it; other.key (a
    key of another certificate); garbage.pem. Returns their paths by name."""
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=Tessera test CA", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    openssl("genpkey", "-algorithm", "RSA", "-out", "other.key", cwd=d)
    with open(os.path.join(d, "garbage.pem"), "w") as f:
        f.write("not a certificate\n")
    for k in ("ca.key", "server.key", "other.key"):
        os.chmod(os.path.join(d, k), 0o600)
    return {n: os.path.join(d, n) for n in ("ca.pem", "server.pem", "server.key", "other.key",
                                           "garbage.pem")}


def check_refusals(c, f, certs):
    coord = [os.path.join(c.bin_dir, "tessera-coordinator"), "--listen", "127.0.0.1:0",
             "--worker-listen", "127.0.0.1:0", "-m", harness.MODEL_F32]
    up = [os.path.join(c.bin_dir, "tessera"), "up", "-m", harness.MODEL_F32, "--port", "0"]
    cases = [("a certificate without its key", ["--tls-cert", certs["server.pem"]],
              "go together"),
             ("a missing certificate", ["--tls-cert", "/nonexistent.pem", "--tls-key",
                                        certs["server.key"]], "--tls-cert: /nonexistent.pem"),
             ("no certificate in the file", ["--tls-cert", certs["garbage.pem"], "--tls-key",
                                             certs["server.key"]], "no PEM certificate"),
             ("another certificate's key", ["--tls-cert", certs["server.pem"], "--tls-key",
                                            certs["other.key"]], "is not the private key")]
    for what, flags, words in cases:
        for name, cmd in (("tessera-coordinator", coord), ("tessera up", up)):
            t0 = time.time()
            p = subprocess.run(cmd + flags, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=60)
            f.check(p.returncode == 2 and words in p.stdout and time.time() - t0 < 20,
                    "%s with %s: exit 2 saying %r (got %d: %s)"
                    % (name, what, words, p.returncode, p.stdout.strip()[-300:]))


def grpc_fails(c, channel):
    try:
        c.health_on(channel)
        return None
    except c.grpc.RpcError as e:
        return e.code()


def check_grpc(c, f, certs, prompt, expected):
    with open(certs["ca.pem"], "rb") as fh:
        ca = fh.read()
    tls = c.grpc.secure_channel(c.endpoint, c.grpc.ssl_channel_credentials(root_certificates=ca))
    c.channel = tls
    h = c.wait_groups(1)
    f.check(len(h.groups) == 1, "gRPC over TLS: Health (%d groups)" % len(h.groups))
    text, _, _ = c.generate(prompt=prompt, max_tokens=8)
    f.check(text == expected, "gRPC over TLS: the greedy completion (%r)" % text)
    for what, ch in (("a plaintext channel", c.grpc.insecure_channel(c.endpoint)),
                     ("an SSL channel without the CA",
                      c.grpc.secure_channel(c.endpoint, c.grpc.ssl_channel_credentials()))):
        t0 = time.time()
        code = grpc_fails(c, ch)
        f.check(code == c.grpc.StatusCode.UNAVAILABLE and time.time() - t0 < 15,
                "%s to the TLS port fails UNAVAILABLE at once (got %s)" % (what, code))
        ch.close()
    gen = [os.path.join(c.bin_dir, "tessera"), "generate", "--server", c.endpoint, "-p", prompt,
           "-n", "8", "--temperature", "0"]
    p = harness.run(gen + ["--tls-ca", certs["ca.pem"]], timeout=60, check=False)
    f.check(p.returncode == 0 and expected in p.stdout,
            "tessera generate --tls-ca streams the text (rc %d: %r %s)"
            % (p.returncode, p.stdout, p.stderr[-300:]))
    p = harness.run(gen, timeout=60, check=False)
    f.check(p.returncode == 1 and "UNAVAILABLE" in p.stderr,
            "tessera generate without --tls-ca: exit 1, UNAVAILABLE (rc %d: %s)"
            % (p.returncode, p.stderr[-300:]))
    p = harness.run(gen + ["--tls-ca", "/nonexistent-ca.pem"], timeout=60, check=False)
    f.check(p.returncode == 2 and "--tls-ca" in p.stderr,
            "tessera generate with a missing --tls-ca file: exit 2 naming it (rc %d: %s)"
            % (p.returncode, p.stderr[-300:]))


def check_https(c, f, certs, python, port, prompt, expected):
    cfg = {"base_url": "https://127.0.0.1:%d/v1" % port, "ca": certs["ca.pem"],
           "model": c.list_models().models[0].name, "prompt": prompt, "expected": expected}
    cl = subprocess.run([python, os.path.abspath(__file__), "--client", json.dumps(cfg)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    f.check(cl.returncode == 0, "the openai client checks over HTTPS:\n" + cl.stdout[-2000:])
    t0 = time.time()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        status = type(e).__name__
    f.check(status != 200 and time.time() - t0 < 10,
            "plain HTTP to the HTTPS port fails at once (got %s after %.1f s)"
            % (status, time.time() - t0))


def main():
    f = harness.Failures()
    python = harness.venv_python(["openai==3.57.0"])
    c = sc.from_args()
    c.health_on = lambda ch: ch.unary_unary(
        "/tessera.v1.Inference/Health", request_serializer=c.pb.HealthRequest.SerializeToString,
        response_deserializer=c.pb.HealthResponse.FromString)(c.pb.HealthRequest(), timeout=10)
    try:
        certs = make_certs(c.tmp)
        check_refusals(c, f, certs)
        prompt = "Once upon a time"
        p = harness.run([os.path.join(c.bin_dir, "tessera"), "generate", "-m", harness.MODEL_F32,
                         "-p", prompt, "-n", "8", "--temperature", "0"], timeout=60)
        expected = p.stdout[len(prompt):].rstrip("\n")
        port = harness.free_port()
        c.start_coordinator("--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"],
                            "--http-listen", "127.0.0.1:%d" % port)
        c.start_node("solo")
        check_grpc(c, f, certs, prompt, expected)
        check_https(c, f, certs, python, port, prompt, expected)

        c.stop_all()
        c.procs = []
        port = harness.free_port()
        sc.start_up(c, "--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"],
                    "--http-port", str(port))
        with open(certs["ca.pem"], "rb") as fh:
            c.channel = c.grpc.secure_channel(
                c.endpoint, c.grpc.ssl_channel_credentials(root_certificates=fh.read()))
        text, _, _ = c.generate(prompt=prompt, max_tokens=8)
        f.check(text == expected, "tessera up --tls-cert: gRPC over TLS (%r)" % text)
        check_https(c, f, certs, python, port, prompt, expected)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
