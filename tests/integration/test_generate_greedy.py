#!/usr/bin/env python3
"""Greedy generations equal llama.cpp's reference for every case, for both bundled model files.

Usage: test_generate_greedy.py TESSERA [--np N] [--threads T] [--isa ISA] [--device DEV]
With --np N it runs `mpirun -np N tessera generate` (one tensor-parallel group of N ranks).
With --device cuda[:N] it runs on a GPU, and skips (exit 77) where the machine has none.
The printed prompt followed by `completion` must equal greedy_text without its leading "<s> ",
and completion_ids must agree across every configuration (the reference ids come from running
the scalar reference kernels on one rank).
"""
import argparse
import json
import sys

import harness


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--np", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--isa", default="auto")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    f = harness.Failures()
    env = harness.mpi_env() if args.np else None
    prefix = harness.mpirun_prefix(args.np) if args.np else []
    if args.device != "cpu":
        p = harness.run([args.tessera, "generate", "-p", "Hi", "-n", "1", "--device", args.device],
                        check=False)
        for why in ("no CUDA device", "has no CUDA backend"):
            if p.returncode != 0 and why in p.stderr:
                detail = p.stderr.strip().splitlines()[-1].split(why)[-1].lstrip(": ")
                harness.skip("%s (%s)" % (why, detail or p.stderr.strip()))
    for model in (harness.MODEL_F32, harness.MODEL_F16):
        for case in harness.greedy_cases():
            cmd = prefix + [args.tessera, "generate", "-m", model, "-p", case["prompt"],
                            "-n", str(case["n_predict"]), "--json", "--isa", args.isa,
                            "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            p = harness.run(cmd, env=env)
            out = json.loads(p.stdout.strip().splitlines()[-1])
            name = "%s / %r" % (model.rsplit("/", 1)[-1], case["prompt"])
            f.check(out["prompt_ids"] == case["prompt_ids"], name + ": prompt ids")
            expected = harness.reference_text(case)
            got = case["prompt"] + out["completion"]
            if not f.check(got == expected, name + ": text"):
                print("  expected: %r\n  got:      %r" % (expected, got), file=sys.stderr)
            f.check(out["finish_reason"] in ("length", "stop"), name + ": finish reason")
            f.check(out["usage"]["completion_tokens"] == len(out["completion_ids"]),
                    name + ": usage")
    f.finish()


if __name__ == "__main__":
    main()
