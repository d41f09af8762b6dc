"""slurm/tessera.sbatch across hosts on a network: a real local Slurm whose controller and two
slurmd nodes live in separate network namespaces (addresses only inside them, joined by veth
pairs to a bridge), so the job's control traffic, the nodes' registration with the coordinator
and the client's stream all cross real interfaces. The job advertises the first node's address;
a client in a third namespace streams completions; scancel stops every process.

usage: test_slurm_netns.py --bin-dir DIR --pydir DIR
"""
import json
import os
import subprocess

import local_slurm as ls

import harness  # noqa: E402  (local_slurm put tests/integration on the path)


def body(slurm, workdir, args, f):
    nsx = slurm.nsx
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_TP="2",
                             TESSERA_ADVERTISE_HOST=nsx.addr["n1"])
    job = slurm.submit(["-N2", "--ntasks-per-node=2", "--time=10"],
                       os.path.join(ls.SOURCE_DIR, "slurm", "tessera.sbatch"), env, workdir)
    endpoint = ls.wait_endpoint(slurm, job, workdir)
    out_path = os.path.join(workdir, "tessera-%s.out" % job)
    f.check(endpoint.startswith(nsx.addr["n1"] + ":"), "endpoint on n1's address: " + endpoint)
    client = os.path.join(ls.HERE, "test_multihost_netns.py")
    p = subprocess.run(nsx.exec_prefix("client") + [
        "/usr/bin/python3", client, "--client", endpoint, "--groups", "2", "--pydir", args.pydir],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if not f.check(p.returncode == 0 and lines, "the client in its namespace finished"):
        print(p.stdout[-3000:])
        print(ls.read(out_path)[-4000:])
    else:
        result = json.loads(lines[-1][len("RESULT "):])
        leaders = sorted(g["endpoint"].split(":")[1] for g in result["groups"])
        f.check(leaders == sorted([nsx.addr["n1"], nsx.addr["n2"]]),
                "one group registered from each node's address: %s" % leaders)
        for case in result["cases"]:
            if not f.check(case["got"] == case["expected"],
                           "completion across the namespaces matches the reference"):
                print("  expected: %r\n  got:      %r" % (case["expected"], case["got"]))
    ls.scancel_and_check_gone(slurm, job, workdir, f)


if __name__ == "__main__":
    ls.job_test("tessera-slurm-netns-job-", body, netns=True)
