"""slurm/tessera.sbatch on a real local Slurm (two slurmd "nodes" on this machine): the job
publishes its endpoint, two TP-2 groups register (one per node, over srun --mpi=pmix), a client
streams greedy completions that match the reference, and scancel stops every process.

usage: test_slurm_sbatch.py --bin-dir DIR --pydir DIR
"""
import glob
import os
import stat
import subprocess
import threading

import local_slurm as ls

import harness  # noqa: E402  (local_slurm put tests/integration on the path)
import serving_cluster as sc  # noqa: E402


def check_greedy(c, f, what):
    for case in harness.greedy_cases()[:2]:
        text, ids, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
        expected = harness.reference_text(case)
        if not f.check(case["prompt"] + text == expected, "%s: %r streams the reference"
                       % (what, case["prompt"])):
            print("  expected: %r\n  got:      %r" % (expected, case["prompt"] + text))


def check_cli_client(bin_dir, endpoint, f):
    """`tessera generate --server` against the job, when the CLI has it."""
    tessera = os.path.join(bin_dir, "tessera")
    usage = subprocess.run([tessera, "generate", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True).stdout
    if "--server" not in usage:
        print("note: tessera generate has no --server yet; the grpcio client covered it")
        return
    case = harness.greedy_cases()[0]
    p = harness.run([tessera, "generate", "--server", endpoint, "-p", case["prompt"], "-n",
                     str(case["n_predict"])], timeout=60, check=False)
    f.check(p.returncode == 0 and harness.reference_text(case) in case["prompt"] + p.stdout,
            "tessera generate --server streams the reference (rc %d): %s"
            % (p.returncode, p.stderr[-500:]))


def check_secret(c, job, workdir, f):
    """The job's cluster secret: a 0600 file in the job's private directory, in no process's
    command line; its Worker listener refuses an Attach without it."""
    from tessera.v1 import worker_pb2 as wpb
    files = glob.glob(os.path.join(workdir, "tessera-job-%s.*" % job, "cluster.secret"))
    if not f.check(len(files) == 1, "the job made one secret file (%s)" % files):
        return
    f.check(stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600, "the secret file is mode 0600")
    with open(files[0]) as fh:
        secret = fh.read().strip()
    procs = ls.job_processes(workdir)
    f.check(procs and not any(secret in p for p in procs),
            "the secret is in none of the job's %d command lines" % len(procs))
    f.check(secret not in ls.read(os.path.join(workdir, "tessera-%s.out" % job)),
            "the secret is not in the job output")
    with open(os.path.join(workdir, "tessera-%s.worker" % job)) as fh:
        c.worker_endpoint = fh.read().strip()
    c.secret = secret
    intruder = sc.FakeGroup(c, wpb, "intruder", metadata=())
    f.check(intruder.ended.wait(20) and intruder.code == c.grpc.StatusCode.UNAUTHENTICATED and
            not intruder.received, "the job's Worker listener (%s) refuses an Attach without "
            "the secret (%s)" % (c.worker_endpoint, intruder.code))
    intruder.close()


def body(slurm, workdir, args, f):
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_TP="2", TESSERA_PIN="1")
    job = slurm.submit(["-N2", "--ntasks-per-node=2", "--time=10"],
                       os.path.join(ls.SOURCE_DIR, "slurm", "tessera.sbatch"), env, workdir)
    endpoint = ls.wait_endpoint(slurm, job, workdir)
    out_path = os.path.join(workdir, "tessera-%s.out" % job)
    f.check("coordinator endpoint " + endpoint in ls.read(out_path),
            "the job output reports the endpoint")
    c = ls.connect(args.pydir, endpoint)
    try:
        health = c.wait_groups(2, timeout=120)
    except (AssertionError, AttributeError):  # no coordinator log here: print the job's
        print(ls.read(out_path)[-4000:])
        raise
    f.check(sorted(g.tp for g in health.groups) == [2, 2], "two groups of TP 2")
    f.check(sorted(g.name for g in health.groups) == ["mixed-g0", "mixed-g1"],
            "groups named by pool: %s" % [g.name for g in health.groups])
    out = ls.read(out_path)
    f.check("srun --mpi=pmix" in out, "nodes launched with srun --mpi=pmix")
    for rank, host, cores in ((0, "n1", "0"), (1, "n1", "1"), (2, "n2", "0"), (3, "n2", "1")):
        f.check("tessera-bind: rank %d on %s: cpu, cores %s (pinned)" % (rank, host, cores)
                in out, "rank %d bound and pinned as planned" % rank)
    f.check("the plan put it on" not in out, "every rank runs on the host the plan chose")
    check_greedy(c, f, "sbatch cluster")
    check_secret(c, job, workdir, f)
    check_cli_client(args.bin_dir, endpoint, f)
    f.check(c.wait_kv_idle(), "KV blocks all free after the requests")
    out = scancel_during_stream(slurm, job, workdir, c, f)
    f.check("the coordinator is shutting down" in out, "nodes were told to shut down")
    check_mpirun_launcher(slurm, workdir, args, f)
    check_refused_plan(slurm, workdir, args, f)


