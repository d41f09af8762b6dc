#!/usr/bin/env python3
"""64 concurrent streams each get exactly the tokens they get alone (batching changes nothing).

Usage: test_server_concurrent.py TESSERA

Starts a real cluster and runs `tessera bench --verify`: 64 synthetic prompts (lengths 12..24
tokens, so prefills of different lengths share steps with decodes) are first generated one at a
time, then all 64 at once over one channel; the token ids must be equal request by request, and
every request must stream exactly --max-tokens tokens (ignore_eos). The node runs with
--no-prefix-cache so that the concurrent pass recomputes every prompt in batches instead of
reusing the lone pass's KV blocks (the cached path is covered by test_server_python).
"""
import argparse
import json
import sys

import cluster
import harness

STREAMS = 64
MAX_TOKENS = 48


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    args = ap.parse_args()
    f = harness.Failures()
    with cluster.Cluster(args.tessera, node_flags=["--no-prefix-cache"]) as c:
        p = harness.run([args.tessera, "bench", "--server", c.target, "--verify", "--json",
                         "--concurrency", str(STREAMS), "--requests", str(STREAMS),
                         "--prompt-tokens", "24", "--max-tokens", str(MAX_TOKENS)],
                        check=False, timeout=600)
        if p.stderr:
            print(p.stderr[-4000:], file=sys.stderr)
        f.check(p.returncode == 0, "tessera bench --verify exit 0 (got %d)" % p.returncode)
        out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
        f.check(out.get("ok") == STREAMS and out.get("failed") == 0,
                "all %d requests succeeded: %r" % (STREAMS, out.get("errors")))
        f.check(out.get("verify_mismatches") == 0, "every stream equals its lone run")
        f.check(out.get("tokens") == STREAMS * MAX_TOKENS,
                "%d tokens streamed (got %r)" % (STREAMS * MAX_TOKENS, out.get("tokens")))
        # Failed requests are counted by status: a 1 ms deadline cannot fit 100 tokens.
        p = harness.run([args.tessera, "bench", "--server", c.target, "--concurrency", "8",
                         "--requests", "16", "--prompt-tokens", "8", "--max-tokens", "100",
                         "--timeout-ms", "1", "--json"], check=False, timeout=120)
        out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
        f.check(p.returncode == 1 and out.get("failed") == 16 and
                out.get("errors") == {"DEADLINE_EXCEEDED": 16},
                "bench: 16 requests past their deadline counted as DEADLINE_EXCEEDED, exit 1 "
                "(%d %r)" % (p.returncode, out.get("errors")))
        # Requests that cannot fit are refused before the run, with the reason.
        p = harness.run([args.tessera, "bench", "--server", c.target, "--prompt-tokens", "100",
                         "--max-tokens", "100"], check=False, timeout=60)
        f.check(p.returncode == 2 and "context" in p.stderr,
                "bench: prompt + max tokens beyond the context: exit 2 naming the context (%d %r)"
                % (p.returncode, p.stderr))
        p = harness.run([args.tessera, "bench", "--server", c.target, "--model-name", "nosuch"],
                        check=False, timeout=60)
        f.check(p.returncode == 1 and "nosuch" in p.stderr,
                "bench: unknown model: exit 1 naming it (%d %r)" % (p.returncode, p.stderr))
        f.check(c.alive(), "the cluster is still up")
    f.finish()


if __name__ == "__main__":
    main()
