#!/usr/bin/python3
"""A soak under faults (issue 18): interactive traffic over gRPC and HTTP at several priorities
while a chaos loop SIGKILLs and restarts node groups; then nothing may be lost, duplicated,
wrong or leaked.

The cluster: a coordinator (--http-listen) and three single-rank groups with the bundled model,
all on loopback. First every request of a fixed set (greedy and seeded-sampling requests of
several prompts and lengths) runs once on the undisturbed cluster: its reference text. Then for
--seconds, W client threads send requests of the set (gRPC streaming, HTTP streaming, HTTP
non-streaming; gRPC priorities -1, 0, 1) while the chaos loop kills a random group every
--kill-every seconds (never the last one) and restarts it a moment later. Failover replays
(docs/architecture.md "Failover") keep every stream going, so the verdict is strict:
  - every request completed, with exactly its reference text (a wrong or repeated token shows
    up as a different text); none failed, none hung (lost);
  - afterwards every group reports all its KV blocks free and nothing running;
  - the coordinator's open file descriptors and resident memory are back to their level after
    the warm-up (within 8 descriptors and 24 MiB + 25 %).
It prints a table: requests by kind, kills, restarts, failovers (Health), completed, failed by
status, lost, p50/p99 TTFT and inter-token latency during the chaos and in a quiet phase before
it. Traffic is loopback only and everything it starts is stopped; bench/soak.sh runs it for
longer.

  test_soak.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python [--seconds 45]
"""
import argparse
import http.client
import json
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
import serving_cluster as sc  # noqa: E402

CTX = ("--ctx", "1024")
PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben", "One day, a bird",
           "The sun was hot", "Tom had a red ball"]


def request_set():
    """(name, fields) of every request of the soak: gRPC GenerateRequest fields."""
    out = []
    for i, p in enumerate(PROMPTS):
        n = 48 + 40 * (i % 4)
        out.append(("greedy-%d" % i, dict(prompt=p, max_tokens=n, ignore_eos=True)))
        out.append(("sampled-%d" % i, dict(prompt=p, max_tokens=n, ignore_eos=True,
                                           sampling=dict(temperature=0.8, top_p=0.9,
                                                         seed=1000 + i))))
    return out


def http_body(fields, stream):
    body = {"prompt": fields["prompt"], "max_tokens": fields["max_tokens"], "stream": stream,
            "ignore_eos": True}
    s = fields.get("sampling")
    if s:
        body.update(temperature=s["temperature"], top_p=s["top_p"], seed=s["seed"])
    else:
        body["temperature"] = 0
    return json.dumps(body)


class Result:
    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self.text, self.status, self.ttft, self.gaps = None, None, None, []


def run_grpc(c, name, fields, priority):
    r = Result(name, "grpc")
    t0 = time.time()
    last = None
    parts = []
    try:
        for m in c.generate_call(timeout=120, priority=priority, **fields):
            now = time.time()
            if m.token_ids:
                if last is None:
                    r.ttft = now - t0
                else:
                    r.gaps.append(now - last)
                last = now
            parts.append(m.text)
        r.text, r.status = "".join(parts), "OK"
    except c.grpc.RpcError as e:
        r.status = "%s %s" % (e.code().name, e.details())
    return r


def run_http(port, name, fields, stream):
    r = Result(name, "http-stream" if stream else "http")
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/completions", http_body(fields, stream),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            r.status = "HTTP %d %s" % (resp.status, resp.read()[:200])
            return r
        if not stream:
            r.text = json.loads(resp.read())["choices"][0]["text"]
            r.ttft = time.time() - t0
            r.status = "OK"
            return r
        parts, last, done = [], None, False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                done = True
                break
            doc = json.loads(data)
            if "error" in doc:
                r.status = "SSE error %s" % doc["error"].get("message")
                return r
            if doc.get("choices"):
                now = time.time()
                if last is None:
                    r.ttft = now - t0
                else:
                    r.gaps.append(now - last)
                last = now
                parts.append(doc["choices"][0].get("text", ""))
        r.text = "".join(parts)
        r.status = "OK" if done else "stream ended without [DONE]"
    except (OSError, http.client.HTTPException, ValueError) as e:
        r.status = "HTTP client error %s" % e
    finally:
        conn.close()
    return r


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def proc_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) * 1024 if m else 0


