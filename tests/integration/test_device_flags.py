#!/usr/bin/env python3
"""--device, --device-per-rank and --kv-transport on tessera-node and tessera up: a bad device, a
GPU index this machine lacks, one GPU per rank on the CPU, a bad transport name, and nccl without
--device cuda are usage errors (exit 2) with a message that says what to do; nothing is started.

Usage: test_device_flags.py TESSERA TESSERA_NODE
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
        ([tessera, "up", "--device", "tpu"], "--device 'tpu': expected cpu, cuda or cuda:N"),
        ([tessera, "up", "--device", "cuda:x"], "device 'cuda:x': expected cuda or cuda:N"),
        ([tessera, "up", "--device", "cudax"], "--device 'cudax': expected cpu, cuda or cuda:N"),
        # no machine has 1001 GPUs: refused before anything starts, with the count found
        ([tessera, "up", "--device", "cuda:1000"], "--device cuda:1000: this machine has"),
        ([node, "--coordinator", "127.0.0.1:1", "--device-per-rank"],
         "one GPU per rank needs --device cuda or cuda:N, not 'cpu'"),
    ]
    for cmd, words in cases:
        p = harness.run(cmd, timeout=60, check=False)
        what = " ".join(cmd[1:])
        f.check(p.returncode == 2, "%s: exit code 2 (got %d)" % (what, p.returncode))
        f.check(words in p.stderr, "%s: message %r\n%s" % (what, words, p.stderr[-1500:]))
    f.finish()


if __name__ == "__main__":
    main()
