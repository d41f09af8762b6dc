#!/usr/bin/python3
"""tessera batch (issue 16, CLI) against a real coordinator with --state-dir and one node:
  1. submit FILE --wait prints the batch id, plain progress lines (not a terminal) and exits 0
     once completed; list shows it; status is the batch object; results -o/-e write the output
     (one line per custom_id, the greedy texts of /v1/completions) and an empty error file.
  2. A file with a bad line: submit --wait exits 1 and prints the error with its line number.
  3. cancel of a completed batch, results of an unknown batch: exit 2 with the server's message;
     an unreachable server: exit 1 naming it; an unknown verb: exit 2.
  test_batch_cli.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import json
import os
import subprocess
import sys


def main():
    import harness
    import serving_cluster as sc
    from test_http_api import raw

    f = harness.Failures()
    c = sc.from_args()
    try:
        port = harness.free_port()
        c.start_coordinator("--http-listen", "127.0.0.1:%d" % port, "--state-dir",
                            os.path.join(c.tmp, "state"))
        c.start_node("g0")
        c.wait_groups(1)
        tessera = os.path.join(c.bin_dir, "tessera")
        server = ["--server", "http://127.0.0.1:%d/v1" % port]

        def batch(*args):
            return subprocess.run([tessera, "batch"] + list(args) + server, capture_output=True,
                                  text=True, timeout=120)

        prompts = ["Once upon a time", "The little dog", "Lily wanted"]
        path = os.path.join(c.tmp, "in.jsonl")
        with open(path, "w") as fh:
            for i, p in enumerate(prompts):
                fh.write(json.dumps({"custom_id": "q%d" % i, "method": "POST",
                                     "url": "/v1/completions",
                                     "body": {"prompt": p, "max_tokens": 10,
                                              "temperature": 0}}) + "\n")
        r = batch("submit", path, "--wait")
        bid = r.stdout.strip()
        f.check(r.returncode == 0 and bid.startswith("batch_") and "completed" in r.stderr and
                "3/3 done" in r.stderr, "submit --wait: %d %r %r" % (r.returncode, r.stdout,
                                                                  r.stderr))
        r = batch("list")
        f.check(r.returncode == 0 and bid in r.stdout and "completed" in r.stdout,
                "list: %r" % r.stdout)
        r = batch("status", bid)
        f.check(r.returncode == 0 and json.loads(r.stdout)["status"] == "completed",
                "status: %r" % r.stdout)
        out, err = os.path.join(c.tmp, "out.jsonl"), os.path.join(c.tmp, "err.jsonl")
        r = batch("results", bid, "-o", out, "-e", err)
        lines = [json.loads(l) for l in open(out)] if r.returncode == 0 else []
        f.check(sorted(o["custom_id"] for o in lines) == ["q0", "q1", "q2"] and
                os.path.getsize(err) == 0, "results: %s %r" % (r.returncode, r.stderr))
        for o in lines:
            p = prompts[int(o["custom_id"][1])]
            st, doc = raw(port, "POST", "/v1/completions",
                          json.dumps({"prompt": p, "max_tokens": 10, "temperature": 0}),
                          {"Content-Type": "application/json"})
            f.check(o["response"]["body"]["choices"][0]["text"] == doc["choices"][0]["text"],
                    "the text of %s equals /v1/completions'" % o["custom_id"])

        bad = os.path.join(c.tmp, "bad.jsonl")
        with open(bad, "w") as fh:
            fh.write(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions",
                                 "body": {"prompt": "x"}}) + "\n{not json\n")
        r = batch("submit", bad, "--wait")
        f.check(r.returncode == 1 and "failed" in r.stderr and "line 2" in r.stderr,
                "a bad line: exit 1 with its number (%d %r)" % (r.returncode, r.stderr))
        r = batch("cancel", bid)
        f.check(r.returncode == 2 and "Cannot cancel" in r.stderr,
                "cancel of a completed batch: %d %r" % (r.returncode, r.stderr))
        r = batch("results", "batch_nope", "-o", out)
        f.check(r.returncode == 2 and "No such batch" in r.stderr,
                "results of an unknown batch: %d %r" % (r.returncode, r.stderr))
        r = subprocess.run([tessera, "batch", "list", "--server",
                            "http://127.0.0.1:%d" % harness.free_port()],
                           capture_output=True, text=True, timeout=60)
        f.check(r.returncode == 1 and "cannot connect" in r.stderr,
                "an unreachable server: %d %r" % (r.returncode, r.stderr))
        r = batch("frobnicate", "x")
        f.check(r.returncode == 2 and "unknown batch command" in r.stderr,
                "an unknown verb: %d %r" % (r.returncode, r.stderr))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    sys.exit(main())
