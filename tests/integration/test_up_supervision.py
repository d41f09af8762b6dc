#!/usr/bin/python3
"""`tessera up` supervises its cluster (issue 18, supervision).

  1. Restarts: under `tessera up --tp 2 --max-restarts 1`, a rank of the TP 2 group killed with
     SIGKILL ends its mpirun; tessera up logs the crash and the restart, the group attaches again
     and a greedy Generate gives the reference text. The coordinator killed with SIGKILL is
     restarted on the same ports (API and Worker listener); the group re-attaches by itself and a
     Generate on the old address succeeds again.
     A second crash of the group spends its budget: tessera up logs that, stops the rest and
     exits 1, leaving nothing behind.
  2. Children die with their parent: `kill -9` of `tessera up` (coordinator, a prefill node, a
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


def node_ranks(pids):
    """The tessera-node processes among pids (not the mpirun that starts some of them)."""
    return [p for p in pids if "tessera-node" in cmdline(p) and not cmdline(p).startswith("mpirun")]


def greedy_ok(c, f, what):
    case = harness.greedy_cases()[1]
    text, _, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
    f.check(case["prompt"] + text == harness.reference_text(case),
            "%s: the greedy completion equals the reference" % what)


def attached(c, up):
    """How often the group's leader has attached (the nodes log to tessera up's output)."""
    return c.log(up).count("as group group-0")


def restarts(c, f):
    up = sc.start_up(c, "--tp", "2", "--max-restarts", "1")
    n_attached = attached(c, up)
    greedy_ok(c, f, "before any crash")

    ranks = node_ranks(tree(up.pid))
    f.check(len(ranks) == 2, "two ranks in the TP 2 group (%s)" % ranks)
    os.kill(ranks[-1], sc.SIGKILL)
    f.check(harness.wait_for(lambda: "restarted node group-0" in c.log(up), 30),
            "a rank killed: tessera up restarts the group")
    f.check("node group-0 " in c.log(up) and "restarting it in" in c.log(up),
            "a rank killed: the log names the crash and the backoff")
    f.check(harness.wait_for(lambda: attached(c, up) > n_attached, 60),
            "a rank killed: the restarted group attaches")
    n_attached = attached(c, up)
    c.wait_groups(1, timeout=60)
    greedy_ok(c, f, "after the group's restart")

    coord = [p for p in tree(up.pid) if "tessera-coordinator" in cmdline(p)]
    f.check(len(coord) == 1, "one coordinator (%s)" % coord)
    os.kill(coord[0], sc.SIGKILL)
    f.check(harness.wait_for(lambda: "restarted tessera-coordinator" in c.log(up), 30),
            "the coordinator killed: tessera up restarts it")
    c.channel.close()
    c.channel = c.grpc.insecure_channel(c.endpoint)  # the same port
    f.check(harness.wait_for(lambda: attached(c, up) > n_attached, 60),
            "the coordinator restarted: the group re-attaches by itself")
    c.wait_groups(1, timeout=60)
    greedy_ok(c, f, "after the coordinator's restart (the group re-attached by itself)")

    kids = tree(up.pid)
    os.kill(node_ranks(kids)[0], sc.SIGKILL)
    rc = sc.wait_exit(up, 60)
    f.check(rc == 1, "the budget spent: tessera up exits 1 (got %s)" % rc)
    f.check("restart(s) are spent" in c.log(up) and "stopping the cluster" in c.log(up),
            "the budget spent: the log says so")
    f.check(harness.wait_for(lambda: not alive(kids), 10),
            "the budget spent: nothing is left (%s)" % alive(kids))


def killed_parent(c, f):
    up = sc.start_up(c, "--prefill-groups", "1", "--decode-groups", "1", "--decode-tp", "2")
    kids = tree(up.pid)
    names = " | ".join(cmdline(p) for p in kids)
    f.check(any("tessera-coordinator" in cmdline(p) for p in kids) and
            any(cmdline(p).startswith("mpirun") for p in kids) and
            len(node_ranks(kids)) == 3,
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
        restarts(c, f)
        killed_parent(c, f)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
