"""Multi-host: the coordinator and two node groups (TP 2 each, under mpirun) on three "hosts",
Linux network namespaces joined by veth pairs to a bridge in a fourth namespace, with addresses
that exist only inside them; a client in a fifth namespace streams completions. Every byte
between coordinator, groups and client crosses a real (virtual) network interface: the test
checks that the groups registered from their hosts' addresses and that the coordinator's
interface carried the traffic. A second layout puts one TP group across two hosts (mpirun
entering the namespaces through an agent), so that its all-reduces cross the network too.
Skipped with a message where namespaces cannot be created.

usage: test_multihost_netns.py --bin-dir DIR --pydir DIR
       test_multihost_netns.py --client ENDPOINT --groups N --pydir DIR  (inside the client namespace)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
import serving_cluster  # noqa: E402

import local_slurm  # noqa: E402

HOSTS = ("coord", "hosta", "hostb", "client")
Namespaces = local_slurm.Namespaces


def client_main(endpoint, pydir, n_groups):
    """Inside the client namespace: wait for the groups, stream the reference completions."""
    c = local_slurm.connect(pydir, endpoint)
    health = c.wait_groups(n_groups, timeout=120)
    result = {"groups": [{"name": g.name, "tp": g.tp, "endpoint": g.endpoint}
                         for g in health.groups], "cases": []}
    for case in harness.greedy_cases()[:2]:
        text, _, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
        result["cases"].append({"got": case["prompt"] + text,
                                "expected": harness.reference_text(case)})
    c.channel.close()
    print("RESULT " + json.dumps(result))


def host_tmpdir(tmp, host):
    """The TMPDIR of `host` (netns_agent.sh spells the same path for the daemons it starts)."""
    path = os.path.join(tmp, host)
    os.makedirs(path, exist_ok=True)
    return path


def group_command(nsx, bin_dir, ep_file, secret_file, name, hosts, tmp):
    """(host to start on, command, env) of a TP group with one rank per host in `hosts`."""
    node = [os.path.join(bin_dir, "tessera-node"), "--coordinator-file", ep_file,
            "--cluster-secret-file", secret_file, "--name", name,
            "--tp", "2", "--threads", "1", "-m", harness.MODEL_F32]
    # The namespace "hosts" share /tmp and the hostname, so each gets its own TMPDIR: Open MPI's
    # session directories (/tmp/ompi.HOST.UID/jf.N/...) would otherwise collide between the
    # mpiruns and daemons of different "hosts" (mkdir ... File exists, and the group never starts).
    env = harness.mpi_env()
    env["TMPDIR"] = host_tmpdir(tmp, hosts[0])
    if len(hosts) == 1:
        return hosts[0], harness.mpirun_prefix(2) + node, env
    # Ranks on several hosts: mpirun starts its daemons through an agent that enters the other
    # hosts' namespaces; MPI traffic goes over TCP on eth0, the only way between the hosts.
    env.update({"TS_NETNS_TMPDIR": tmp,
                "TS_NETNS_PREFIX": nsx.prefix, "OMPI_MCA_btl": "self,tcp",
                "OMPI_MCA_btl_tcp_if_include": "eth0", "OMPI_MCA_oob_tcp_if_include": "eth0",
                "OMPI_MCA_plm_rsh_agent": os.path.join(HERE, "netns_agent.sh")})
    return hosts[0], (harness.mpirun_prefix(len(hosts)) + ["--host", ",".join(h + ":1" for h in hosts)]
                      + node), env


def run_layout(nsx, args, f, what, groups):
    """Coordinator on "coord", the TP-2 groups {name: [hosts]}, a client on "client"."""
    tmp = tempfile.mkdtemp(prefix="tessera-netns-")
    procs = []

    def spawn(host, cmd, log, env=None):
        out = open(os.path.join(tmp, log), "w")
        p = subprocess.Popen(nsx.exec_prefix(host) + cmd, stdout=out, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        p.log_path = out.name
        procs.append(p)
        return p

    def logs():
        for q in procs:
            print("--- %s ---\n%s" % (q.log_path, serving_cluster.Cluster.log(None, q)))

    try:
        ep_file = os.path.join(tmp, "endpoint")
        worker_file = os.path.join(tmp, "worker.endpoint")
        secret_file = os.path.join(tmp, "cluster.secret")
        serving_cluster.write_secret(secret_file)
        spawn("coord", [os.path.join(args.bin_dir, "tessera-coordinator"), "--listen",
                        nsx.addr["coord"] + ":0", "--endpoint-file", ep_file,
                        "--worker-listen", nsx.addr["coord"] + ":0", "--worker-endpoint-file",
                        worker_file, "--cluster-secret-file", secret_file, "-m",
                        harness.MODEL_F32], "coordinator.log")
        if not harness.wait_for(lambda: os.path.exists(ep_file), 30):
            logs()
            raise AssertionError("%s: the coordinator wrote no endpoint" % what)
        with open(ep_file) as fh:
            endpoint = fh.read().strip()
        f.check(endpoint.startswith(nsx.addr["coord"] + ":"),
                "%s: the endpoint names the coordinator host's address: %s" % (what, endpoint))
        before = {h: nsx.eth0_bytes(h) for h in HOSTS}
        for name, hosts in groups.items():
            host, cmd, env = group_command(nsx, args.bin_dir, worker_file, secret_file, name,
                                           hosts, tmp)
            spawn(host, cmd, name + ".log", env=env)
        p = subprocess.run(nsx.exec_prefix("client") + [
            "/usr/bin/python3", os.path.abspath(__file__), "--client", endpoint, "--groups",
            str(len(groups)), "--pydir", args.pydir], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=240)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if not f.check(p.returncode == 0 and lines, "%s: the client finished" % what):
            print(p.stdout[-3000:])
            logs()
            return
        result = json.loads(lines[-1][len("RESULT "):])
        moved = {h: nsx.eth0_bytes(h) - before[h] for h in HOSTS}
        print("%s: groups %s; bytes through eth0: %s" % (what, result["groups"], moved))
        leaders = sorted(g["endpoint"].split(":")[1] for g in result["groups"])
        f.check(leaders == sorted(nsx.addr[h[0]] for h in groups.values()),
                "%s: groups registered from their leaders' host addresses: %s" % (what, leaders))
        for case in result["cases"]:
            if not f.check(case["got"] == case["expected"],
                           "%s: the completion matches the reference" % what):
                print("  expected: %r\n  got:      %r" % (case["expected"], case["got"]))
        f.check(moved["coord"] > 10000, "%s: the coordinator's eth0 carried the traffic" % what)
        for name, hosts in groups.items():
            if len(hosts) > 1:
                # The second host runs only a follower rank, which never talks to the
                # coordinator: what its interface carried is the group's own TP traffic.
                f.check(moved[hosts[1]] > 100000, "%s: group %s's ranks exchanged their "
                        "all-reduces over %s's eth0 (%d bytes)" % (what, name, hosts[1],
                                                                   moved[hosts[1]]))
        # A clean stop across hosts: SIGTERM to the coordinator tells every group to shut down.
        procs[0].terminate()
        f.check(serving_cluster.wait_exit(procs[0], 30) == 0, "%s: coordinator exits 0" % what)
        for q in procs[1:]:
            f.check(serving_cluster.wait_exit(q, 60) is not None,
                    "%s: %s stops when the coordinator shuts down" % (what, q.log_path))
    finally:
        for q in procs:
            if q.poll() is None:
                harness.kill_tree(q)
                q.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir")
    ap.add_argument("--pydir", required=True)
    ap.add_argument("--client")
    ap.add_argument("--groups", type=int, default=2)
    args = ap.parse_args()
    serving_cluster.import_protos(args.pydir)
    if args.client:
        return client_main(args.client, args.pydir, args.groups)
    if os.geteuid() != 0 or not shutil.which("ip"):
        harness.skip("network namespaces need root and iproute2")
    f = harness.Failures()
    with Namespaces(HOSTS) as nsx:
        run_layout(nsx, args, f, "a group per host",
                   {"hosta": ["hosta"], "hostb": ["hostb"]})
        run_layout(nsx, args, f, "one group across two hosts", {"span": ["hosta", "hostb"]})
    f.finish()


if __name__ == "__main__":
    main()
