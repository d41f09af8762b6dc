#!/usr/bin/python3
"""GET /metrics of tessera-coordinator: the Prometheus text format, parsed by prometheus_client's
own parser (PyPI, in a cached virtual environment; skipped only when PyPI cannot be reached), and
its figures moving with the requests that run over HTTP and gRPC.

A real coordinator (--http-listen) and one node with the bundled model and a small KV cache
(12 blocks of 16 tokens):
  1. Every family is there with its type (gauges, counters, histograms) and the labels model,
     group and (per request) priority_class; every histogram's buckets are cumulative and end in
     +Inf = _count.
  2. A completion over HTTP (plain and streamed) and a Generate over gRPC (priority -5: the
     "batch" class) move the counters by exactly what ran: request_success_total{length},
     generation and prompt tokens (the usage the clients got), one TTFT, queue time and e2e
     observation per request and n-1 inter-token ones.
  3. A bad request counts in request_failure_total{error="invalid_request"}.
  4. The same long prompt twice: prefix_cache_hits_total moves by the cached_tokens the second
     response reports, prefix_cache_queries_total by both prompts. n=4 on a new long prompt:
     the three siblings take the prompt's full blocks from the cache.
  5. Three long requests at once (again until they did) overflow the KV cache:
     kv_cache_usage_perc is above 0 while they run and 0 again after, num_preemptions_total{group}
     counts the node's preemptions, and all three finish.
Everything the test starts is stopped.

  test_http_metrics.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
  (the parser half runs as: VENV_PYTHON test_http_metrics.py --parse < TEXT)
"""
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

FAMILIES = {
    "tessera:num_requests_running": "gauge",
    "tessera:num_requests_waiting": "gauge",
    "tessera:kv_cache_usage_perc": "gauge",
    "tessera:prefix_cache_queries": "counter",
    "tessera:prefix_cache_hits": "counter",
    "tessera:num_preemptions": "counter",
    "tessera:request_success": "counter",
    "tessera:request_failure": "counter",
    "tessera:prompt_tokens": "counter",
    "tessera:generation_tokens": "counter",
    "tessera:time_to_first_token_seconds": "histogram",
    "tessera:inter_token_latency_seconds": "histogram",
    "tessera:e2e_request_latency_seconds": "histogram",
    "tessera:request_queue_time_seconds": "histogram",
}


