#!/usr/bin/python3
"""`tessera up`: a whole local cluster in the foreground.

  1. `tessera up --groups 2 --tp 2` logs "tessera up: serving ... (2 groups x 2 ranks)" once Health
     lists both groups, serves a greedy completion, and on SIGINT stops every process it started
     and exits 0.
  2. When one of its children dies and may not be restarted (--max-restarts 0), it logs which
     one, stops the rest and exits 1 (restarts: test_up_supervision.py).

  test_serving_up.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import os
import re
import subprocess

import harness
import serving_cluster as sc


def alive(pids):
    return [p for p in pids if os.path.exists("/proc/%d" % p)
            and "zombie" not in open("/proc/%d/status" % p).read()]


def main():
    f = harness.Failures()
    c = sc.from_args()
    try:
        up = sc.start_up(c, "--groups", "2", "--tp", "2")
        line = [l for l in c.log(up).splitlines() if "tessera up: serving" in l][0]
        f.check(re.search(r"serving .* on 127\.0\.0\.1:\d+ \(2 groups x 2 ranks\)", line),
                "the serving line names the endpoint and the shape (%r)" % line)
        h = c.health()
        f.check(sorted(g.name for g in h.groups) == ["group-0", "group-1"] and
                all(g.tp == 2 for g in h.groups), "Health: two groups of 2 ranks (%s)" % h)
        case = harness.greedy_cases()[1]
        text, _, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
        f.check(case["prompt"] + text == harness.reference_text(case),
                "greedy completion through tessera up")
        kids = sc.descendants(up.pid)
        f.check(len(kids) >= 3, "tessera up started the coordinator and the groups (%s)" % kids)
        c.channel.close()
        sc.signal_proc(up, sc.SIGINT)
        rc = sc.wait_exit(up, 60)
        f.check(rc == 0, "SIGINT: tessera up exits 0 (got %s)" % rc)
        f.check(harness.wait_for(lambda: not alive(kids), 10),
                "SIGINT: nothing it started is left (%s)" % alive(kids))

        up = sc.start_up(c, "--groups", "1", "--max-restarts", "0")
        nodes = [p for p in sc.descendants(up.pid)
                 if "tessera-node" in open("/proc/%d/cmdline" % p).read()]
        f.check(len(nodes) == 1, "one node process (%s)" % nodes)
        kids = sc.descendants(up.pid)
        for p in nodes:
            os.kill(p, sc.SIGKILL)
        rc = sc.wait_exit(up, 60)
        f.check(rc == 1, "a child died: tessera up exits 1 (got %s)" % rc)
        f.check("node group-0" in c.log(up) and "stopping the cluster" in c.log(up),
                "a child died: the log names it")
        f.check(harness.wait_for(lambda: not alive(kids), 10),
                "a child died: the rest is stopped (%s)" % alive(kids))
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