def traffic(c, port, reqs, refs, seconds, n_workers, seed):
    """W client threads for `seconds`; returns (results, lost): lost counts threads still in a
    request 60 s after the end."""
    results, lock = [], threading.Lock()
    stop_at = time.time() + seconds

    def worker(w):
        rnd = random.Random(seed * 100 + w)
        while time.time() < stop_at:
            name, fields = rnd.choice(reqs)
            how = rnd.choice(["grpc", "grpc", "http-stream", "http"])
            if how == "grpc":
                r = run_grpc(c, name, fields, rnd.choice([-1, 0, 1]))
            else:
                r = run_http(port, name, fields, how == "http-stream")
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return results, sum(t.is_alive() for t in threads)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--pydir", required=True)
    ap.add_argument("--seconds", type=float, default=45)
    ap.add_argument("--quiet-seconds", type=float, default=8)
    ap.add_argument("--kill-every", type=float, default=2.5)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    f = harness.Failures()
    c = sc.Cluster(args.bin_dir, args.pydir)
    try:
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port,
                            "--heartbeat-timeout-ms", "3000", "--max-queued-requests", "1000")
        names = ["a", "b", "c"]
        nodes = {n: c.start_node(n, *CTX) for n in names}
        c.wait_groups(3)
        reqs = request_set()
        refs = {}
        for name, fields in reqs:
            refs[name] = c.generate(timeout=120, **fields)[0]

        # warm-up and the quiet phase: the same traffic with no faults
        quiet, lost_q = traffic(c, port, reqs, refs, args.quiet_seconds, args.workers, args.seed)
        f.check(c.wait_kv_idle(30), "after the quiet phase: every block free (%s)" % c.health())
        fds0, rss0 = proc_fds(c.coordinator.pid), proc_rss(c.coordinator.pid)
        failed_over0 = c.health().requests_failed_over

        kills, restarts = [0], [0]
        chaos_stop = threading.Event()

        def chaos():
            rnd = random.Random(args.seed)
            while not chaos_stop.wait(args.kill_every * (0.5 + rnd.random())):
                alive = [n for n in names if nodes[n].poll() is None]
                if len(alive) < 2:
                    continue
                victim = rnd.choice(alive)
                sc.signal_proc(nodes[victim], sc.SIGKILL)
                nodes[victim].wait()
                kills[0] += 1
                if chaos_stop.wait(0.3 + rnd.random()):
                    break
                nodes[victim] = c.start_node(victim, *CTX)
                restarts[0] += 1
            for n in names:  # all back for the checks
                if nodes[n].poll() is not None:
                    nodes[n] = c.start_node(n, *CTX)
                    restarts[0] += 1

        th = threading.Thread(target=chaos, daemon=True)
        th.start()
        chaotic, lost = traffic(c, port, reqs, refs, args.seconds, args.workers, args.seed + 1)
        chaos_stop.set()
        th.join(30)
        c.wait_groups(3, timeout=60)
        idle = c.wait_kv_idle(30)
        h = c.health()
        failovers = h.requests_failed_over - failed_over0

        every = quiet + chaotic
        wrong = [r for r in every if r.status == "OK" and r.text != refs[r.name]]
        failed = [r for r in every if r.status != "OK"]
        by_status = {}
        for r in failed:
            key = r.status.split(" ")[0] + " " + r.kind
            by_status[key] = by_status.get(key, 0) + 1
        time.sleep(1)
        fds1, rss1 = proc_fds(c.coordinator.pid), proc_rss(c.coordinator.pid)

        kinds = {}
        for r in chaotic:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        print("| soak | value |\n| --- | --- |")
        print("| seconds with faults / quiet | %.0f / %.0f |" % (args.seconds, args.quiet_seconds))
        print("| requests (chaos) by kind | %s |" % ", ".join("%s %d" % kv
                                                            for kv in sorted(kinds.items())))
        print("| requests (quiet) | %d |" % len(quiet))
        print("| kills / restarts | %d / %d |" % (kills[0], restarts[0]))
        print("| failovers (Health) | %d |" % failovers)
        print("| completed exactly | %d |" % (len(every) - len(wrong) - len(failed)))
        print("| wrong text | %d |" % len(wrong))
        print("| failed by status | %s |" % (by_status or "none"))
        print("| lost (hung clients) | %d |" % (lost + lost_q))
        for label, rs in (("quiet", quiet), ("chaos", chaotic)):
            ttft = [r.ttft for r in rs if r.ttft is not None]
            itl = [g for r in rs for g in r.gaps]
            print("| %s p50/p99 TTFT ms | %.1f / %.1f |" % (label, 1e3 * pct(ttft, .5),
                                                           1e3 * pct(ttft, .99)))
            print("| %s p50/p99 ITL ms | %.2f / %.2f |" % (label, 1e3 * pct(itl, .5),
                                                          1e3 * pct(itl, .99)))
        print("| coordinator fds before / after | %d / %d |" % (fds0, fds1))
        print("| coordinator RSS MiB before / after | %.1f / %.1f |" % (rss0 / 2**20, rss1 / 2**20))

        f.check(len(chaotic) >= 20, "enough traffic under chaos (%d requests)" % len(chaotic))
        f.check(kills[0] >= 3, "the chaos loop killed groups (%d)" % kills[0])
        f.check(failovers >= 1, "streams were failed over (%d)" % failovers)
        f.check(not wrong, "every completed request has its reference text (%d wrong: %s)"
                % (len(wrong), [(r.name, r.kind, r.text[:40]) for r in wrong[:3]]))
        f.check(not failed, "no request failed (%s; e.g. %s)"
                % (by_status, [(r.name, r.kind, r.status[:160]) for r in failed[:3]]))
        f.check(lost + lost_q == 0, "no client hung (%d)" % (lost + lost_q))
        f.check(idle, "afterwards every group has all its KV blocks free (%s)" % h)
        f.check(fds1 <= fds0 + 8, "coordinator descriptors back (%d -> %d)" % (fds0, fds1))
        f.check(rss1 <= rss0 * 1.25 + 24 * 2**20,
                "coordinator memory back (%.1f -> %.1f MiB)" % (rss0 / 2**20, rss1 / 2**20))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
