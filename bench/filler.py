#!/usr/bin/python3
"""filler.py — batch work as filler behind interactive traffic in one pool (issue 16's benchmark).

  bench/filler.py [--build BUILD] [--model M.gguf | bundled] [--threads T] [--batch-requests 5000]

One `tessera up` cluster (one mixed group unless --groups), its HTTP API and a durable state dir;
every request is a synthetic prompt of --prompt-tokens token ids (different per request: the
prefix cache never helps) streaming exactly --max-tokens tokens (ignore_eos, greedy), interactive
and batch alike. The passes, in one run on the same cores:

  1. saturated: `tessera bench -c 64` (a closed loop of 64 streams over gRPC): the cluster's
     saturated tokens/s S, and the "client at concurrency 64" that batch-only throughput is held
     against;
  2. interactive alone: `tessera bench --rate R` — Poisson arrivals at --load (default 0.5) of
     the capacity S measured in pass 1, R = load x S / max-tokens requests per second;
  3. interactive beside a batch job: a --batch-requests line JSONL file submitted with
     `tessera batch submit` (/v1/completions lines at the batch priority); once its first lines
     have finished, pass 2 again on the same arrival schedule (other prompts). The generated
     tokens of both kinds are read from /metrics
     (tessera:generation_tokens_total{priority_class}) before and after;
  4. batch only: the big job is cancelled (its finished lines kept), and a second job of the
     same --saturated-requests requests as pass 1's client (other prompts) runs alone, from
     submission to completed: its tokens/s against the client's.

Printed: the markdown rows for docs/benchmarks.md — interactive p50/p99 TTFT and ITL alone and
with the batch job and their ratios (goal each <= 1.1x), batch tokens/s absorbed, utilisation =
all generated tokens/s during pass 3 / S (goal >= 0.9), batch-only tokens/s / S (goal >= 1.0).
Exit 1 when a request failed or the batch job did not run; the goals are reported, not enforced.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import cluster
from cluster import log

FIRST_ID, LAST_ID = 3, 500  # ordinary token ids every vocabulary has (the bundled one: 512)


def http_json(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def generated_tokens(base):
    """tessera:generation_tokens_total summed per priority_class: {"interactive": n, "batch": m}."""
    with urllib.request.urlopen(base + "/metrics", timeout=60) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^tessera:generation_tokens_total\{([^}]*)\} (\S+)$', text, re.M):
        cls = re.search(r'priority_class="([^"]*)"', m.group(1))
        key = cls.group(1) if cls else ""
        out[key] = out.get(key, 0) + float(m.group(2))
    return out


def bench(args, ep, extra):
    cmd = [os.path.join(args.build, "bin", "tessera"), "bench", "--server", ep, "--json",
           "-l", str(args.prompt_tokens), "-n", str(args.max_tokens),
           "--timeout-ms", "600000"] + extra
    log("+ " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode not in (0, 1):
        raise SystemExit("tessera bench failed (%d): %s" % (p.returncode, p.stderr.strip()))
    rep = json.loads(p.stdout)
    if rep["failed"]:
        log("tessera bench: %d requests failed: %s" % (rep["failed"], rep["errors"]))
    return rep


def write_batch(path, args, n, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            ids = [rng.randrange(FIRST_ID, LAST_ID) for _ in range(args.prompt_tokens)]
            f.write(json.dumps({"custom_id": "req-%d" % i, "method": "POST",
                                "url": "/v1/completions",
                                "body": {"prompt": ids, "max_tokens": args.max_tokens,
                                         "temperature": 0, "ignore_eos": True}}) + "\n")


def submit(args, base, path):
    sub = subprocess.run([os.path.join(args.build, "bin", "tessera"), "batch", "submit", path,
                          "--server", base], stdout=subprocess.PIPE, text=True, check=True)
    return sub.stdout.strip().splitlines()[-1]


def wait_batch(base, batch_id):
    """Polls until the batch has ended; returns it."""
    while True:
        b = http_json(base, "GET", "/v1/batches/" + batch_id)
        if b["status"] in ("completed", "failed", "expired", "cancelled"):
            return b
        time.sleep(0.2)


def start_cluster(args, d):
    flags = ["--state-dir", os.path.join(d, "state")]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    if args.groups:
        flags += ["--groups", str(args.groups)]
    return cluster.start(args.build, args.model, d, flags + args.up_flag)


def ratio(a, b):
    return a / b if b else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", help="GGUF, or 'bundled' (default: the 110M synthetic shape, f16, "
                    "made once under ~/.cache/tessera/bench)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--groups", type=int, default=0)
    ap.add_argument("--up-flag", action="append", default=[], help="another tessera up flag")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--load", type=float, default=0.5, help="interactive load / capacity")
    ap.add_argument("--interactive-s", type=float, default=60,
                    help="length of each interactive pass (its requests = rate x this)")
    ap.add_argument("--saturated-requests", type=int, default=512,
                    help="requests of pass 1's client and of pass 4's batch job")
    ap.add_argument("--batch-requests", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    args.model = cluster.model_path(args.build, args.model)
    d = tempfile.mkdtemp(prefix="tessera-filler-")
    proc, ep, base = start_cluster(args, d)
    ok = True
    try:
        # 1. saturated
        sat = bench(args, ep, ["-c", "64", "-r", str(args.saturated_requests),
                               "--seed", str(args.seed + 100)])
        cap = sat["tokens_per_s"]
        rate = args.load * cap / args.max_tokens
        n_int = max(16, int(rate * args.interactive_s))
        log("saturated: %.1f tokens/s; interactive: %.2f requests/s, %d requests" %
            (cap, rate, n_int))
        inter = ["--rate", "%.4f" % rate, "-c", "256", "-r", str(n_int),
                 "--seed", str(args.seed)]
        # 2. interactive alone
        alone = bench(args, ep, inter)
        # 3. the batch job, then interactive beside it (the same schedule, other prompts)
        path = os.path.join(d, "batch.jsonl")
        write_batch(path, args, args.batch_requests, args.seed)
        batch_id = submit(args, base, path)
        log("batch %s submitted (%d lines)" % (batch_id, args.batch_requests))
        t0 = time.time()
        while True:
            b = http_json(base, "GET", "/v1/batches/" + batch_id)
            if b["request_counts"]["completed"] >= 16 or b["status"] not in (
                    "validating", "in_progress"):
                break
            if time.time() - t0 > 600:
                raise SystemExit("the batch job did not start in 10 minutes")
            time.sleep(0.5)
        before, t_before = generated_tokens(base), time.time()
        mixed = bench(args, ep, inter + ["--prompt-base", str(10 * n_int)])
        after, t_after = generated_tokens(base), time.time()
        b = http_json(base, "GET", "/v1/batches/" + batch_id)
        if b["status"] != "in_progress":
            log("the batch job is %s at the end of the mixed pass: make it larger" % b["status"])
            ok = False
        window = t_after - t_before
        batch_tps = (after.get("batch", 0) - before.get("batch", 0)) / window
        all_tps = (sum(after.values()) - sum(before.values())) / window
        # 4. batch only: pass 1's requests as a batch job of their own
        if http_json(base, "GET", "/v1/batches/" + batch_id)["status"] == "in_progress":
            http_json(base, "POST", "/v1/batches/%s/cancel" % batch_id)
        wait_batch(base, batch_id)
        path = os.path.join(d, "alone.jsonl")
        write_batch(path, args, args.saturated_requests, args.seed + 1)
        t0 = time.time()
        alone_id = submit(args, base, path)
        b = wait_batch(base, alone_id)
        batch_only_tps = b["request_counts"]["completed"] * args.max_tokens / (time.time() - t0)
        if b["status"] != "completed" or b["request_counts"]["failed"]:
            log("the batch-only job ended %s: %s" % (b["status"], b["request_counts"]))
            ok = False
        ok = ok and not (sat["failed"] or alone["failed"] or mixed["failed"]) and batch_tps > 0
    finally:
        cluster.stop(proc)

    def row(name, r):
        return "| %s | %d | %d | %.2f / %.2f | %.2f / %.2f | %.1f |" % (
            name, r["requests"], r["late"], r["ttft_ms"]["p50"], r["ttft_ms"]["p99"],
            r["itl_ms"]["p50"], r["itl_ms"]["p99"], r["tokens_per_s"])
    print("saturated (closed loop, 64 streams): %.1f tokens/s; interactive load %.2f requests/s "
          "(%.0f%% of it), %d+%d tokens each" % (cap, rate, 100 * args.load, args.prompt_tokens,
                                                 args.max_tokens))
    print()
    print("| interactive | requests | late | TTFT p50 / p99 ms | ITL p50 / p99 ms | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("alone", alone))
    print(row("beside the batch job", mixed))
    print("| ratio | | | %.2fx / %.2fx | %.2fx / %.2fx | |" % (
        ratio(mixed["ttft_ms"]["p50"], alone["ttft_ms"]["p50"]),
        ratio(mixed["ttft_ms"]["p99"], alone["ttft_ms"]["p99"]),
        ratio(mixed["itl_ms"]["p50"], alone["itl_ms"]["p50"]),
        ratio(mixed["itl_ms"]["p99"], alone["itl_ms"]["p99"])))
    print()
    print("| batch tokens/s absorbed | all generated tokens/s | utilisation (÷ saturated) | "
          "batch job alone tokens/s | ÷ client at 64 streams |")
    print("| --- | --- | --- | --- | --- |")
    print("| %.1f | %.1f | %.2f | %.1f | %.2fx |" % (batch_tps, all_tps, ratio(all_tps, cap),
                                                   batch_only_tps, ratio(batch_only_tps, cap)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
