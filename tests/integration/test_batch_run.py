#!/usr/bin/python3
"""tessera batch run (issue 16): a JSONL file through a local cluster of its own, resumable.
  1. run FILE -o OUT -e ERR --state-dir D: exit 0, the batch id on stdout, one output line per
     custom_id with the greedy texts, an empty error file; the cluster is gone afterwards.
  2. The same file again with the same state directory: the same batch id ("resuming"), no
     new run, the same output.
  3. kill -9 of `tessera batch run` in the middle of a larger file: its cluster dies with it;
     running it again resumes the same batch and the output has every custom_id exactly once,
     with the texts of a run that was never killed.
  4. Bad input: no -o and an unreadable file exit 2; a bad line exits 1 naming its line.
  test_batch_run.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import json
import os
import signal
import subprocess
import time
import urllib.request

import harness
import serving_cluster as sc


def write_jsonl(path, n, max_tokens):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": "q%d" % i, "method": "POST",
                                 "url": "/v1/completions",
                                 "body": {"prompt": "Once upon a time %d" % i,
                                          "max_tokens": max_tokens, "temperature": 0}}) + "\n")


def texts(path):
    """custom_id → the texts its output lines hold ({} when there is no output file)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as fh:
        for line in fh:
            o = json.loads(line)
            out.setdefault(o["custom_id"], []).append(
                o["response"]["body"]["choices"][0]["text"])
    return out


def progress(state):
    """The batch's completed count from the running cluster of a state directory, or None."""
    try:
        with open(os.path.join(state, "http.endpoint")) as fh:
            ep = fh.read().strip()
        with open(os.path.join(state, "api.key")) as fh:
            key = fh.read().strip()
        req = urllib.request.Request("http://%s/v1/batches" % ep,
                                     headers={"Authorization": "Bearer " + key})
        with urllib.request.urlopen(req, timeout=5) as r:
            data = json.loads(r.read())["data"]
        return data[0]["request_counts"]["completed"] if data else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def main():
    f = harness.Failures()
    c = sc.from_args()
    tessera = os.path.join(c.bin_dir, "tessera")
    env = dict(os.environ)
    env.pop("TESSERA_API_KEY", None)

    def run(*args, timeout=300):
        return subprocess.run([tessera, "batch", "run"] + list(args), capture_output=True,
                              text=True, timeout=timeout, env=env)

    procs = []
    try:
        # 1. a small file
        small = os.path.join(c.tmp, "small.jsonl")
        write_jsonl(small, 3, 10)
        state = os.path.join(c.tmp, "state-small")
        out, err = os.path.join(c.tmp, "out.jsonl"), os.path.join(c.tmp, "err.jsonl")
        r = run(small, "-o", out, "-e", err, "--state-dir", state)
        bid = r.stdout.strip()
        got = texts(out) if r.returncode == 0 else {}
        f.check(r.returncode == 0 and bid.startswith("batch_") and sorted(got) == ["q0", "q1", "q2"]
                and all(len(v) == 1 and v[0] for v in got.values()) and os.path.getsize(err) == 0,
                "batch run: exit 0, one line per custom_id (%d %r %r %s)"
                % (r.returncode, r.stdout, r.stderr[-2000:], got))
        f.check(progress(state) is None, "the cluster is stopped after the run")

        # 2. again: resumed, not run again
        out2 = os.path.join(c.tmp, "out2.jsonl")
        r = run(small, "-o", out2, "--state-dir", state)
        f.check(r.returncode == 0 and r.stdout.strip() == bid and "resuming batch " + bid in r.stderr
                and texts(out2) == got,
                "the same file again: the same batch, the same output (%d %r %r)"
                % (r.returncode, r.stdout, r.stderr[-2000:]))

        # 3. kill -9 in the middle, then resume
        big = os.path.join(c.tmp, "big.jsonl")
        write_jsonl(big, 400, 120)
        killed = os.path.join(c.tmp, "state-killed")
        p = subprocess.Popen([tessera, "batch", "run", big, "-o", os.path.join(c.tmp, "k.jsonl"),
                              "--state-dir", killed, "--groups", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        mid = harness.wait_for(lambda: (progress(killed) or 0) >= 20, 120, 0.05)
        done_at_kill = progress(killed)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        f.check(mid and done_at_kill is not None and done_at_kill < 400,
                "killed mid-run (%s of 400 done)" % done_at_kill)
        f.check(harness.wait_for(lambda: progress(killed) is None, 30, 0.2),
                "the cluster died with batch run")
        time.sleep(0.5)
        kout = os.path.join(c.tmp, "k.jsonl")
        r = run(big, "-o", kout, "--state-dir", killed, "--groups", "1")
        resumed = texts(kout) if r.returncode == 0 else {}
        f.check(r.returncode == 0 and "resuming batch" in r.stderr and len(resumed) == 400 and
                all(len(v) == 1 for v in resumed.values()),
                "resumed after kill -9: every custom_id once (%d %r, %d ids)"
                % (r.returncode, r.stderr[-2000:], len(resumed)))
        ref_out = os.path.join(c.tmp, "ref.jsonl")
        r = run(big, "-o", ref_out, "--state-dir", os.path.join(c.tmp, "state-ref"),
                "--groups", "1")
        ref = texts(ref_out) if r.returncode == 0 else {}
        f.check(ref and resumed == ref, "the resumed output equals a run never killed")

        # 4. bad input
        r = run(small, "--state-dir", state)
        f.check(r.returncode == 2 and "-o" in r.stderr, "no -o: exit 2 (%d %r)"
                % (r.returncode, r.stderr))
        r = run(os.path.join(c.tmp, "missing.jsonl"), "-o", out)
        f.check(r.returncode == 2 and "missing.jsonl" in r.stderr, "an unreadable file: exit 2 "
                "(%d %r)" % (r.returncode, r.stderr))
        bad = os.path.join(c.tmp, "bad.jsonl")
        with open(bad, "w") as fh:
            fh.write(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions",
                                 "body": {"prompt": "x"}}) + "\n{not json\n")
        r = run(bad, "-o", out, "--state-dir", os.path.join(c.tmp, "state-bad"))
        f.check(r.returncode == 1 and "line 2" in r.stderr,
                "a bad line: exit 1 naming it (%d %r)" % (r.returncode, r.stderr[-2000:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sc.finish(c, f)


if __name__ == "__main__":
    main()
