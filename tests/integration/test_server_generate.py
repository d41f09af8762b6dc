#!/usr/bin/env python3
"""`tessera generate --server` prints exactly what local `tessera generate` prints.

Usage: test_server_generate.py TESSERA [--groups G] [--tp N] [--launcher direct|up]

Starts a real cluster (G groups of N ranks on loopback; with --launcher up through `tessera up`)
and, for every case of
greedy_stories260K_f32.jsonl, compares `tessera generate --server HOST:PORT --json` with the local
`tessera generate --json`: prompt_ids, completion_ids, completion text, finish_reason and the
token counts of usage must be equal, and the text must be the reference text. The plain text
output (prompt, then the streamed completion) must equal the local one too. A request the
server refuses (unknown model) ends with one line "tessera generate: INVALID_ARGUMENT: ..." and
exit 2. With several groups the cases run in parallel so that every group serves some.
"""
import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import cluster
import harness


def generate(tessera, case, server=None, json_out=True):
    cmd = [tessera, "generate", "-p", case["prompt"], "-n", str(case["n_predict"])]
    if server:
        cmd += ["--server", server]
    else:
        cmd += ["-m", harness.MODEL_F32, "--threads", "1"]
    if json_out:
        cmd.append("--json")
    p = harness.run(cmd, timeout=120)
    return json.loads(p.stdout.strip().splitlines()[-1]) if json_out else p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--launcher", choices=("direct", "up"), default="direct")
    args = ap.parse_args()
    f = harness.Failures()
    cases = harness.greedy_cases()
    local = [generate(args.tessera, c) for c in cases]
    with cluster.Cluster(args.tessera, groups=args.groups, tp=args.tp,
                         launcher=args.launcher) as c:
        with ThreadPoolExecutor(max_workers=2 * args.groups) as pool:
            remote = list(pool.map(lambda case: generate(args.tessera, case, c.target), cases))
        for case, lo, re in zip(cases, local, remote):
            name = "%r" % case["prompt"]
            for key in ("prompt_ids", "completion_ids", "completion", "finish_reason"):
                if not f.check(lo[key] == re[key], "%s: %s equal to local" % (name, key)):
                    print("  local:  %r\n  server: %r" % (lo[key], re[key]), file=sys.stderr)
            for key in ("prompt_tokens", "completion_tokens"):
                f.check(lo["usage"][key] == re["usage"][key], "%s: usage.%s" % (name, key))
            f.check(set(lo) == set(re) and set(lo["timings"]) == set(re["timings"]),
                    "%s: the same JSON fields" % name)
            f.check(re["prompt_ids"] == case["prompt_ids"], name + ": reference prompt ids")
            expected = harness.reference_text(case)
            f.check(case["prompt"] + re["completion"] == expected, name + ": reference text")

        # Plain text mode: the prompt, then the streamed completion, as locally.
        case = cases[0]
        f.check(generate(args.tessera, case, c.target, json_out=False)
                == generate(args.tessera, case, json_out=False), "text output equal to local")

        # A request the server refuses: one line, exit 2.
        p = harness.run([args.tessera, "generate", "--server", c.target, "-p", "Once",
                         "--model-name", "no-such-model"], check=False, timeout=60)
        f.check(p.returncode == 2, "unknown model: exit 2 (got %d)" % p.returncode)
        err = p.stderr.strip().splitlines()
        f.check(len(err) == 1 and err[0].startswith("tessera generate: INVALID_ARGUMENT: "),
                "unknown model: one line 'tessera generate: INVALID_ARGUMENT: ...' (got %r)"
                % p.stderr)
        f.check(c.alive(), "the cluster is still up")
        code = c.stop()
        f.check(code == 0, "SIGTERM stops the cluster cleanly (%s exit %r)"
                % ("tessera up" if args.launcher == "up" else "tessera-coordinator", code))
    f.finish()


if __name__ == "__main__":
    main()
