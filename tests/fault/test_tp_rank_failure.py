#!/usr/bin/env python3
"""A tensor-parallel group whose rank dies or hangs mid-generation ends with an error, fast.

Usage: test_tp_rank_failure.py TESSERA

1. killed: rank 1 of `mpirun -np 2 tessera generate` is SIGKILLed while the group generates;
   the whole job must exit non-zero within seconds (no rank left waiting in a collective).
2. hung: rank 1 is SIGSTOPped; rank 0's collective deadline (--comm-timeout-ms 2000) must fire,
   rank 0 must print an error naming the group, and the job must exit non-zero within seconds.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import harness  # noqa: E402


def start_group(tessera, pid_dir):
    # Each rank writes its pid (mpirun's children are ranks; the shell execs tessera in place).
    script = 'echo $$ > %s/rank$OMPI_COMM_WORLD_RANK.pid; exec "$@"' % pid_dir
    cmd = harness.mpirun_prefix(2) + [
        "sh", "-c", script, "rank",
        tessera, "generate", "-m", harness.MODEL_F32, "-p", "Once upon a time",
        "-n", "200000", "--ignore-eos", "--ctx", "200100", "--kv-memory", "256M",
        "--comm-timeout-ms", "2000", "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=harness.mpi_env(), start_new_session=True)


def rank_pid(pid_dir, rank):
    path = os.path.join(pid_dir, "rank%d.pid" % rank)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    return int(text) if text else None


def scenario(f, tessera, sig, name):
    with tempfile.TemporaryDirectory() as pid_dir:
        proc = start_group(tessera, pid_dir)
        try:
            ok = harness.wait_for(lambda: rank_pid(pid_dir, 1) and rank_pid(pid_dir, 0), 30)
            if not f.check(ok, name + ": ranks started"):
                return
            time.sleep(1.5)  # let the group generate for a while
            f.check(proc.poll() is None, name + ": group still generating before the fault")
            os.kill(rank_pid(pid_dir, 1), sig)
            t0 = time.time()
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                f.check(False, name + ": job did not exit within 20 s of the fault")
                return
            elapsed = time.time() - t0
            print("%s: job exited with %d after %.1f s" % (name, proc.returncode, elapsed))
            f.check(proc.returncode != 0, name + ": non-zero exit")
            f.check(elapsed < 10, name + ": exit within 10 s (took %.1f s)" % elapsed)
            if sig == 19:  # SIGSTOP: rank 0 must have reported the lost group itself
                f.check("no answer from the group" in err,
                        name + ": rank 0 names the failure\n" + err[-2000:])
        finally:
            harness.kill_tree(proc)


def main():
    tessera = sys.argv[1]
    f = harness.Failures()
    scenario(f, tessera, 9, "killed rank")
    scenario(f, tessera, 19, "hung rank")
    f.finish()


if __name__ == "__main__":
    main()
