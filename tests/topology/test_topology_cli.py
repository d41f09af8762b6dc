"""`tessera topology` as a user runs it: this machine alone, inside a (simulated) Slurm job
whose environment the test sets, with a cluster file, and the refusals with exit code 2."""
import json
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import harness  # noqa: E402

TESSERA = sys.argv[1]


def topology(args, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(env_extra or {})
    return subprocess.run([TESSERA, "topology"] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=60)


f = harness.Failures()

p = topology(["--json"])
f.check(p.returncode == 0, "plain topology exits 0: " + p.stderr)
doc = json.loads(p.stdout)
f.check(doc["source"] == "this machine", "source without Slurm is this machine")
f.check(doc["hosts"][0]["cores"] >= 1 and doc["hosts"][0]["this_machine"], "this machine measured")

# A simulated two-node job: this host plus one other, two tasks each.
me = socket.gethostname().split(".")[0]
slurm = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "%s,zz-other" % me,
         "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_NTASKS": "4", "SLURM_PROCID": "0",
         "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
p = topology(["--json", "--plan", "2x2", "-m", harness.MODEL_F32], slurm)
f.check(p.returncode == 0, "slurm plan 2x2 accepted: " + p.stderr)
if p.returncode == 0:
    doc = json.loads(p.stdout)
    f.check(doc["source"] == "Slurm job 77", "source is the Slurm job")
    f.check([h["name"] for h in doc["hosts"]] == [me, "zz-other"], "hosts in Slurm order")
    ranks = doc["plan"]["pools"][0]["ranks"]
    f.check([r["host"] for r in ranks] == [me, me, "zz-other", "zz-other"], "groups per host")
    f.check([r["group"] for r in ranks] == [0, 0, 1, 1], "rank r in group r / TP")

p = topology(["--plan", "2x2", "--bindings"], slurm)
entries = [e.split("/") for e in p.stdout.strip().split(";")]
f.check(p.returncode == 0 and [e[:2] for e in entries] == [[me, "cpu"], [me, "cpu"],
                                                           ["zz-other", "cpu"], ["zz-other", "cpu"]]
        and all(len(e) == 3 and e[2] for e in entries), "bindings in rank order: " + p.stdout)
p = topology(["--plan", "2x2", "--rank", "3"], slurm)
f.check(p.returncode == 0 and p.stdout.startswith("pool=mixed group=1 host=zz-other device=cpu"),
        "one rank's placement: " + p.stdout)
p = topology(["--plan", "2x2", "--pool", "1", "--rank", "0"], slurm)
f.check(p.returncode == 2 and "the plan has 1 pool(s)" in p.stderr, "no such pool: " + p.stderr)
p = topology(["--plan", "1x3", "-m", harness.MODEL_F32], slurm)
f.check(p.returncode == 2 and "does not divide the model's 8 query heads" in p.stderr,
        "TP 3 refused for 8 heads: %d %s" % (p.returncode, p.stderr))
p = topology(["--plan", "1x4"], slurm)
f.check(p.returncode == 2 and "--ntasks-per-node=4" in p.stderr,
        "TP 4 on 2 tasks per host refused with what to change: " + p.stderr)
p = topology(["--plan", "1x4", "--allow-cross-host-tp"], slurm)
f.check(p.returncode == 0 and "spans hosts" in p.stdout, "cross-host TP allowed when asked")
p = topology(["--plan", "3x2"], slurm)
f.check(p.returncode == 2 and "only 2 of 3 groups" in p.stderr, "too many groups refused")
p = topology(["--plan", "2x2"], dict(slurm, SLURM_JOB_NODELIST="n[1-"))
f.check(p.returncode == 2 and "SLURM_JOB_NODELIST: hostlist \"n[1-\": position 5" in p.stderr,
        "malformed SLURM_JOB_NODELIST reported: " + p.stderr)
p = topology(["--plan", "sideways:2"])
f.check(p.returncode == 2 and "unknown role 'sideways'" in p.stderr, "bad role refused")

# Heterogeneous job: one pool per component.
het = dict(slurm, SLURM_HET_SIZE="2", SLURM_JOB_NODELIST_HET_GROUP_0=me,
           SLURM_JOB_NODELIST_HET_GROUP_1="zz-d[1-2]", SLURM_TASKS_PER_NODE_HET_GROUP_0="2",
           SLURM_TASKS_PER_NODE_HET_GROUP_1="1(x2)")
p = topology(["--json", "--plan", "prefill:1x2,decode:*x1"], het)
f.check(p.returncode == 0, "het plan accepted: " + p.stderr)
if p.returncode == 0:
    pools = json.loads(p.stdout)["plan"]["pools"]
    f.check({r["host"] for r in pools[0]["ranks"]} == {me}, "prefill on component 0")
    f.check([r["host"] for r in pools[1]["ranks"]] == ["zz-d1", "zz-d2"], "decode on component 1")
p = topology(["--plan", "2"], het)
f.check(p.returncode == 2 and "one pool per component" in p.stderr, "het pool count checked")

with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "cluster.json")
    with open(path, "w") as out:
        json.dump({"hosts": [{"name": "gpu[01-02]", "cores": 32, "gpus": 4, "nvlink": True}]}, out)
    p = topology(["--cluster", path, "--plan", "2x4", "--json"])
    f.check(p.returncode == 0, "cluster file plan accepted: " + p.stderr)
    if p.returncode == 0:
        ranks = json.loads(p.stdout)["plan"]["pools"][0]["ranks"]
        f.check([r["device"] for r in ranks[:4]] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"],
                "rank to device binding")
        f.check(ranks[1]["cpus"] == "8-15", "CPU pinning list")
    p = topology(["--cluster", path, "--plan", "1x8"])
    f.check(p.returncode == 2 and "no host has more than 4" in p.stderr, "TP 8 on 4-GPU hosts")
    with open(path, "w") as out:
        out.write('{"hosts": [{"name": "a", "cores": 4, "gpu": 1}]}')
    p = topology(["--cluster", path])
    f.check(p.returncode == 2 and 'unknown key "gpu"' in p.stderr, "typo in cluster file")
    p = topology(["--cluster", os.path.join(d, "missing.json")])
    f.check(p.returncode == 2 and "missing.json" in p.stderr, "missing cluster file")

