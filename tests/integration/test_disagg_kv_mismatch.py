#!/usr/bin/python3
"""Prefill and decode groups whose KV blocks are not exchangeable are never paired: the later one
is refused when it attaches, and the coordinator's log, Health (refused_groups) and the refused
node say why (issue 13).

One KV fingerprint (kvx/kv_transfer.h: the weights, the KV type, the block size, the layout) is
registered by every group. A coordinator with a prefill group (f16 KV, blocks of 16); then
  1. a decode group with --kv-type f32: refused (the node exits 1 naming the KV types);
  2. a decode group with --block-size 32: refused (naming the block sizes);
  3. a mixed group with --kv-type f32 exchanges no KV: it attaches;
  4. a decode group like the prefill one attaches, and a request runs prefill → decode and
     gives the reference text.

  test_disagg_kv_mismatch.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import harness
import serving_cluster as sc

CTX = ("--ctx", "512")


def refused(c, f, name, flags, words):
    before = len(c.health().refused_groups)
    p = c.start_node(name, "--role", "decode", *(CTX + flags))
    code = sc.wait_exit(p, 60)
    log = c.log(p)
    f.check(code == 1 and all(w in log for w in words),
            "decode %s %s: the node exits 1 naming %s (exit %s, log %r)"
            % (name, " ".join(flags), words, code, log[-600:]))
    h = c.health()
    why = list(h.refused_groups[before:])
    f.check(len(why) == 1 and name in why[0] and all(w in why[0] for w in words),
            "decode %s: Health.refused_groups says why (%r)" % (name, why))
    coord = c.log(c.coordinator)
    f.check("node group refused" in coord and all(w in coord for w in words),
            "decode %s: the coordinator's log says why" % name)
    f.check(all(g.name != name for g in h.groups), "decode %s: not among the groups" % name)


def main():
    f = harness.Failures()
    c = sc.from_args()
    case = harness.greedy_cases()[0]
    try:
        c.start_coordinator("--log-level", "debug")
        c.start_node("p0", "--role", "prefill", "--kv-type", "f16", "--block-size", "16", *CTX)
        c.wait_groups(1)
        refused(c, f, "d-f32", ("--kv-type", "f32"), ["KV type f32 vs f16", "--kv-type"])
        refused(c, f, "d-b32", ("--block-size", "32"), ["block size 32 vs 16", "--block-size"])
        c.start_node("m-f32", "--role", "mixed", "--kv-type", "f32", *CTX)
        c.wait_groups(2)
        c.start_node("d0", "--role", "decode", "--kv-type", "f16", "--block-size", "16", *CTX)
        h = c.wait_groups(3)
        f.check(len(h.refused_groups) == 2, "equal groups are not refused (%r)"
                % list(h.refused_groups))
        text, _, _ = c.generate(prompt=case["prompt"], max_tokens=case["n_predict"])
        f.check(text == harness.reference_completion(case),
                "an equal decode group serves the reference text (%r)" % text)
        f.check("prefill on p0, decode on d0" in open(c.coordinator.log_path).read(),
                "the request went prefill → decode")
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    main()
