#!/usr/bin/python3
"""Who may attach as a node group (issue 15, security): the Worker service has its own listener,
and node groups prove the cluster's secret there.

A real tessera-coordinator (--listen and --worker-listen on loopback, port 0, a cluster secret
in a file of mode 0600) and real tessera-node processes; raw grpcio clients play intruders:
  1. The public API port does not serve tessera.v1.Worker/Attach: UNIMPLEMENTED.
  2. On the Worker listener an Attach without the secret, or with a wrong one, is refused
     UNAUTHENTICATED and receives nothing, not even Welcome; the coordinator logs the refusal
     and the peer, never the secret. A real tessera-node without the secret (or with a wrong
     one) stops at once with the coordinator's refusal instead of retrying.
  3. The real node with the secret attaches and serves, and no intruder received a request.
  4. Bad secret files are refused before anything listens (exit 2, a message naming the flag):
     missing, readable by others, empty; a Worker listener others can reach (not loopback)
     without a secret is refused too.
  5. `tessera up` makes a fresh secret per cluster (mode 0600 in a 0700 directory), serves with
     it, puts it in no process's argv and no log, refuses an Attach without it, and removes it
     when it stops.

  test_worker_security.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import os
import stat
import subprocess

import harness
import serving_cluster as sc

SECRET_KEY = "tessera-cluster-secret"


def run_fails(cmd, env=None):
    """Runs a process that must refuse to start: (exit code, output)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=30, env=env)
    return p.returncode, p.stdout


def check_refused_attaches(c, f, wpb):
    intruders = []
    none = sc.FakeGroup(c, wpb, "no-secret", metadata=())
    wrong = sc.FakeGroup(c, wpb, "wrong-secret", metadata=((SECRET_KEY, "0" * 64),))
    public = sc.FakeGroup(c, wpb, "on-public-port", target=c.endpoint)
    intruders += [none, wrong, public]
    for g, code in ((none, c.grpc.StatusCode.UNAUTHENTICATED),
                    (wrong, c.grpc.StatusCode.UNAUTHENTICATED),
                    (public, c.grpc.StatusCode.UNIMPLEMENTED)):
        f.check(g.ended.wait(20), "%s: the Attach ends" % g.name)
        f.check(g.code == code, "%s: %s (got %s %r)" % (g.name, code, g.code, g.details))
        f.check(not g.received, "%s: nothing received (%s)" % (g.name, g.received))
    f.check("no cluster secret" in (none.details or "") and
            "wrong cluster secret" in (wrong.details or ""),
            "the refusals say what was missing (%r, %r)" % (none.details, wrong.details))
    log = c.log_full(c.coordinator)
    f.check(log.count("refused /tessera.v1.Worker/Attach from ipv4:127.0.0.1:") >= 2,
            "the coordinator logs each refusal with the peer")
    return intruders


def check_real_nodes_without_the_secret(c, f):
    env = {k: v for k, v in os.environ.items() if k != "TESSERA_CLUSTER_SECRET"}
    wrong_file = os.path.join(c.tmp, "wrong.secret")
    sc.write_secret(wrong_file)
    for what, extra in (("no secret", []), ("a wrong secret", ["--cluster-secret-file",
                                                                wrong_file])):
        code, out = run_fails([os.path.join(c.bin_dir, "tessera-node"), "--coordinator",
                               c.worker_endpoint, "--name", "stranger", "-m", harness.MODEL_F32,
                               "--threads", "1", "--connect-timeout-ms", "20000"] + extra, env)
        f.check(code == 1 and "UNAUTHENTICATED" in out and "refused group stranger" in out,
                "tessera-node with %s: refused at once, exit 1 (got %d: %s)"
                % (what, code, out[-400:]))


