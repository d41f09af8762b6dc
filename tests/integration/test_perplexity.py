#!/usr/bin/env python3
"""`tessera perplexity` gives llama-perplexity's figure, and refuses what it cannot score.

Usage: test_perplexity.py TESSERA [--np N] [--real]
The text is Debian's GPL-3 licence file, as in tests/data/real/README.md (its SHA-256 is
checked). The bundled stories260K reference was measured with llama.cpp built from the PyPI
sdist (bench/llama-cpp.sh): `llama-perplexity -m stories260K-f32.gguf -f GPL-3 -c 128
--chunks 3 -b 128 -t 2` printed [3]67.5200. With --real, the real models' figures of
tests/data/real/README.md (-c 256 --chunks 8) are checked too, within its 0.5 %. With --np N
the model runs as one tensor-parallel group of N ranks under mpirun.
"""
import argparse
import hashlib
import json
import os
import tempfile

import harness

TEXT = "/usr/share/common-licenses/GPL-3"
TEXT_SHA256 = "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"
# (model path or real-model name, ctx, chunks, llama.cpp's PPL)
STORIES = (harness.MODEL_F32, 128, 3, 67.5200)
REAL = [("smollm2-135m", 256, 8, 22.2963), ("qwen2.5-coder-0.5b", 256, 8, 8.2806)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--np", type=int, default=0)
    ap.add_argument("--real", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(TEXT):
        harness.skip(TEXT + " is missing (Debian's base-files provides it)")
    with open(TEXT, "rb") as fh:
        if hashlib.sha256(fh.read()).hexdigest() != TEXT_SHA256:
            harness.skip(TEXT + " differs from the text the references were measured on")
    f = harness.Failures()
    env = harness.mpi_env() if args.np else None
    prefix = harness.mpirun_prefix(args.np) if args.np else []
    cases = [STORIES]
    if args.real:
        cases += [(harness.real_model(n), c, k, v) for n, c, k, v in REAL]
    for model, ctx, chunks, expected in cases:
        cmd = prefix + [args.tessera, "perplexity", "-m", model, "-f", TEXT, "--ctx", str(ctx),
                        "--chunks", str(chunks), "--json"]
        if args.np:
            cmd += ["--threads", "1"]
        p = harness.run(cmd, env=env, timeout=900)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        name = os.path.basename(model)
        f.check(out["chunks"] == chunks and out["ctx"] == ctx, name + ": windows")
        f.check(out["scored_tokens"] == chunks * (ctx - 1 - ctx // 2), name + ": scored tokens")
        rel = abs(out["ppl"] - expected) / expected
        if not f.check(rel <= 0.005, "%s: PPL %.4f vs llama.cpp %.4f (%.3f %%)"
                       % (name, out["ppl"], expected, 100 * rel)):
            continue
        print("%s: PPL %.4f, llama.cpp %.4f (%.3f %% apart)" % (name, out["ppl"], expected,
                                                               100 * rel))
    if args.np:
        f.finish()
    # bad input, one process: a text too short for two windows, a missing file, no -f
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as short:
        short.write("Once upon a time there was a dog.")
        short.flush()
        p = harness.run([args.tessera, "perplexity", "-f", short.name, "--ctx", "128"],
                        check=False)
        f.check(p.returncode == 2 and "needs at least 256" in p.stderr,
                "short text refused: %d %s" % (p.returncode, p.stderr.strip()))
    p = harness.run([args.tessera, "perplexity", "-f", "/nonexistent.txt"], check=False)
    f.check(p.returncode == 2 and "/nonexistent.txt" in p.stderr, "missing file: " + p.stderr)
    p = harness.run([args.tessera, "perplexity"], check=False)
    f.check(p.returncode == 2 and "missing -f" in p.stderr, "no -f: " + p.stderr)
    f.finish()


if __name__ == "__main__":
    main()
