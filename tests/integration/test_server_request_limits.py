#!/usr/bin/python3
"""Every request field's limits, through every front door (gRPC and the CLI, local and --server).

The limits are one table (request/request.h). Through gRPC, each field just outside its limits
ends Generate with INVALID_ARGUMENT at once, naming the field and its limits; the request is never
admitted (Health.requests_total does not move, so no node saw it) and never retried
(Health.requests_retried stays 0). Each field at its limits is accepted and runs on the node (the
node validates with the same table, so what the coordinator admits a node runs). Through the CLI
(`tessera generate`, with a local model and with --server) each flag just outside its limits
exits 2 with one line naming the field, its flag and the limits, before anything is loaded or
sent.

Usage: test_server_request_limits.py TESSERA --pydir DIR_WITH_tessera/v1/inference_pb2.py
"""
import argparse
import time

import cluster
import harness

# (field as the API spells it, CLI flag or None, value just outside, GenerateRequest fields)
# The GenerateRequest fields build the out-of-range request; "S" marks sampling fields.
OUTSIDE = [
    ("max_tokens", "max-tokens", "0", dict(max_tokens=(1 << 24) + 1)),
    ("max_tokens", "max-tokens", str((1 << 24) + 1), dict(max_tokens=-1)),
    ("sampling.temperature", "temperature", "2.5", dict(S=dict(temperature=2.01))),
    ("sampling.temperature", "temperature", "-1", dict(S=dict(temperature=-0.5))),
    ("sampling.top_k", "top-k", str((1 << 30) + 1), dict(S=dict(top_k=(1 << 30) + 1))),
    ("sampling.top_k", "top-k", "-1", dict(S=dict(top_k=-1))),
    ("sampling.top_p", "top-p", "0", dict(S=dict(top_p=1.01))),
    ("sampling.top_p", "top-p", "1.5", dict(S=dict(top_p=-0.1))),
    ("sampling.min_p", "min-p", "-0.1", dict(S=dict(min_p=-0.1))),
    ("sampling.min_p", "min-p", "1.1", dict(S=dict(min_p=1.1))),
    ("sampling.repetition_penalty", "repeat-penalty", "0", dict(S=dict(repetition_penalty=-1))),
    ("sampling.repetition_penalty", "repeat-penalty", "11",
     dict(S=dict(repetition_penalty=10.5))),
    ("sampling.repetition_last_n", "repeat-last-n", "-1", dict(S=dict(repetition_last_n=-1))),
    ("sampling.repetition_last_n", "repeat-last-n", str((1 << 24) + 1),
     dict(S=dict(repetition_last_n=(1 << 24) + 1))),
    ("priority", None, None, dict(priority=1000001)),
    ("priority", None, None, dict(priority=-1000001)),
    ("timeout_ms", "timeout-ms", "-1", None),
    ("timeout_ms", "timeout-ms", str((1 << 30) + 1), None),
    ("stop", None, None, dict(stop=["x"] * 5)),
    ("stop[0]", None, None, dict(stop=["x" * 257])),
    ("stop[0]", None, None, dict(stop=[""])),
    ("request_id", None, None, dict(request_id="r" * 128)),
]

# At the limits: accepted and run (few tokens; the context ends the long ones).
INSIDE = [
    dict(max_tokens=1),
    dict(max_tokens=1 << 24),
    dict(S=dict(temperature=2, seed=1)),
    dict(S=dict(top_k=1 << 30, temperature=1, seed=1)),
    dict(S=dict(top_p=1e-6, temperature=1, seed=1)),
    dict(S=dict(min_p=1, temperature=1, seed=1)),
    dict(S=dict(repetition_penalty=10, repetition_last_n=1 << 24)),
    dict(priority=1000000),
    dict(priority=-1000000),
    dict(stop=["x" * 256] * 4),
    dict(request_id="r" * 127),
]


def build(pb, fields):
    fields = dict(fields)
    s = fields.pop("S", None)
    if s is not None:
        fields["sampling"] = pb.SamplingParams(**s)
    fields.setdefault("max_tokens", 4)
    return pb.GenerateRequest(prompt="Once upon a time", ignore_eos=True, **fields)