def check_bad_secret_files(c, f):
    coord = [os.path.join(c.bin_dir, "tessera-coordinator"), "--listen", "127.0.0.1:0",
             "--worker-listen", "127.0.0.1:0", "-m", harness.MODEL_F32]
    loose = os.path.join(c.tmp, "loose.secret")
    with open(loose, "w") as fh:
        fh.write("a" * 64 + "\n")
    os.chmod(loose, 0o644)
    empty = os.path.join(c.tmp, "empty.secret")
    os.close(os.open(empty, os.O_WRONLY | os.O_CREAT, 0o600))
    missing = os.path.join(c.tmp, "missing.secret")
    for what, path, words in (("missing", missing, "No such file"),
                              ("mode 0644", loose, "chmod 600"),
                              ("empty", empty, "empty")):
        for binary in ("tessera-coordinator", "tessera-node"):
            cmd = (coord if binary == "tessera-coordinator" else
                   [os.path.join(c.bin_dir, "tessera-node"), "--coordinator", "127.0.0.1:1",
                    "-m", harness.MODEL_F32])
            code, out = run_fails(cmd + ["--cluster-secret-file", path])
            f.check(code == 2 and "--cluster-secret-file " + path in out and words in out,
                    "%s: a %s secret file: exit 2 naming the flag and %r (got %d: %s)"
                    % (binary, what, words, code, out.strip()[-300:]))
    env = {k: v for k, v in os.environ.items() if k != "TESSERA_CLUSTER_SECRET"}
    code, out = run_fails(coord[:3] + ["--worker-listen", "0.0.0.0:0", "-m", harness.MODEL_F32],
                          env)
    f.check(code == 2 and "needs a cluster secret" in out,
            "a Worker listener on 0.0.0.0 without a secret: exit 2 (got %d: %s)"
            % (code, out.strip()[-300:]))


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return fh.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def check_up(c, f, wpb):
    up = sc.start_up(c, "--groups", "2", "--tp", "2")
    argvs = {pid: cmdline(pid) for pid in [up.pid] + sc.descendants(up.pid)}
    coord = [a for a in argvs.values() if a and a[0].endswith("tessera-coordinator")]
    f.check(len(coord) == 1 and "--cluster-secret-file" in coord[0],
            "tessera up hands the coordinator a secret file (%s)" % coord)
    if not coord or "--cluster-secret-file" not in coord[0]:
        return
    path = coord[0][coord[0].index("--cluster-secret-file") + 1]
    run_dir = os.path.dirname(path)
    f.check(stat.S_IMODE(os.stat(path).st_mode) == 0o600 and
            stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700,
            "the secret file is 0600 in a 0700 directory")
    with open(path) as fh:
        secret = fh.read().strip()
    f.check(len(secret) == 64, "a 256-bit secret (%d hex digits)" % len(secret))
    nodes = [a for a in argvs.values() if any(x.endswith("tessera-node") for x in a)]
    f.check(len(nodes) >= 2 and all(path in a for a in nodes),
            "every group's command line names the secret's file (%d groups)" % len(nodes))
    f.check(not any(secret in " ".join(a) for a in argvs.values()),
            "the secret is in no argv of the %d processes of tessera up" % len(argvs))
    with open(os.path.join(run_dir, "worker.endpoint")) as fh:
        worker = fh.read().strip()
    f.check(worker.startswith("127.0.0.1:"), "tessera up's Worker listener is loopback (%s)"
            % worker)
    c.worker_endpoint, c.secret = worker, secret
    intruder = sc.FakeGroup(c, wpb, "up-intruder", metadata=())
    f.check(intruder.ended.wait(20) and intruder.code == c.grpc.StatusCode.UNAUTHENTICATED and
            not intruder.received, "tessera up refuses an Attach without the secret (%s)"
            % intruder.code)
    intruder.close()
    text, ids, _ = c.generate(prompt="Once upon a time", max_tokens=8)
    f.check(len(ids) == 8, "tessera up serves with the secret (%r)" % text)
    sc.signal_proc(up, sc.SIGINT)
    f.check(sc.wait_exit(up, 60) == 0, "tessera up stops cleanly")
    f.check(secret not in c.log_full(up), "the secret is in no log of tessera up")
    f.check(not os.path.exists(run_dir), "tessera up removes the secret when it stops")


def main():
    f = harness.Failures()
    c = sc.from_args()
    from tessera.v1 import worker_pb2 as wpb
    intruders = []
    try:
        c.start_coordinator("--heartbeat-ms", "100")
        f.check(c.endpoint != c.worker_endpoint,
                "the API and the Worker service listen apart (%s, %s)"
                % (c.endpoint, c.worker_endpoint))
        intruders = check_refused_attaches(c, f, wpb)
        check_real_nodes_without_the_secret(c, f)
        f.check(len(c.health().groups) == 0, "no intruder is listed in Health")

        c.start_node("solo")
        h = c.wait_groups(1)
        f.check([g.name for g in h.groups] == ["solo"], "only the real node is listed (%s)"
                % [g.name for g in h.groups])
        text, ids, _ = c.generate(prompt="Once upon a time", max_tokens=8)
        f.check(len(ids) == 8 and text, "the real cluster serves (%r)" % text)
        f.check(not any(g.received for g in intruders), "no intruder received a request")
        logs = "".join(c.log_full(p) for p in c.procs)
        f.check(c.secret not in logs, "the secret is in no log")

        check_bad_secret_files(c, f)
        for p in c.procs:
            sc.signal_proc(p, sc.SIGTERM)
        for p in c.procs:
            sc.wait_exit(p, 30)
        check_up(c, f, wpb)
    finally:
        for i in intruders:
            i.close()
        sc.finish(c, f)


if __name__ == "__main__":
    main()