def parse():
    """Under the venv: the exposition text on stdin → JSON families (prometheus_client's parser,
    which raises on anything malformed)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(sys.stdin.read()):
        out[fam.name] = {"type": fam.type,
                         "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
    json.dump(out, sys.stdout)
    return 0


def post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    return r.status, data


class Scraper:
    def __init__(self, python, port):
        self.python, self.port = python, port

    def text(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            data = r.read().decode()
            ctype = r.getheader("Content-Type", "")
        finally:
            conn.close()
        if r.status != 200 or not ctype.startswith("text/plain"):
            raise AssertionError("GET /metrics: %s %s" % (r.status, ctype))
        return data

    def families(self):
        p = subprocess.run([self.python, os.path.abspath(__file__), "--parse"], input=self.text(),
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError("prometheus_client cannot parse /metrics:\n" + p.stderr)
        return json.loads(p.stdout)


def value(fams, sample, **labels):
    """The sum of the samples named `sample` whose labels include `labels` (0 when none)."""
    fam = sample
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if sample.endswith(suffix) and sample[:-len(suffix)] in fams:
            fam = sample[:-len(suffix)]
    total = 0.0
    for name, lab, v in fams.get(fam, {}).get("samples", []):
        if name == sample and all(lab.get(k) == w for k, w in labels.items()):
            total += v
    return total


def histograms_consistent(fams):
    bad = []
    for name, fam in fams.items():
        if fam["type"] != "histogram":
            continue
        series = {}
        for sname, lab, v in fam["samples"]:
            key = tuple(sorted((k, w) for k, w in lab.items() if k != "le"))
            series.setdefault(key, {"b": [], "count": None})
            if sname.endswith("_bucket"):
                series[key]["b"].append((float(lab["le"]), v))
            elif sname.endswith("_count"):
                series[key]["count"] = v
        for key, s in series.items():
            b = sorted(s["b"])
            if not b or b[-1][0] != float("inf") or b[-1][1] != s["count"] or \
                    any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                bad.append("%s%s: buckets %s count %s" % (name, key, b, s["count"]))
    return bad


def main():
    import harness
    import serving_cluster as sc

    f = harness.Failures()
    python = harness.venv_python(["prometheus-client==0.26.0"])
    c = sc.from_args()
    try:
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--heartbeat-ms", "100")
        # 12 blocks of 16 tokens (10240 bytes each for this model): three requests of 120
        # tokens cannot all fit
        c.start_node("g0", "--kv-memory", str(12 * 10240), "--ctx", "128")
        c.wait_groups(1)
        m = Scraper(python, port)

        fams = m.families()
        for name, typ in FAMILIES.items():
            f.check(name in fams and fams[name]["type"] == typ,
                    "family %s of type %s: %s" % (name, typ, fams.get(name, {}).get("type")))
        run = [s for s in fams["tessera:num_requests_running"]["samples"]]
        f.check(len(run) == 1 and run[0][1] == {"model": "llama", "group": "g0"},
                "num_requests_running{model, group}: %s" % run)
        print("ok   1. the families and their types parse")

        n = 12
        before = fams
        status, data = post(port, "/v1/completions",
                            {"prompt": "Once upon a time", "max_tokens": n, "temperature": 0})
        usage = [json.loads(data)["usage"]] if status == 200 else []
        f.check(status == 200, "HTTP completion: %s %s" % (status, data[:300]))
        status, data = post(port, "/v1/completions",
                            {"prompt": "The little dog", "max_tokens": n, "temperature": 0,
                             "stream": True, "stream_options": {"include_usage": True}})
        events = [json.loads(l[6:]) for l in data.decode().split("\n\n")
                  if l.startswith("data: {")]
        usage += [e["usage"] for e in events if e.get("usage")]
        f.check(status == 200 and len(usage) == 2, "HTTP stream: %s %s" % (status, data[-300:]))
        _, _, msgs = c.generate(prompt="A cat sat", max_tokens=n, priority=-5)
        grpc_usage = msgs[-1].usage
        after = m.families()

        def delta(sample, **labels):
            return value(after, sample, **labels) - value(before, sample, **labels)

        inter = {"group": "g0", "priority_class": "interactive"}
        batch = {"group": "g0", "priority_class": "batch"}
        for labels, runs, prompt in [
                (inter, 2, sum(u["prompt_tokens"] for u in usage)),
                (batch, 1, grpc_usage.prompt_tokens)]:
            checks = {
                ("tessera:request_success_total", "length"): runs,
                ("tessera:generation_tokens_total", None): runs * n,
                ("tessera:prompt_tokens_total", None): prompt,
                ("tessera:time_to_first_token_seconds_count", None): runs,
                ("tessera:request_queue_time_seconds_count", None): runs,
                ("tessera:e2e_request_latency_seconds_count", None): runs,
                ("tessera:inter_token_latency_seconds_count", None): runs * (n - 1),
            }
            for (sample, reason), want in checks.items():
                lab = dict(labels, **({"finished_reason": reason} if reason else {}))
                got = delta(sample, **lab)
                f.check(got == want, "%s%s moved by %s, want %s" % (sample, lab, got, want))
        f.check(delta("tessera:e2e_request_latency_seconds_sum", **inter) > 0,
                "e2e latency sum moved")
        f.check(not histograms_consistent(after), "histograms: %s" % histograms_consistent(after))
        print("ok   2. HTTP (plain, streamed) and gRPC requests move the counters exactly")

        status, _ = post(port, "/v1/completions", {"prompt": "Once", "temperature": 500})
        before, after = after, m.families()
        f.check(status == 400 and delta("tessera:request_failure_total",
                                        error="invalid_request") == 1,
                "a bad request counts as invalid_request (%s)" % status)
        print("ok   3. a refused request counts in request_failure_total")

        long_prompt = " ".join(["Once upon a time there was a little girl named Lily."] * 4)
        cached = 0
        queried = 0
        for _ in range(2):
            status, data = post(port, "/v1/completions",
                                {"prompt": long_prompt, "max_tokens": 2, "temperature": 0})
            u = json.loads(data)["usage"]
            cached += u["prompt_tokens_details"]["cached_tokens"]
            queried += u["prompt_tokens"]
        before, after = after, m.families()
        f.check(cached > 0, "the second long prompt reused cached KV (%d)" % cached)
        f.check(delta("tessera:prefix_cache_hits_total", group="g0") == cached and
                delta("tessera:prefix_cache_queries_total", group="g0") == queried,
                "prefix cache hits %s (want %d), queries %s (want %d)"
                % (delta("tessera:prefix_cache_hits_total"), cached,
                   delta("tessera:prefix_cache_queries_total"), queried))
        print("ok   4. prefix-cache hits and queries as the responses report")

        # n=4 on a new long prompt: the siblings start once the first choice has prefilled, and
        # take every full block of the prompt from the cache
        long_prompt = " ".join(["The dog ran to the park and played with a red ball."] * 4)
        status, data = post(port, "/v1/completions", {"prompt": long_prompt, "max_tokens": 2,
                                                      "temperature": 0.8, "seed": 3, "n": 4})
        doc = json.loads(data)
        before, after = after, m.families()
        length = doc["usage"]["prompt_tokens"]
        f.check(status == 200 and [ch["index"] for ch in doc["choices"]] == [0, 1, 2, 3] and
                doc["usage"]["completion_tokens"] == 8, "n=4: %s %s" % (status, doc))
        hits = delta("tessera:prefix_cache_hits_total", group="g0")
        f.check(length > 32 and delta("tessera:prefix_cache_queries_total", group="g0") ==
                4 * length and hits >= 3 * (length - 16),
                "n=4 siblings share the prompt's KV: %s hits for 3 × %d prompt tokens" %
                (hits, length))
        print("ok   4b. the choices of n=4 share their prompt's cached KV")

        results = []
        seen = threading.Event()

        # Again until the gauge was seen above 0 and the node preempted (30 s at most): on a
        # loaded machine one round's three requests may not overlap enough to overflow the cache.
        def long_requests(i):
            end = time.time() + 30
            while True:
                try:
                    _, ids, _ = c.generate(timeout=120, prompt="Once upon a time %d" % i,
                                           max_tokens=110, ignore_eos=True)
                    results.append(len(ids))
                except c.grpc.RpcError as e:
                    results.append("%s %s" % (e.code(), e.details()))
                if seen.is_set() or time.time() > end:
                    return

        threads = [threading.Thread(target=long_requests, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        usage_seen = 0.0
        gauge = re.compile(r'^tessera:kv_cache_usage_perc\{model="llama",group="g0"\} (\S+)$', re.M)
        preempt = re.compile(r'^tessera:num_preemptions_total\{[^}]*group="g0"[^}]*\} (\S+)$', re.M)
        preempted_before = value(after, "tessera:num_preemptions_total", group="g0")
        while any(t.is_alive() for t in threads):
            text = m.text()  # raw: the parser's process is too slow for this loop
            got = gauge.search(text)
            usage_seen = max(usage_seen, float(got.group(1)) if got else 0.0)
            got = preempt.search(text)
            if usage_seen > 0 and got and float(got.group(1)) > preempted_before:
                seen.set()
            time.sleep(0.02)
        for t in threads:
            t.join()
        f.check(results and results == [110] * len(results), "the long requests finish: %s" % results)
        f.check(usage_seen > 0, "kv_cache_usage_perc above 0 while they ran (%s)" % usage_seen)
        f.check(harness.wait_for(lambda: value(m.families(), "tessera:kv_cache_usage_perc",
                                               group="g0") == 0, 10, 0.2),
                "kv_cache_usage_perc back to 0")
        after = m.families()
        f.check(harness.wait_for(lambda: value(m.families(), "tessera:num_preemptions_total",
                                               group="g0") > preempted_before, 10, 0.2),
                "num_preemptions_total{group=g0} moved (%s)" % after["tessera:num_preemptions"])
        print("ok   5. KV usage while running, back to 0, preemptions counted")
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    if sys.argv[1:] == ["--parse"]:
        sys.exit(parse())
    sys.exit(main())
