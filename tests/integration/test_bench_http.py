#!/usr/bin/python3
"""`tessera bench --http`: the same workload over gRPC and over the OpenAI HTTP API, in one run.

`tessera up` with the bundled model and an API key file (so the key must travel on both
protocols, from TESSERA_API_KEY):
  1. bench --server --http with the key: both passes succeed, each streams exactly
     requests x max-tokens tokens (ignore_eos; HTTP's count is the usage the server reports and
     equals its chunks), both reports carry TTFT and ITL percentiles, and the comparison has
     HTTP's throughput over gRPC's; the coordinator's CPU is measured for both with
     --coordinator-pid. The text output names both servers and prints the comparison.
  2. A 1 ms deadline (--timeout-ms 1) fails every request of both passes as DEADLINE_EXCEEDED
     (over HTTP the client gives up and closes the connection), exit 1.
  3. An HTTP URL where nothing listens: the gRPC pass succeeds, every HTTP request fails as
     UNAVAILABLE naming the URL, exit 1.
  4. Usage errors, exit 2 before any request: a URL that is not http://HOST:PORT, and --verify
     with --http (HTTP streams carry no token ids).
  5. A wrong key: exit 1, UNAUTHENTICATED (the model lookup over gRPC refuses it first).
Everything the test starts is stopped.

  test_bench_http.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import json
import os
import re

import harness
import serving_cluster as sc

KEY = "sk-bench-test-key"
REQUESTS, MAX_TOKENS = 12, 24


def bench(c, env, *args, timeout=300):
    return harness.run([os.path.join(c.bin_dir, "tessera"), "bench"] + list(args),
                       env=env, check=False, timeout=timeout)


def last_json(p):
    lines = p.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        keys = os.path.join(c.tmp, "keys")
        with open(keys, "w") as kf:
            kf.write(KEY + "\n")
        os.chmod(keys, 0o600)
        up = sc.start_up(c, "--groups", "1", "--api-key-file", keys)
        m = re.search(r"HTTP API on (http://127\.0\.0\.1:\d+)/v1", c.log(up))
        f.check(m is not None, "tessera up serves HTTP:\n" + c.log(up))
        url = m.group(1) if m else "http://127.0.0.1:1"
        coordinator = re.search(r"coordinator\[(\d+)\]", c.log(up))
        env = dict(os.environ, TESSERA_API_KEY=KEY)
        common = ["--server", c.endpoint, "--http", url + "/v1", "--concurrency", "4",
                  "--requests", str(REQUESTS), "--prompt-tokens", "16",
                  "--max-tokens", str(MAX_TOKENS)]

        # 1. both passes, exact token counts, the comparison
        extra = ["--coordinator-pid", coordinator.group(1)] if coordinator else []
        p = bench(c, env, *common, "--json", *extra)
        out = last_json(p)
        grpc, http = out.get("grpc", {}), out.get("http", {})
        f.check(p.returncode == 0, "bench --http: exit 0 (%d %s)" % (p.returncode, p.stderr))
        for name, r in (("gRPC", grpc), ("HTTP", http)):
            f.check(r.get("ok") == REQUESTS and r.get("failed") == 0 and r.get("errors") == {},
                    "%s: %d requests ok (%r)" % (name, REQUESTS, r))
            f.check(r.get("tokens") == REQUESTS * MAX_TOKENS,
                    "%s: exactly %d tokens (%r)" % (name, REQUESTS * MAX_TOKENS, r.get("tokens")))
            # ITL's p99: a loaded machine may deliver most of a tiny model's tokens in bursts
            f.check(r.get("ttft_ms", {}).get("p99", 0) > 0 and
                    r.get("itl_ms", {}).get("p99", 0) > 0,
                    "%s: TTFT and ITL measured (%r %r)" % (name, r.get("ttft_ms"), r.get("itl_ms")))
            if coordinator:
                f.check("coordinator_cpu_s" in r, "%s: the coordinator's CPU measured" % name)
        f.check(http.get("server") == url + "/v1" and grpc.get("server") == c.endpoint,
                "each report names its server (%r %r)" % (grpc.get("server"), http.get("server")))
        ratio = out.get("http_vs_grpc", {}).get("tokens_per_s_ratio", 0)
        f.check(ratio > 0 and "itl_p99_added_ms" in out.get("http_vs_grpc", {}),
                "the comparison: HTTP tokens/s over gRPC's (%r)" % out.get("http_vs_grpc"))
        p = bench(c, env, *common)
        f.check(p.returncode == 0 and p.stdout.count("tessera bench: ") == 2 and url in p.stdout
                and re.search(r"HTTP vs gRPC: [0-9.]+x the tokens/s", p.stdout),
                "the text report: both passes and the comparison:\n" + p.stdout + p.stderr)

        # 2. a deadline no request can meet, on both protocols
        p = bench(c, env, *common, "--json", "--timeout-ms", "1", "--max-tokens", "100")
        out = last_json(p)
        for name in ("grpc", "http"):
            r = out.get(name, {})
            f.check(r.get("failed") == REQUESTS and
                    r.get("errors") == {"DEADLINE_EXCEEDED": REQUESTS},
                    "%s: a 1 ms deadline fails all %d as DEADLINE_EXCEEDED (%r)"
                    % (name, REQUESTS, r.get("errors")))
        f.check(p.returncode == 1, "missed deadlines: exit 1 (%d)" % p.returncode)

        # 3. nothing listens at the HTTP URL
        dead = "http://127.0.0.1:%d" % harness.free_port()
        p = bench(c, env, "--server", c.endpoint, "--http", dead, "--requests", "3",
                  "--max-tokens", "4", "--prompt-tokens", "4")
        f.check(p.returncode == 1 and "UNAVAILABLE x3" in p.stdout and dead in p.stdout,
                "a dead HTTP URL: 3 UNAVAILABLE naming it, exit 1:\n" + p.stdout + p.stderr)
        f.check(re.search(r"127\.0\.0\.1:\d+, concurrency 1, 3 requests.*\n  requests   3 ok",
                          p.stdout) is not None, "... while the gRPC pass succeeded")

        # 4. usage errors before any request
        for args, what in ((["--http", "localhost:8000"], "http://HOST:PORT"),
                           (["--http", url, "--verify"], "--verify")):
            p = bench(c, env, "--server", c.endpoint, *args, timeout=60)
            f.check(p.returncode == 2 and what in p.stderr,
                    "bench %s: exit 2 naming %s (%d %r)" % (args, what, p.returncode, p.stderr))

        # 5. a wrong key
        p = bench(c, dict(os.environ, TESSERA_API_KEY="sk-wrong"), *common, timeout=60)
        f.check(p.returncode == 1 and "UNAUTHENTICATED" in p.stderr + p.stdout,
                "a wrong key: exit 1, UNAUTHENTICATED (%d %r)" % (p.returncode, p.stderr))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
