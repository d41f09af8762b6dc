#!/usr/bin/python3
"""Prefill/decode disaggregation (issue 5) gives exactly the output of a mixed group.

  1. A mixed cluster (`tessera up --groups 1`) runs the workload of part 3 and two seeded
     sampled requests: the expected outputs (greedy ones are also checked against
     tests/data/greedy_stories260K_f32.jsonl).
  2. `tessera up --prefill-groups 1 --decode-groups 1 --prefill-tp A --decode-tp B`: every greedy
     reference case equals the reference text, for layouts 1->1 (pinned with --cpus-per-group 1),
     2->1, 1->2 and 4->2 (mpirun, oversubscribed; the whole file takes seconds on the bundled
     model). Each request's KV went through the decode group (its "KV claimed" log lines), and
     Health shows every block free afterwards.
  3. Layout 1->1: 32 concurrent greedy streams while 8 long prompts arrive, and the two seeded
     sampled requests: every output equals the mixed cluster's. Then `tessera bench
     --long-prompt-every` (the benchmark's workload, scaled down) completes every request.

  test_disagg_parity.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python [LAYOUT ...]
"""
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import harness
import serving_cluster as sc

CTX = "512"
SAMPLED = [dict(prompt="The little dog", max_tokens=48, ignore_eos=True,
                sampling=dict(temperature=0.8, top_k=40, seed=42)),
           dict(prompt="Mom said", max_tokens=48, ignore_eos=True,
                sampling=dict(temperature=1.0, top_p=0.9, seed=7))]


def start_up(c, *flags):
    ep = os.path.join(c.tmp, "endpoint")
    if os.path.exists(ep):
        os.remove(ep)
    log = open(os.path.join(c.tmp, "up-%d.log" % len(c.procs)), "w")
    p = subprocess.Popen([os.path.join(c.bin_dir, "tessera"), "up", "-m", harness.MODEL_F32,
                          "--port", "0", "--endpoint-file", ep, "--threads", "1", "--ctx", CTX,
                          "--log-level", "debug"] + list(flags),
                         stdout=log, stderr=subprocess.STDOUT, env=harness.mpi_env(),
                         start_new_session=True)
    p.log_path = log.name
    c.procs.append(p)
    ok = harness.wait_for(lambda: "tessera up: serving" in c.log(p) or p.poll() is not None, 150)
    if not ok or p.poll() is not None:
        raise AssertionError("tessera up %s did not start:\n%s" % (" ".join(flags), c.log(p)))
    with open(ep) as f:
        c.endpoint = f.read().strip()
    c.channel = c.grpc.insecure_channel(c.endpoint)
    return p


def stop_up(c, p):
    c.channel.close()
    c.channel = None
    sc.signal_proc(p, sc.SIGINT)
    return sc.wait_exit(p, 60)


def full_log(p):
    with open(p.log_path) as f:
        return f.read()


