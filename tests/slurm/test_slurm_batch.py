"""slurm/tessera-batch.sbatch on a real local Slurm: a JSONL file through a cluster that is one
job, and a requeue in the middle (what a preemption does) that resumes the batch.
  1. The job starts, the batch runs; `scontrol requeue` while some lines are done: the job runs
     again, the output ("resuming batch" in the job output) has every custom_id exactly once
     with the greedy texts of a run that was not requeued, the errors file is empty, and the job
     ends COMPLETED-or-gone with no process left.
  2. A missing TESSERA_BATCH_INPUT file: the job fails at once (exit 2) naming it.

usage: test_slurm_batch.py --bin-dir DIR --pydir DIR
"""
import glob
import json
import os
import time
import urllib.request

import local_slurm as ls

import harness  # noqa: E402  (local_slurm put tests/integration on the path)
from test_batch_run import texts, write_jsonl  # noqa: E402

N, MAX_TOKENS = 400, 120


def completed_lines(workdir, job):
    """The batch's completed count from the job's cluster (its private directory holds the HTTP
    endpoint and the API key), or 0."""
    for run_dir in glob.glob(os.path.join(workdir, "tessera-job-%s.*" % job)):
        try:
            ep = ls.read(os.path.join(run_dir, "http.endpoint")).strip()
            key = ls.read(os.path.join(run_dir, "api.key")).strip()
            req = urllib.request.Request("http://%s/v1/batches" % ep,
                                         headers={"Authorization": "Bearer " + key})
            with urllib.request.urlopen(req, timeout=5) as r:
                data = json.loads(r.read())["data"]
            if data:
                return data[0]["request_counts"]["completed"]
        except (OSError, ValueError, KeyError, IndexError):
            pass
    return 0


def body(slurm, workdir, args, f):
    script = os.path.join(ls.SOURCE_DIR, "slurm", "tessera-batch.sbatch")
    inp = os.path.join(workdir, "eval.jsonl")
    write_jsonl(inp, N, MAX_TOKENS)
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_BATCH_INPUT=inp,
                             TESSERA_STATE_DIR=os.path.join(workdir, "state"))
    job = slurm.submit(["-N1", "--ntasks=1", "--time=10"], script, env, workdir)
    out_path = os.path.join(workdir, "tessera-%s.out" % job)
    mid = harness.wait_for(lambda: completed_lines(workdir, job) >= 3, 180, 0.05)
    done_at = completed_lines(workdir, job)
    f.check(mid and done_at < N, "the batch runs in the job (%d of %d done at the requeue)"
            % (done_at, N))
    slurm.run(["scontrol", "requeue", job])
    finished = harness.wait_for(lambda: slurm.job_state(job) in ("", "COMPLETED") and
                                "tessera batch run exited with status" in ls.read(out_path)
                                and "resuming batch" in ls.read(out_path), 300, 0.5)
    out = ls.read(out_path)
    got = texts(os.path.join(workdir, "eval.out.jsonl"))
    f.check(finished and "exited with status 0" in out,
            "requeued, the job ran again and finished (state %r):\n%s"
            % (slurm.job_state(job), out[-3000:]))
    f.check(len(got) == N and all(len(v) == 1 for v in got.values()),
            "every custom_id once in the output (%d ids)" % len(got))
    f.check(os.path.exists(os.path.join(workdir, "eval.errors.jsonl")) and
            os.path.getsize(os.path.join(workdir, "eval.errors.jsonl")) == 0, "no failed line")
    f.check(harness.wait_for(lambda: not ls.job_processes(workdir) and
                             not slurm.stray_processes(), 60, 0.2),
            "no process left: %s %s" % (ls.job_processes(workdir), slurm.stray_processes()))

    # the same file on a cluster that was never requeued: the same texts
    ref_dir = os.path.join(workdir, "ref")
    os.makedirs(ref_dir)
    ref_in = os.path.join(ref_dir, "eval.jsonl")
    write_jsonl(ref_in, N, MAX_TOKENS)
    env = ls.tessera_job_env(args.bin_dir, workdir, TESSERA_BATCH_INPUT=ref_in,
                             TESSERA_STATE_DIR=os.path.join(ref_dir, "state"))
    ref_job = slurm.submit(["-N1", "--ntasks=1", "--time=10"], script, env, ref_dir)
    harness.wait_for(lambda: slurm.job_state(ref_job) == "", 300, 0.5)
    f.check(texts(os.path.join(ref_dir, "eval.out.jsonl")) == got,
            "the requeued job's texts equal an uninterrupted job's")

    # a missing input
    env = ls.tessera_job_env(args.bin_dir, workdir,
                             TESSERA_BATCH_INPUT=os.path.join(workdir, "missing.jsonl"))
    bad = slurm.submit(["-N1", "--ntasks=1", "--time=5", "--no-requeue"], script, env, workdir)
    harness.wait_for(lambda: slurm.job_state(bad) == "", 60, 0.2)
    time.sleep(0.5)
    f.check("missing.jsonl is not a readable file" in ls.read(
        os.path.join(workdir, "tessera-%s.out" % bad)), "a missing input: the job names it")


if __name__ == "__main__":
    ls.job_test("tessera-batch-job-", body)
