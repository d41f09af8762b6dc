#!/usr/bin/python3
"""multiturn.py — a multi-turn conversation workload against the KV cache's tiers (issue 17's
benchmark), in the manner of vLLM's benchmarks/multi_turn and SGLang's bench_multiturn.

  bench/multiturn.py [--build BUILD] [--model M.gguf] [--users 8] [--turns 6] [--clients 2]

U users hold T-turn conversations. A turn sends the whole history so far (every earlier question
and answer, as token ids) plus a new question of --question-tokens ids, and streams
--answer-tokens tokens back (greedy, ignore_eos); the answer joins the history. C client threads
each serve U/C users in turn (user 1's turn 1, user 2's turn 1, ..., then everyone's turn 2), so a
history comes back after the other users' turns have pushed it out of a small device pool. The
same workload (the same ids) runs against a fresh `tessera up` per configuration:

  (a) no prefix cache        --no-prefix-cache
  (b) device pool only       --kv-memory DEVICE
  (c) + host tier            --kv-memory DEVICE --kv-host-memory HOST
  (d) + disk tier            --kv-memory DEVICE --kv-host-memory HOST --kv-disk DIR --kv-disk-size DISK
  (u) unbounded              --kv-memory UNBOUNDED: every history fits; the hit rate a cache of
                             unlimited size reaches, the bound for the others

DEVICE (--device-memory, default 64M) holds a fraction of all histories (the script prints how
many tokens they need against what each tier holds) and HOST is a quarter of what they need, so
(c) keeps only some of the evicted blocks and (d) catches the rest. Reported per configuration:
p50/p99 TTFT, the run's wall time, generated and prompt tokens/s, the hit rate (cached prompt
tokens / prompt tokens, from each request's usage) and its share of (u)'s, and the hit tokens by
tier from /metrics (tessera:kv_tier_hits_total). Goals (issue 17): (d) p50 TTFT <= 0.3x (a), and
(d)'s hit rate >= 90 % of (u)'s. Exit 1 when a request failed or an answer differed between
configurations (the tiers must not change a token).
"""
import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

import cluster
from cluster import log, pct

FIRST_ID, LAST_ID = 3, 500  # ordinary token ids every vocabulary has


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMG]?)", text)
    if not m:
        raise SystemExit("bad size %r (e.g. 64M)" % text)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def tier_hits(base):
    with urllib.request.urlopen(base + "/metrics", timeout=60) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^tessera:kv_tier_hits_total\{[^}]*tier="(\w+)"[^}]*\} (\S+)$', text,
                         re.M):
        out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
    return out