# --node-command: the tessera-node command line of a pool's launch (the Slurm scripts run it),
# one NUL after each argument; node settings as `tessera up` takes them, typos refused.
node = os.path.join(os.path.dirname(os.path.abspath(TESSERA)), "tessera-node")
p = topology(["--plan", "decode:1x2", "--pool", "0", "--node-command",
              "--coordinator", "h:7", "--name", "dec", "-m", harness.MODEL_F32,
              "--kv-memory", "64M", "--no-prefix-cache", "--local"])
f.check(p.returncode == 0 and p.stdout.endswith("\0") and
        p.stdout.split("\0")[:-1] == [node, "--coordinator", "h:7", "--name", "dec", "--role",
                                      "decode", "--tp", "2", "--threads", "0", "-m",
                                      harness.MODEL_F32, "--kv-memory", "64M",
                                      "--no-prefix-cache"],
        "--node-command prints the pool's node command line: %r %s" % (p.stdout, p.stderr))
for args, want in ((["--kv-memroy", "8M", "--coordinator", "h:7"], "unknown flag '--kv-memroy'"),
                   ([], "no coordinator"),
                   (["--pool", "3", "--coordinator", "h:7"], "the plan has 1 pool(s)")):
    p = topology(["--plan", "decode:1x2", "--node-command", "--local"] + args)
    f.check(p.returncode == 2 and want in p.stderr and not p.stdout,
            "--node-command %s: exit 2 naming '%s' (got %d %r)" % (args, want, p.returncode,
                                                                   p.stderr))

f.finish()
