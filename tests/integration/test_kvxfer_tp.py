#!/usr/bin/env python3
"""KV transfer between tensor-parallel groups of different degrees gives the reference text.

Usage: test_kvxfer_tp.py KVXFER_TP [LAYOUT ...]   (LAYOUT = A:B; default 1:1 2:1 1:2 4:2)
Each layout runs `mpirun -np A+B kvxfer_tp A B`: a prefill group of TP A ships every reference
prompt's KV cache over TCP to a decode group of TP B, which decodes it (see tests/unit/kvxfer_tp.c).
"""
import sys

import harness


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    program = sys.argv[1]
    layouts = sys.argv[2:] or ["1:1", "2:1", "1:2", "4:2"]
    f = harness.Failures()
    for layout in layouts:
        a, b = (int(x) for x in layout.split(":"))
        cmd = harness.mpirun_prefix(a + b) + [program, str(a), str(b)]
        p = harness.run(cmd, timeout=240, env=harness.mpi_env(), check=False)
        ok = p.returncode == 0 and ("ok: layout %d -> %d" % (a, b)) in p.stdout
        if not f.check(ok, "layout %d -> %d" % (a, b)):
            print("rc %d\nstdout: %s\nstderr: %s" % (p.returncode, p.stdout[-3000:],
                                                      p.stderr[-3000:]), file=sys.stderr)
        else:
            print("ok   layout %d -> %d (%d requests)" % (a, b, p.stdout.count("ok   request")))
    f.finish()


if __name__ == "__main__":
    main()