def run_workload(args, grpc, pb, ep, questions):
    """Runs every turn; returns (per-request results, answers by (user, turn), wall seconds)."""
    channel, generate = cluster.generate_stub(grpc, pb, ep)
    results, answers, errors = [], {}, []
    lock = threading.Lock()

    def client(users):
        history = {u: [] for u in users}
        for turn in range(args.turns):
            for u in users:
                prompt = history[u] + questions[u][turn]
                try:
                    ttft, ids, usage = cluster.stream(generate, pb, prompt, args.answer_tokens)
                except grpc.RpcError as e:
                    with lock:
                        errors.append("user %d turn %d: %s %s" % (u, turn, e.code(), e.details()))
                    return
                history[u] = prompt + ids
                with lock:
                    answers[(u, turn)] = ids
                    results.append({"ttft": ttft, "prompt": len(prompt), "generated": len(ids),
                                    "cached": usage.cached_prompt_tokens if usage else 0})

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(list(range(c, args.users, args.clients)),))
               for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    channel.close()
    return results, answers, wall, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", help="GGUF, or 'bundled' (default: the 110M synthetic shape, "
                    "f16, made once under ~/.cache/tessera/bench)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--question-tokens", type=int, default=64)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--device-memory", default="64M", help="--kv-memory of (b) to (d)")
    ap.add_argument("--kv-bytes-per-token", type=int, default=36864,
                    help="the model's KV bytes per token, to size the tiers (110M f16: 36864)")
    ap.add_argument("--configs", default="a,b,c,d,u")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.build, "rpc", "ts_proto", "python"))
    import grpc
    from tessera.v1 import inference_pb2 as pb

    args.model = cluster.model_path(args.build, args.model)
    rng = random.Random(args.seed)
    questions = [[[rng.randrange(FIRST_ID, LAST_ID) for _ in range(args.question_tokens)]
                  for _ in range(args.turns)] for _ in range(args.users)]
    history_tokens = args.turns * (args.question_tokens + args.answer_tokens)
    need = args.users * history_tokens * args.kv_bytes_per_token
    device = parse_size(args.device_memory)
    host = need // 4
    disk = need * 2
    print("%d users x %d turns, %d clients; each history ends at %d tokens; all of them need "
          "%.0f MiB of KV; device pool %.0f MiB, host tier %.0f MiB, disk tier %.0f MiB" %
          (args.users, args.turns, args.clients, history_tokens, need / 2**20, device / 2**20,
           host / 2**20, disk / 2**20))
    configs = {
        "a": ("no prefix cache", ["--no-prefix-cache", "--kv-memory", str(device)]),
        "b": ("device pool only", ["--kv-memory", str(device)]),
        "c": ("+ host tier", ["--kv-memory", str(device), "--kv-host-memory", str(host)]),
        "d": ("+ disk tier", ["--kv-memory", str(device), "--kv-host-memory", str(host),
                              "--kv-disk", None, "--kv-disk-size", str(disk)]),
        "u": ("unbounded", ["--kv-memory", str(max(device, need * 2))]),
    }
    rows, ref_answers, ok = {}, None, True
    for key in args.configs.split(","):
        name, flags = configs[key]
        d = tempfile.mkdtemp(prefix="tessera-multiturn-")
        flags = [os.path.join(d, "kv-disk") if f is None else f for f in flags]
        threads = ["--threads", str(args.threads)] if args.threads else []
        p, ep, base = cluster.start(args.build, args.model, d, threads + flags)
        try:
            results, answers, wall, errors = run_workload(args, grpc, pb, ep, questions)
            time.sleep(1.5)  # a heartbeat or two: the tier counters reach the coordinator
            tiers = tier_hits(base)
        finally:
            cluster.stop(p)
            shutil.rmtree(d, ignore_errors=True)
        if errors:
            log("(%s) %d requests failed, the first: %s" % (key, len(errors), errors[0]))
            ok = False
        if ref_answers is None:
            ref_answers = answers
        elif answers != ref_answers:
            diff = [k for k in ref_answers if answers.get(k) != ref_answers[k]]
            log("(%s) %d answers differ from the first configuration's, e.g. %s" %
                (key, len(diff), diff[:3]))
            ok = False
        prompt = sum(r["prompt"] for r in results)
        rows[key] = {
            "name": name, "ttft": [r["ttft"] for r in results if r["ttft"] is not None],
            "wall": wall, "prompt": prompt, "cached": sum(r["cached"] for r in results),
            "generated": sum(r["generated"] for r in results), "tiers": tiers}
        log("(%s) done in %.1f s" % (key, wall))

    def hit_rate(r):
        return r["cached"] / r["prompt"] if r["prompt"] else 0.0
    print()
    print("| config | TTFT p50 / p99 ms | wall s | generated tokens/s | prompt tokens/s | "
          "hit rate | ÷ unbounded's | hits device / host / disk (tokens) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, r in rows.items():
        u = rows.get("u")
        share = "%.2f" % (hit_rate(r) / hit_rate(u)) if u and hit_rate(u) > 0 else "—"
        t = r["tiers"]
        hits = ("%d / %d / %d" % (t.get("device", 0), t.get("host", 0), t.get("disk", 0))
                if t else "%d / — / —" % r["cached"])
        print("| (%s) %s | %.1f / %.1f | %.1f | %.1f | %.1f | %.3f | %s | %s |" % (
            key, r["name"], 1000 * pct(r["ttft"], 0.5), 1000 * pct(r["ttft"], 0.99), r["wall"],
            r["generated"] / r["wall"], r["prompt"] / r["wall"], hit_rate(r), share, hits))
    if "a" in rows and "d" in rows:
        print()
        print("(d) p50 TTFT / (a)'s: %.2fx (goal <= 0.3x)" %
              (pct(rows["d"]["ttft"], 0.5) / pct(rows["a"]["ttft"], 0.5)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