def workload(cases):
    """32 greedy streams (the reference cases in turn) and 8 long prompts (a reference case's
    whole greedy text) arriving among them."""
    reqs = []
    for i in range(32):
        case = cases[i % len(cases)]
        reqs.append(dict(prompt_ids=case["prompt_ids"], max_tokens=case["n_predict"]))
        if i % 4 == 3:
            long_text = harness.reference_text(cases[(i // 4) % len(cases)])
            reqs.append(dict(prompt=long_text, max_tokens=24, ignore_eos=True))
    return reqs


def run_all(c, reqs):
    """Runs the requests concurrently; returns their token id lists (or the error)."""
    def one(fields):
        try:
            return c.generate(timeout=240, **fields)[1]
        except c.grpc.RpcError as e:
            return "error %s %s" % (e.code(), e.details())

    with ThreadPoolExecutor(max_workers=len(reqs)) as ex:
        return list(ex.map(one, reqs))


def check_greedy(c, f, cases, what):
    for i, case in enumerate(cases):
        text, _, _ = c.generate(timeout=120, prompt_ids=case["prompt_ids"],
                                max_tokens=case["n_predict"])
        want = harness.reference_completion(case)
        f.check(text == want, "%s: case %d equals the reference (got %r)" % (what, i, text[:80]))


def main():
    layouts = [a for a in sys.argv[1:] if ":" in a]
    sys.argv = [a for a in sys.argv if ":" not in a]
    layouts = layouts or ["1:1", "2:1", "1:2", "4:2"]
    f = harness.Failures()
    c = sc.from_args()
    cases = harness.greedy_cases()
    try:
        # 1. the mixed cluster's outputs
        up = start_up(c, "--groups", "1")
        check_greedy(c, f, cases, "mixed")
        reqs = workload(cases)
        expected = run_all(c, reqs)
        expected_sampled = [c.generate(timeout=60, **r)[1] for r in SAMPLED]
        f.check(all(isinstance(x, list) and x for x in expected), "mixed: the workload completes")
        f.check(stop_up(c, up) == 0, "mixed cluster stopped")

        for layout in layouts:
            a, b = (int(x) for x in layout.split(":"))
            flags = ["--prefill-groups", "1", "--decode-groups", "1", "--prefill-tp", str(a),
                     "--decode-tp", str(b)]
            if a == 1 and b == 1:
                flags += ["--cpus-per-group", "1"]
            up = start_up(c, *flags)
            h = c.health()
            f.check(sorted((g.role, g.tp) for g in h.groups) == [("decode", b), ("prefill", a)],
                    "%s: Health shows a prefill group of TP %d and a decode group of TP %d (%s)"
                    % (layout, a, b, h))
            subset = cases
            check_greedy(c, f, subset, "disaggregated %s" % layout)
            if layout == "1:1":
                got = run_all(c, reqs)
                for i, (g, e) in enumerate(zip(got, expected)):
                    f.check(g == e, "1:1 concurrent request %d (%s) equals the mixed output"
                            % (i, "long prompt" if "prompt" in reqs[i] else "stream"))
                for i, r in enumerate(SAMPLED):
                    got_s = c.generate(timeout=60, **r)[1]
                    f.check(got_s == expected_sampled[i],
                            "1:1 seeded sampled request %d equals the mixed output" % i)
            f.check(c.wait_kv_idle(30), "%s: every KV block free afterwards (%s)"
                    % (layout, c.health()))
            n_claimed = full_log(up).count("KV claimed")
            n_want = len(subset) + (len(reqs) + len(SAMPLED) if layout == "1:1" else 0)
            f.check(n_claimed == n_want, "%s: %d requests decoded from transferred KV (want %d)"
                    % (layout, n_claimed, n_want))
            if layout == "1:1":
                # tessera bench's mixed workload (the benchmark's, scaled to the bundled model)
                p = harness.run([os.path.join(c.bin_dir, "tessera"), "bench", "--server",
                                 c.endpoint, "--concurrency", "4", "--requests", "16",
                                 "--prompt-tokens", "8", "--max-tokens", "24",
                                 "--long-prompt-every", "4", "--long-prompt-tokens", "300",
                                 "--long-max-tokens", "4", "--json"], timeout=120, check=False)
                try:
                    rep = json.loads(p.stdout)
                except ValueError:
                    rep = {}
                f.check(p.returncode == 0 and rep.get("ok") == 16 and "long_ttft_ms" in rep and
                        rep.get("tokens") == 12 * 24 + 4 * 4,
                        "1:1 tessera bench --long-prompt-every: every request streamed its tokens "
                        "(rc %d, %s %s)" % (p.returncode, p.stdout[-400:], p.stderr[-400:]))
                f.check(c.wait_kv_idle(30), "1:1 after the bench: every KV block free")
            f.check(stop_up(c, up) == 0, "%s: tessera up stopped with exit 0" % layout)
            print("ok   layout %s (%d requests decoded from transferred KV)" % (layout, n_claimed))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
