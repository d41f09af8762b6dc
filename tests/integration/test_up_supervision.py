#!/usr/bin/python3
"""`tessera up` supervises its cluster (issue 18, supervision).

  1. Children die with their parent: `kill -9` of `tessera up` (coordinator, a prefill node, a
     decode group of 2 ranks under mpirun) leaves no process of that tree after 2 s. The tree is
     read from /proc before the kill (every thread's children, so ranks forked by any thread of
     mpirun count).

  test_up_supervision.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import os
import time

import harness
import serving_cluster as sc


def tree(pid):
    """pid's descendants, from every thread's children list."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            continue
        for k in kids:
            out += [k] + tree(k)
    return out


def alive(pids):
    """The pids that still run (a zombie has ended)."""
    out = []
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            out.append(p)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid) as f:
            return f.read().replace("\0", " ")
    except OSError:
        return ""


def killed_parent(c, f):
    up = sc.start_up(c, "--prefill-groups", "1", "--decode-groups", "1", "--decode-tp", "2")
    kids = tree(up.pid)
    names = " | ".join(cmdline(p) for p in kids)
    f.check(any("tessera-coordinator" in cmdline(p) for p in kids) and
            any(cmdline(p).startswith("mpirun") for p in kids) and
            sum("tessera-node" in cmdline(p) and not cmdline(p).startswith("mpirun")
                for p in kids) == 3,
            "the tree holds the coordinator, mpirun and 3 node ranks (%s)" % names)
    os.kill(up.pid, sc.SIGKILL)
    t0 = time.monotonic()
    gone = harness.wait_for(lambda: not alive(kids), 2.0, 0.05)
    took = time.monotonic() - t0
    left = ["%d %s" % (p, cmdline(p)) for p in alive(kids)]
    f.check(gone, "kill -9 tessera up: nothing of its cluster is left after 2 s (%s)" % left)
    print("kill -9 tessera up: its %d processes gone in %.2f s" % (len(kids), took))
    for p in alive(kids):  # do not leave them to the next test
        sc.signal_proc_pid(p, sc.SIGKILL)
    sc.wait_exit(up, 10)


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        killed_parent(c, f)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
