#!/usr/bin/env python3
"""The KV transfer's NCCL transport between two GPUs gives the reference text.

Usage: test_kvxfer_nccl.py KVXFER_NCCL
Runs `KVXFER_NCCL --probe` (exit 77, "SKIP: ...", without 2 CUDA devices), then
`mpirun -np 2 KVXFER_NCCL`: a prefill rank on cuda:0 sends every reference prompt's KV blocks
device to device over NCCL to a decode rank on cuda:1, which decodes them (tests/unit/kvxfer_nccl.c).
"""
import sys

import harness


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    program = sys.argv[1]
    p = harness.run([program, "--probe"], timeout=120, check=False)
    if p.returncode == 77:
        harness.skip(p.stdout.strip().split("SKIP: ", 1)[-1])
    f = harness.Failures()
    if f.check(p.returncode == 0, "probing the CUDA devices"):
        p = harness.run(harness.mpirun_prefix(2) + [program], timeout=480, env=harness.mpi_env(),
                        check=False)
        if not f.check(p.returncode == 0 and "ok: NCCL KV transfer" in p.stdout,
                       "NCCL KV transfer 1 -> 1"):
            print("rc %d\nstdout: %s\nstderr: %s" % (p.returncode, p.stdout[-3000:],
                                                      p.stderr[-3000:]), file=sys.stderr)
        else:
            print("ok   %d requests" % p.stdout.count("ok   request"))
    else:
        print(p.stdout + p.stderr, file=sys.stderr)
    f.finish()


if __name__ == "__main__":
    main()
