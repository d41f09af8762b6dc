#!/usr/bin/python3
"""A soak under faults (issue 18): interactive traffic over gRPC and HTTP at several priorities
and a batch job, while a chaos loop SIGKILLs and restarts node groups and, once, the
coordinator; then nothing may be lost, duplicated, wrong or leaked.

The cluster: a coordinator (--http-listen, --state-dir, fixed ports so that the nodes redial a
restarted one) and three single-rank groups with the bundled model, all on loopback. First every
request of a fixed set (greedy and seeded-sampling requests of several prompts and lengths) runs
once on the undisturbed cluster: its reference text. Then for --seconds, W client threads send
requests of the set (gRPC streaming, HTTP streaming, HTTP non-streaming; gRPC priorities -1, 0,
1) and a batch job of --batch-lines lines of the same set runs (Files and Batches API, priority
-1, filling what interactive traffic leaves), while the chaos loop kills a random group every
--kill-every seconds (never the last one) and restarts it a moment later; halfway through, the
coordinator is killed with SIGKILL and started again on the same state directory. Failover
replays (docs/architecture.md "Failover") keep every stream going through a group's death, and
the batch store keeps the job through the coordinator's, so the verdict is strict:
  - every interactive request completed, with exactly its reference text (a wrong or repeated
    token shows up as a different text), except those open or sent while the coordinator was
    down, which may end with a documented status (UNAVAILABLE, a refused connection, an HTTP
    stream cut short); none hung (lost);
  - the batch job completed, its output has every custom_id exactly once, each with the
    reference text;
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

CTX = ("--ctx", "1024", "--connect-timeout-ms", "60000")
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
        self.t0, self.t1 = time.time(), None


# What a client may see while the coordinator is down or has just restarted and its groups
# are re-attaching (docs/api.md): UNAVAILABLE / 503, or for HTTP a refused or cut connection.
OUTAGE_STATUSES = ("UNAVAILABLE", "HTTP 503", "HTTP client error", "stream ended without [DONE]")


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


def http_call(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def multipart(content):
    boundary = "tesseraSoakBoundary"
    body = ("--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"soak.jsonl\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n" % (boundary, boundary)).encode()
    body += content + ("\r\n--%s--\r\n" % boundary).encode()
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def start_batch(port, reqs, n_lines):
    """Uploads n_lines requests of the set and creates a batch: (batch id, custom_id -> name)."""
    names, lines = {}, []
    for i in range(n_lines):
        name, fields = reqs[i % len(reqs)]
        cid = "soak-%04d" % i
        names[cid] = name
        lines.append(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/completions",
                                 "body": json.loads(http_body(fields, False))}))
    body, hdr = multipart(("\n".join(lines) + "\n").encode())
    status, doc = http_call(port, "POST", "/v1/files", body, hdr)
    if status != 200:
        raise AssertionError("batch upload: %s %s" % (status, doc[:300]))
    create = json.dumps({"input_file_id": json.loads(doc)["id"], "endpoint": "/v1/completions",
                         "completion_window": "24h"})
    status, doc = http_call(port, "POST", "/v1/batches", create,
                            {"Content-Type": "application/json"})
    if status != 200:
        raise AssertionError("batch create: %s %s" % (status, doc[:300]))
    return json.loads(doc)["id"], names


def finish_batch(port, bid, timeout):
    """Waits for the batch to end: (batch object, output lines)."""
    end, b = time.time() + timeout, None
    while time.time() < end:
        try:
            status, doc = http_call(port, "GET", "/v1/batches/" + bid)
            b = json.loads(doc) if status == 200 else b
        except OSError:
            pass
        if b and b["status"] in ("completed", "failed", "expired", "cancelled"):
            break
        time.sleep(0.2)
    out = []
    if b and b.get("output_file_id"):
        status, doc = http_call(port, "GET", "/v1/files/%s/content" % b["output_file_id"])
        out = [json.loads(l) for l in doc.decode().splitlines() if l.strip()]
    return b, out


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
            r.t1 = time.time()
            with lock:
                results.append(r)
            if r.status != "OK":
                time.sleep(0.05)  # the coordinator is down: do not spin

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
    ap.add_argument("--batch-lines", type=int, default=150)
    args = ap.parse_args()
    f = harness.Failures()
    c = sc.Cluster(args.bin_dir, args.pydir)
    try:
        port, worker_port = harness.free_port(), harness.free_port()
        coordinator_args = ("--http-listen", "127.0.0.1:%d" % port,
                            "--worker-listen", "127.0.0.1:%d" % worker_port,
                            "--state-dir", os.path.join(c.tmp, "state"),
                            "--heartbeat-timeout-ms", "3000", "--max-queued-requests", "1000")
        c.start_coordinator(*coordinator_args)
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
        bid, batch_names = start_batch(port, reqs, args.batch_lines)

        kills, restarts = [0], [0]
        failed_over = [0]  # Health's count dies with a killed coordinator: summed across it
        outage = [None, None]  # when the coordinator was down: [killed, serving again]
        chaos_stop = threading.Event()

        def kill_coordinator():
            failed_over[0] += c.health().requests_failed_over
            outage[0] = time.time()
            sc.signal_proc(c.coordinator, sc.SIGKILL)
            c.coordinator.wait()
            c.start_coordinator(*coordinator_args)
            c.wait_groups(sum(nodes[n].poll() is None for n in names), timeout=60)
            outage[1] = time.time()

        def chaos():
            rnd = random.Random(args.seed)
            t_coordinator = time.time() + args.seconds / 2
            while not chaos_stop.wait(args.kill_every * (0.5 + rnd.random())):
                if t_coordinator and time.time() > t_coordinator:
                    t_coordinator = None
                    kill_coordinator()
                    continue
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
        batch, batch_out = finish_batch(port, bid, 240)
        idle = c.wait_kv_idle(30)
        h = c.health()
        failovers = failed_over[0] + h.requests_failed_over

        def in_outage(r):
            return (outage[0] is not None and r.t1 >= outage[0] - 0.1 and
                    r.t0 <= outage[1] + 1.0 and r.status.startswith(OUTAGE_STATUSES))

        every = quiet + chaotic
        wrong = [r for r in every if r.status == "OK" and r.text != refs[r.name]]
        ended_by_outage = [r for r in every if r.status != "OK" and in_outage(r)]
        failed = [r for r in every if r.status != "OK" and not in_outage(r)]
        batch_ids = [o["custom_id"] for o in batch_out]
        def batch_text(o):
            resp = o.get("response") or {}
            if resp.get("status_code") != 200:
                return None
            return resp["body"]["choices"][0]["text"]

        batch_wrong = [o["custom_id"] for o in batch_out
                       if batch_text(o) != refs.get(batch_names.get(o["custom_id"]))]
        def count_by_status(rs):
            out = {}
            for r in rs:
                key = " ".join(r.status.split(" ")[:2 if r.status.startswith("HTTP") else 1])
                out[key + " " + r.kind] = out.get(key + " " + r.kind, 0) + 1
            return out

        by_status = count_by_status(failed)
        time.sleep(1)
        # the restarted coordinator against the first one's level after the warm-up (the same
        # program serving the same cluster)
        fds1, rss1 = proc_fds(c.coordinator.pid), proc_rss(c.coordinator.pid)

        kinds = {}
        for r in chaotic:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        print("| soak | value |\n| --- | --- |")
        print("| seconds with faults / quiet | %.0f / %.0f |" % (args.seconds, args.quiet_seconds))
        print("| requests (chaos) by kind | %s |" % ", ".join("%s %d" % kv
                                                            for kv in sorted(kinds.items())))
        print("| requests (quiet) | %d |" % len(quiet))
        print("| group kills / restarts | %d / %d |" % (kills[0], restarts[0]))
        print("| coordinator kills | %d (down %.1f s) |"
              % (outage[0] is not None, (outage[1] or 0) - (outage[0] or 0)))
        print("| batch lines / done / wrong / status | %d / %d / %d / %s |"
              % (args.batch_lines, len(batch_out), len(batch_wrong),
                 batch and batch["status"]))
        print("| failovers (Health) | %d |" % failovers)
        print("| completed exactly | %d |" % (len(every) - len(wrong) - len(failed)))
        print("| wrong text | %d |" % len(wrong))
        print("| ended by the coordinator's kill (documented status) | %d: %s |"
              % (len(ended_by_outage), count_by_status(ended_by_outage)))
        print("| failed otherwise, by status | %s |" % (by_status or "none"))
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
        f.check(not failed, "no request failed but by the coordinator's kill (%s; e.g. %s)"
                % (by_status, [(r.name, r.kind, r.status[:160]) for r in failed[:3]]))
        f.check(outage[0] is not None, "the coordinator was killed and restarted")
        f.check(batch is not None and batch["status"] == "completed" and
                batch["request_counts"]["completed"] == args.batch_lines,
                "the batch job completed across the kills (%s)" % batch)
        f.check(len(batch_ids) == args.batch_lines and set(batch_ids) == set(batch_names),
                "the batch output has every custom_id exactly once (%d lines, %d distinct)"
                % (len(batch_ids), len(set(batch_ids))))
        f.check(not batch_wrong, "every batch line has its reference text (%d wrong: %s)"
                % (len(batch_wrong), batch_wrong[:5]))
        f.check(lost + lost_q == 0, "no client hung (%d)" % (lost + lost_q))
        f.check(idle, "afterwards every group has all its KV blocks free (%s)" % h)
        f.check(fds1 <= fds0 + 8, "coordinator descriptors back (%d -> %d)" % (fds0, fds1))
        f.check(rss1 <= rss0 * 1.25 + 24 * 2**20,
                "coordinator memory back (%.1f -> %.1f MiB)" % (rss0 / 2**20, rss1 / 2**20))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