def limits_text(name):
    # The table's limits as the message spells them (request/request.c).
    return {
        "max_tokens": "[1, 16777216]", "sampling.temperature": "[0, 2]",
        "sampling.top_k": "[0, 1073741824]", "sampling.top_p": "(0, 1]",
        "sampling.min_p": "[0, 1]", "sampling.repetition_penalty": "(0, 10]",
        "sampling.repetition_last_n": "[0, 16777216]", "priority": "[-1000000, 1000000]",
        "timeout_ms": "[0, 1073741824]", "stop": "0 to 4 strings", "stop[0]": "1 to 256 bytes",
        "request_id": "0 to 127 bytes",
    }[name]


def check_cli(f, tessera, where, what):
    """tessera generate WHERE with each flag just outside its limits: exit 2, one line naming the
    field, its flag and the limits."""
    for name, flag, value, _ in OUTSIDE:
        if flag is None:
            continue
        p = harness.run([tessera, "generate"] + where + ["-p", "Once", "--" + flag, value],
                        check=False, timeout=60)
        err = p.stderr.strip().splitlines()
        ok = (p.returncode == 2 and len(err) == 1 and name in err[0] and "--" + flag in err[0]
              and limits_text(name) in err[0])
        f.check(ok, "%s --%s %s: exit 2, one line naming %s and %s (got %d %r)"
                % (what, flag, value, name, limits_text(name), p.returncode, p.stderr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--pydir", required=True)
    args = ap.parse_args()
    grpc, pb = cluster.import_grpc(args.pydir)
    f = harness.Failures()

    check_cli(f, args.tessera, ["-m", harness.MODEL_F32], "local")
    with cluster.Cluster(args.tessera) as c:
        channel, stubs = cluster.inference_stubs(grpc, pb, c.target)
        generate, health = stubs["Generate"], stubs["Health"]
        before = health(pb.HealthRequest(), timeout=10)
        for name, _, _, fields in OUTSIDE:
            if fields is None:
                continue
            t0 = time.time()
            try:
                msgs = list(generate(build(pb, fields), timeout=60))
                f.check(False, "%s %s: refused (it streamed %d messages)" % (name, fields, len(msgs)))
            except grpc.RpcError as e:
                took = time.time() - t0
                ok = (e.code() == grpc.StatusCode.INVALID_ARGUMENT and name in e.details() and
                      limits_text(name) in e.details() and took < 5)
                f.check(ok, "%s %s: INVALID_ARGUMENT at once naming the field and %s (got %s %r "
                        "after %.1f s)" % (name, fields, limits_text(name), e.code().name,
                                           e.details(), took))
        after = health(pb.HealthRequest(), timeout=10)
        f.check(after.requests_total == before.requests_total,
                "no out-of-range request was admitted (requests_total %d → %d)"
                % (before.requests_total, after.requests_total))
        f.check(after.requests_retried == 0,
                "the coordinator retried nothing (requests_retried %d)" % after.requests_retried)

        for fields in INSIDE:
            try:
                msgs = list(generate(build(pb, fields), timeout=120))
                last = msgs[-1] if msgs else None
                f.check(last is not None and last.finish_reason in (pb.FINISH_REASON_LENGTH,
                                                                    pb.FINISH_REASON_STOP),
                        "at the limits %s: runs to a finish" % fields)
            except grpc.RpcError as e:
                f.check(False, "at the limits %s: accepted (got %s %r)"
                        % (fields, e.code().name, e.details()))
        h = health(pb.HealthRequest(), timeout=10)
        f.check(h.requests_retried == 0,
                "no request at its limits was refused by a node and retried (requests_retried %d)"
                % h.requests_retried)

        # The CLI against the cluster: refused before anything is sent.
        before = health(pb.HealthRequest(), timeout=10)
        check_cli(f, args.tessera, ["--server", c.target], "--server")
        after = health(pb.HealthRequest(), timeout=10)
        f.check(after.requests_total == before.requests_total,
                "the CLI sent no out-of-range request (requests_total %d → %d)"
                % (before.requests_total, after.requests_total))
        channel.close()
        f.check(c.alive(), "the cluster is still up")
    f.finish()


if __name__ == "__main__":
    main()
