#!/usr/bin/env python3
"""A client pointed at a port where nothing listens fails at once with a clear error.

Usage: test_server_unreachable.py TESSERA

`tessera generate --server` (text and --json) and `tessera bench --server` against a loopback
port that was just bound and closed: one line "tessera CMD: UNAVAILABLE: ...", exit 1, within
a few seconds (no hang, no retry loop). A malformed --server is a usage error (exit 2).
"""
import argparse
import time

import harness


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    args = ap.parse_args()
    f = harness.Failures()
    target = "127.0.0.1:%d" % harness.free_port()
    for name, cmd in (
            ("generate", [args.tessera, "generate", "--server", target, "-p", "Once"]),
            ("generate", [args.tessera, "generate", "--server", target, "-p", "Once", "--json"]),
            ("bench", [args.tessera, "bench", "--server", target, "--concurrency", "4"])):
        t0 = time.time()
        p = harness.run(cmd, check=False, timeout=60)
        took = time.time() - t0
        what = " ".join(cmd[1:])
        f.check(p.returncode == 1, "%s: exit 1 (got %d)" % (what, p.returncode))
        lines = p.stderr.strip().splitlines()
        f.check(len(lines) == 1 and lines[0].startswith("tessera %s: UNAVAILABLE: " % name),
                "%s: one line 'tessera %s: UNAVAILABLE: ...' (got %r)" % (what, name, p.stderr))
        f.check(p.stdout == "", "%s: nothing on stdout (got %r)" % (what, p.stdout))
        f.check(took < 20, "%s: fails fast (%.1f s)" % (what, took))
    p = harness.run([args.tessera, "generate", "--server", "no-port", "-p", "x"], check=False)
    f.check(p.returncode == 2 and "HOST:PORT" in p.stderr,
            "malformed --server: exit 2 naming HOST:PORT (got %d %r)" % (p.returncode, p.stderr))
    f.finish()


if __name__ == "__main__":
    main()
