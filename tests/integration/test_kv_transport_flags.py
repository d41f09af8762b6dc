#!/usr/bin/env python3
"""--kv-transport on tessera-node and tessera up: a bad name, and nccl without --device cuda, are
usage errors (exit 2) with a message that says what to do; nothing is started.

Usage: test_kv_transport_flags.py TESSERA TESSERA_NODE
"""
import sys

import harness


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    tessera, node = sys.argv[1], sys.argv[2]
    f = harness.Failures()
    cases = [
        ([node, "--coordinator", "127.0.0.1:1", "--kv-transport", "rdma"],
         "KV transport 'rdma': expected tcp or nccl"),
        ([node, "--coordinator", "127.0.0.1:1", "--role", "prefill", "--kv-transport", "nccl"],
         "--kv-transport nccl moves KV blocks between GPUs: it needs --device cuda"),
        ([tessera, "up", "--prefill-groups", "1", "--decode-groups", "1", "--kv-transport",
          "nccl"],
         "--kv-transport nccl moves KV blocks between GPUs: it needs --device cuda"),
        ([tessera, "up", "--prefill-groups", "1", "--decode-groups", "1", "--device", "cpu",
          "--kv-transport", "nccl"],
         "it needs --device cuda (got cpu)"),
        ([tessera, "up", "--kv-transport", "tcp2"], "KV transport 'tcp2': expected tcp or nccl"),
    ]
    for cmd, words in cases:
        p = harness.run(cmd, timeout=60, check=False)
        what = " ".join(cmd[1:])
        f.check(p.returncode == 2, "%s: exit code 2 (got %d)" % (what, p.returncode))
        f.check(words in p.stderr, "%s: message %r\n%s" % (what, words, p.stderr[-1500:]))
    f.finish()


if __name__ == "__main__":
    main()