def scancel_during_stream(slurm, job, workdir, c, f, drain=False):
    """scancel while a stream runs: the job stops completely and the stream ends, never hangs.
    Plain scancel signals every task at once, so the stream may fail (with a status); with
    drain, only the batch script is signalled (scancel --batch --signal=TERM, as the time limit
    does): it stops the coordinator first, which lets the stream finish."""
    first = threading.Event()
    outcome = {}

    def consume():
        try:
            n = 0
            for m in c.generate_call(timeout=60, prompt="Once upon a time", max_tokens=120,
                                     ignore_eos=True):
                n += len(m.token_ids)
                first.set()
                outcome["finish"] = m.finish_reason
            outcome["tokens"] = n
        except c.grpc.RpcError as e:
            outcome["code"] = e.code()
        first.set()

    t = threading.Thread(target=consume)
    t.start()
    f.check(first.wait(60), "the stream started")
    out = ls.scancel_and_check_gone(slurm, job, workdir, f,
                                    scancel_args=("--batch", "--signal=TERM") if drain else ())
    t.join(60)
    f.check(not t.is_alive(), "the stream ended after scancel")
    print("stream at scancel%s: %s" % (" (drain)" if drain else "", outcome))
    if drain:
        f.check(outcome.get("tokens") == 120 and outcome.get("finish") == c.pb.FINISH_REASON_LENGTH,
                "scancel --batch --signal=TERM lets the running stream finish: %s" % outcome)
    else:
        f.check(outcome.get("code") not in (c.grpc.StatusCode.DEADLINE_EXCEEDED, None) or
                outcome.get("finish", 0) != 0,
                "the stream finished or failed with a status: %s" % outcome)
    c.channel.close()
    return out


def check_mpirun_launcher(slurm, workdir, args, f):
    """TESSERA_LAUNCHER=mpirun: Open MPI starts the ranks inside the allocation."""
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_TP="2", TESSERA_LAUNCHER="mpirun",
                             TESSERA_NODE_ARGS="--block-size 32")
    job = slurm.submit(["-N2", "--ntasks-per-node=2", "--time=10"],
                       os.path.join(ls.SOURCE_DIR, "slurm", "tessera.sbatch"), env, workdir)
    c = ls.connect(args.pydir, ls.wait_endpoint(slurm, job, workdir))
    try:
        c.wait_groups(2, timeout=120)
    except (AssertionError, AttributeError):  # no coordinator log here: print the job's
        print(ls.read(os.path.join(workdir, "tessera-%s.out" % job))[-4000:])
        raise
    f.check("launcher: mpirun" in ls.read(os.path.join(workdir, "tessera-%s.out" % job)),
            "mpirun launcher used")
    f.check("KV blocks of 32" in ls.read(os.path.join(workdir, "tessera-%s.out" % job)),
            "TESSERA_NODE_ARGS reach the nodes (--block-size 32)")
    check_greedy(c, f, "mpirun launcher")
    scancel_during_stream(slurm, job, workdir, c, f, drain=True)


def check_refused_plan(slurm, workdir, args, f):
    """TP 3 for a model of 8 heads: the job ends at once, exit 2, saying what to change."""
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_TP="3")
    job = slurm.submit(["-N2", "--ntasks-per-node=2", "--time=10"],
                       os.path.join(ls.SOURCE_DIR, "slurm", "tessera.sbatch"), env, workdir)
    f.check(harness.wait_for(lambda: slurm.job_state(job) == "", 60, 0.2), "bad plan: job ends")
    out = ls.read(os.path.join(workdir, "tessera-%s.out" % job))
    f.check("does not divide the model's 8 query heads: use one of 1, 2, 4, 8" in out,
            "bad plan: the job output says which TP degrees work: " + out[-1000:])
    show = slurm.run(["scontrol", "show", "job", job], check=False).stdout
    f.check("ExitCode=2:0" in show, "bad plan: the job exits with code 2")
    f.check(not ls.job_processes(workdir), "bad plan: nothing was started")
    # A misspelt node setting is refused by the one node command line builder before any step.
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_TP="2",
                             TESSERA_NODE_ARGS="--kv-memroy 8M")
    job = slurm.submit(["-N2", "--ntasks-per-node=2", "--time=10"],
                       os.path.join(ls.SOURCE_DIR, "slurm", "tessera.sbatch"), env, workdir)
    f.check(harness.wait_for(lambda: slurm.job_state(job) == "", 60, 0.2),
            "bad TESSERA_NODE_ARGS: job ends")
    out = ls.read(os.path.join(workdir, "tessera-%s.out" % job))
    f.check("unknown flag '--kv-memroy'" in out and "TESSERA_NODE_ARGS" in out,
            "bad TESSERA_NODE_ARGS: the job output names the flag: " + out[-1000:])
    show = slurm.run(["scontrol", "show", "job", job], check=False).stdout
    f.check("ExitCode=2:0" in show, "bad TESSERA_NODE_ARGS: the job exits with code 2")
    f.check(not ls.job_processes(workdir), "bad TESSERA_NODE_ARGS: no node was started")


if __name__ == "__main__":
    ls.job_test("tessera-sbatch-job-", body)
