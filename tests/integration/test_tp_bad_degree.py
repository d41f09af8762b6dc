#!/usr/bin/env python3
"""A tensor-parallel degree that does not divide the query heads is refused with a clear message.

Usage: test_tp_bad_degree.py TESSERA
The bundled model has 8 query heads and 4 KV heads: 3 ranks must be refused, naming the valid
degrees, and the job must end with a non-zero exit code (no rank left hanging).
"""
import sys

import harness


def main():
    tessera = sys.argv[1]
    f = harness.Failures()
    p = harness.run(harness.mpirun_prefix(3) + [tessera, "generate", "-m", harness.MODEL_F32,
                                                "-p", "Hello", "-n", "4", "--threads", "1"],
                    env=harness.mpi_env(), check=False, timeout=60)
    f.check(p.returncode != 0, "3 ranks: non-zero exit")
    f.check("does not divide the model's 8 query heads: use one of 1, 2, 4, 8" in p.stderr,
            "3 ranks: message names the valid degrees\n" + p.stderr[-1500:])
    # --tp without an MPI launch is a usage error
    p = harness.run([tessera, "generate", "-m", harness.MODEL_F32, "-p", "Hello", "--tp", "2"],
                    check=False)
    f.check(p.returncode == 2, "--tp 2 without mpirun: exit code 2")
    f.check("needs a launch under mpirun or srun" in p.stderr, "--tp without mpirun: message")
    f.finish()


if __name__ == "__main__":
    main()
