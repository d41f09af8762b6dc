#!/usr/bin/env python3
"""Each architecture feature gives llama.cpp's greedy text on a synthetic model.

Usage: test_arch_reference.py TESSERA [--np N] [--isa ISA]
tests/data/arch_reference.jsonl (written by tools/make_arch_reference.sh with llama.cpp built
from the PyPI sdist) holds, per case, the `tessera model synth` flags of a small f32 model
(qwen2 with q/k/v biases and NEOX RoPE; llama with Llama 3.1's rope_freqs; linear RoPE
scaling; a wider qwen2 with GQA 8:2), the SHA-256 of the file they make, a prompt and
llama-simple's greedy output. This test makes the same files (checking the digest: a changed
synthesizer must regenerate the reference) and runs `tessera generate`; with --np N as one
tensor-parallel group of N ranks.
"""
import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile

import harness

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                    "arch_reference.jsonl")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--np", type=int, default=0)
    ap.add_argument("--isa", default="auto")
    args = ap.parse_args()
    cases = [json.loads(line) for line in open(DATA) if line.strip()]
    f = harness.Failures()
    env = harness.mpi_env() if args.np else None
    prefix = harness.mpirun_prefix(args.np) if args.np else []
    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for case in cases:
            name = case["model"]
            if name not in made:
                path = os.path.join(tmp, name + ".gguf")
                harness.run([args.tessera, "model", "synth"] + shlex.split(case["synth"]) +
                            ["-o", path])
                made[name] = path
                if not f.check(sha256(path) == case["sha256"],
                               name + ": synthesized file differs from the reference's (rerun "
                               "tools/make_arch_reference.sh)"):
                    continue
            cmd = prefix + [args.tessera, "generate", "-m", made[name], "-p", case["prompt"],
                            "-n", str(case["n_predict"]), "--json", "--isa", args.isa]
            if args.np:
                cmd += ["--threads", "1"]
            p = harness.run(cmd, env=env)
            out = json.loads(p.stdout.strip().splitlines()[-1])
            expected = harness.reference_text(case)
            got = case["prompt"] + out["completion"]
            if not f.check(got == expected, "%s / %r: text" % (name, case["prompt"])):
                print("  expected: %r\n  got:      %r" % (expected, got), file=sys.stderr)
    f.finish()


if __name__ == "__main__":
    main()
