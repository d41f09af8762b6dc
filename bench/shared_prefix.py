#!/usr/bin/python3
"""shared_prefix.py — shared system prompts on several groups: cache-aware routing against
round-robin (issue 17's routing benchmark).

  bench/shared_prefix.py [--build BUILD] [--model M.gguf] [--groups 2] [--prompts 4] ...

Every request is one of --prompts system prompts (--system-tokens token ids each, chosen at
random per request from --seed) followed by a question of its own (--question-tokens ids), and
streams --answer-tokens tokens (greedy, ignore_eos); --clients threads send --requests of them.
Each group's KV memory (--kv-memory) holds about two system prompts beside its running
requests, so the groups together hold them all only if each prompt stays on one group. The same
requests run on `tessera up --groups G --routing cache` and `--routing round-robin`; reported:
hit rate (cached prompt tokens / prompt tokens, from each request's usage), p50/p99 TTFT, wall
time. Goal (issue 17): cache-aware routing's hit rate >= 2x round-robin's at no worse p99 TTFT.
Exit 1 when a request failed or the answers differ between the two (routing must not change a
token).
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time

import cluster
from cluster import log, pct

FIRST_ID, LAST_ID = 3, 500


def run(args, grpc, pb, ep, requests):
    channel, generate = cluster.generate_stub(grpc, pb, ep)
    results, errors, lock = [None] * len(requests), [], threading.Lock()
    next_idx = [0]

    def client():
        while True:
            with lock:
                i = next_idx[0]
                next_idx[0] += 1
            if i >= len(requests):
                return
            try:
                ttft, ids, usage = cluster.stream(generate, pb, requests[i], args.answer_tokens)
            except grpc.RpcError as e:
                with lock:
                    errors.append("request %d: %s %s" % (i, e.code(), e.details()))
                continue
            results[i] = {"ttft": ttft, "ids": ids, "prompt": len(requests[i]),
                          "cached": usage.cached_prompt_tokens if usage else 0}

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    channel.close()
    return results, errors, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", help="GGUF, or 'bundled' (default: the 110M synthetic shape)")
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--system-tokens", type=int, default=256)
    ap.add_argument("--question-tokens", type=int, default=32)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--kv-memory", default="32M", help="per group")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.build, "rpc", "ts_proto", "python"))
    import grpc
    from tessera.v1 import inference_pb2 as pb

    args.model = cluster.model_path(args.build, args.model)
    rng = random.Random(args.seed)
    systems = [[rng.randrange(FIRST_ID, LAST_ID) for _ in range(args.system_tokens)]
               for _ in range(args.prompts)]
    requests = [systems[rng.randrange(args.prompts)] +
                [rng.randrange(FIRST_ID, LAST_ID) for _ in range(args.question_tokens)]
                for _ in range(args.requests)]
    rows, answers, ok = {}, None, True
    for routing in ("cache", "round-robin"):
        d = tempfile.mkdtemp(prefix="tessera-shared-prefix-")
        flags = ["--groups", str(args.groups), "--threads", "1", "--kv-memory", args.kv_memory,
                 "--routing", routing]
        p, ep, _ = cluster.start(args.build, args.model, d, flags)
        try:
            results, errors, wall = run(args, grpc, pb, ep, requests)
        finally:
            cluster.stop(p)
            shutil.rmtree(d, ignore_errors=True)
        if errors:
            log("(%s) %d requests failed, the first: %s" % (routing, len(errors), errors[0]))
            ok = False
        got = [r["ids"] if r else None for r in results]
        if answers is None:
            answers = got
        elif got != answers:
            log("(%s) %d answers differ" % (routing, sum(a != b for a, b in zip(got, answers))))
            ok = False
        done = [r for r in results if r]
        rows[routing] = {
            "hit": sum(r["cached"] for r in done) / max(1, sum(r["prompt"] for r in done)),
            "ttft": [r["ttft"] for r in done if r["ttft"] is not None], "wall": wall}
        log("(%s) done in %.1f s" % (routing, wall))
    print("%d groups, %d system prompts of %d tokens, %d requests (+%d-token questions), %d "
          "clients, --kv-memory %s per group" % (args.groups, args.prompts, args.system_tokens,
                                                  args.requests, args.question_tokens,
                                                  args.clients, args.kv_memory))
    print()
    print("| routing | hit rate | TTFT p50 / p99 ms | wall s |")
    print("| --- | --- | --- | --- |")
    for k, r in rows.items():
        print("| %s | %.3f | %.1f / %.1f | %.1f |" % (k, r["hit"], 1000 * pct(r["ttft"], 0.5),
                                                     1000 * pct(r["ttft"], 0.99), r["wall"]))
    c, rr = rows["cache"], rows["round-robin"]
    print()
    print("cache-aware ÷ round-robin: hit rate %.2fx (goal >= 2x), p99 TTFT %.2fx (goal <= 1x)" %
          (c["hit"] / rr["hit"] if rr["hit"] else float("inf"),
           pct(c["ttft"], 0.99) / pct(rr["ttft"], 0.99) if rr["ttft"] else 0.0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
