#!/usr/bin/env python3
"""Real models (SmolLM2-135M-Instruct Q4_1, Qwen2.5-Coder-0.5B-Instruct Q4_K_M) against
llama.cpp's greedy outputs in tests/data/real/, in one process, as a TP 2 group and through a
local cluster (`tessera up`).

Usage: test_real_models.py TESSERA [--mode local|tp2|up]   (tp2: Qwen as TP 2, SmolLM2 as TP 3)

What is asserted, and why not "every token equal":
  - the prompt's ids are exactly llama.cpp's (the tokenizer is exact);
  - every run stops where it should (48 tokens, or an end-of-generation token that is not
    printed) and reports usage that adds up;
  - agreement with llama.cpp: the first token equals the reference in at least 7 of every 9
    cases of each model, and the completions share on average at least 8 leading tokens with
    the reference. These models decode through many near-ties (two logits within 0.05 of each
    other): llama.cpp built from the PyPI sdist (bench/llama-cpp.sh) on this machine reproduces
    its own reference in full for 2 of the 9 SmolLM2 cases, and for one of them not even the
    first token, because its build differs in summation order from the one that wrote the
    reference. A kernel bug (a wrong nibble order, scale or rounding) diverges at once in every
    case; docs/models.md gives the measured figures. test_quant holds the kernels to the gguf
    package bit for bit; test_perplexity --real holds the model's perplexity to llama.cpp's.
  - determinism: the same run twice gives the same tokens, and the cluster gives the tokens of
    the one-process run (same kernels, same reduction order). A TP 2 group sums the row-parallel
    projections across ranks, a different order, so it is held to the reference criteria only.
"""
import argparse
import json
import os
import subprocess
import tempfile

import harness

MODELS = [("smollm2-135m", "smollm2-135m-instruct-q4_1.jsonl"),
          ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.jsonl")]
MIN_FIRST_TOKEN_AGREEMENT = 7 / 9  # of the cases
MIN_MEAN_COMMON_PREFIX = 8.0   # tokens


def common_prefix(a, b):
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def generate(cmd, case, env=None):
    """The prompts are plain text (no special-token text in them), so no --parse-special."""
    p = harness.run(cmd + ["-p", case["prompt"], "-n", str(case["n_predict"]), "--json"],
                    env=env, timeout=600)
    return json.loads(p.stdout.strip().splitlines()[-1])


def check_model(f, name, cases, run_case):
    prefixes, first, outputs = [], 0, []
    for case in cases:
        out = run_case(case)
        outputs.append(out["completion_ids"])
        what = "%s / %r" % (name, case["prompt"][:32])
        if "prompt_ids" in out:
            f.check(out["prompt_ids"] == case["prompt_ids"], what + ": prompt ids")
        ids = out["completion_ids"]
        f.check(out["usage"]["completion_tokens"] == len(ids), what + ": usage")
        f.check(len(ids) == case["n_predict"] or out["finish_reason"] == "stop",
                what + ": %d tokens, finish %s" % (len(ids), out["finish_reason"]))
        k = common_prefix(ids, case["completion_ids"])
        prefixes.append(k)
        first += k > 0
    mean = sum(prefixes) / len(prefixes)
    print("%s: common prefix with llama.cpp per case %s (mean %.1f of %d), first token %d/%d"
          % (name, prefixes, mean, cases[0]["n_predict"], first, len(cases)))
    f.check(first >= MIN_FIRST_TOKEN_AGREEMENT * len(cases) - 1e-9,
            "%s: first token equals llama.cpp's in %d of %d cases" % (name, first, len(cases)))
    f.check(mean >= MIN_MEAN_COMMON_PREFIX,
            "%s: mean common prefix %.1f tokens" % (name, mean))
    return outputs


def start_up(tessera, model, tmp, *flags):
    ep = os.path.join(tmp, "endpoint")
    log = open(os.path.join(tmp, "up.log"), "w")
    p = subprocess.Popen([tessera, "up", "-m", model, "--port", "0", "--endpoint-file", ep,
                          "--threads", "2"] + list(flags), stdout=log, stderr=subprocess.STDOUT,
                         env=harness.mpi_env(), start_new_session=True)
    logtext = lambda: open(log.name).read()
    ok = harness.wait_for(lambda: "tessera up: serving" in logtext() or p.poll() is not None, 300)
    if not ok or p.poll() is not None:
        p.kill()
        raise AssertionError("tessera up did not start:\n" + logtext())
    with open(ep) as fh:
        return p, fh.read().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--mode", choices=["local", "tp2", "up"], default="local")
    args = ap.parse_args()
    f = harness.Failures()
    for model_name, ref in MODELS:
        model = harness.real_model(model_name)
        cases = harness.real_cases(ref, "greedy")
        local = [args.tessera, "generate", "-m", model, "--threads", "2"]
        if args.mode == "local":
            first = check_model(f, model_name, cases, lambda c: generate(local, c))
            again = [generate(local, c)["completion_ids"] for c in cases[:3]]
            f.check(again == first[:3], model_name + ": a second run gives the same tokens")
        elif args.mode == "tp2":
            # Qwen (14 heads, 2 KV heads) as TP 2; SmolLM2 (9 heads, 3 KV heads) refuses TP 2
            # ("use one of 1, 3, 9") and runs as TP 3, one KV head per rank
            degree = 3 if model_name == "smollm2-135m" else 2
            tp = harness.mpirun_prefix(degree) + [args.tessera, "generate", "-m", model,
                                                  "--threads", "1"]
            check_model(f, "%s (TP %d)" % (model_name, degree), cases,
                        lambda c: generate(tp, c, env=harness.mpi_env()))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                # engine flags reach the nodes: prompts prefilled 8 tokens per step give the
                # one-process tokens (chunked prefill is bit-identical, kernels.h)
                p, endpoint = start_up(args.tessera, model, tmp, "--prefill-chunk", "8",
                                       "--batch-tokens", "64", "--kv-type", "f16")
                try:
                    remote = [args.tessera, "generate", "--server", endpoint]
                    served = check_model(f, model_name + " (tessera up)", cases[:4],
                                         lambda c: generate(remote, c))
                    direct = [generate(local, c)["completion_ids"] for c in cases[:4]]
                    f.check(served == direct,
                            model_name + ": the cluster gives the one-process tokens")
                finally:
                    os.killpg(p.pid, 2)
                    try:
                        p.wait(60)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, 9)
    if args.mode == "up":
        with tempfile.TemporaryDirectory() as tmp:
            try:
                p, _ = start_up(args.tessera, harness.real_model("smollm2-135m"), tmp,
                                "--kv-type", "f8")
                os.killpg(p.pid, 9)
                f.check(False, "tessera up --kv-type f8 started")
            except AssertionError as e:
                f.check("f8" in str(e), "--kv-type f8 reaches the node and is refused: %s"
                        % str(e)[-300:])
    f.finish()


if __name__ == "__main__":
    main()
