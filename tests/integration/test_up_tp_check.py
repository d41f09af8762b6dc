#!/usr/bin/python3
"""`tessera up` checks each group's tensor-parallel degree against the model's head counts (the
shard plan's rules, node/shard.h) before it starts any child, and names the constraint and the
flag (issue 13).

The tessera binary runs from a temporary directory whose tessera-coordinator and tessera-node are
scripts that leave a mark when started, so the test sees that no child ran:
  - --tp 3 on the bundled model (8 query heads, 4 KV heads): exit 2, "does not divide the model's
    8 query heads: use one of 1, 2, 4, 8", naming --tp;
  - --decode-tp 3 with --prefill-groups/--decode-groups: the same, naming --decode-tp;
  - --tp 2 on a synthesized model with 12 query heads and 3 KV heads (2 divides 12 but neither
    of 2 and 3 divides the other): exit 2 naming the KV heads.
A legal degree does start the children (the mark appears).

Usage: test_up_tp_check.py TESSERA
"""
import os
import shutil
import subprocess
import sys
import tempfile

import harness


def main():
    tessera = os.path.abspath(sys.argv[1])
    f = harness.Failures()
    with tempfile.TemporaryDirectory(prefix="tessera-up-tp-") as d:
        exe = os.path.join(d, "tessera")
        shutil.copy(tessera, exe)
        mark = os.path.join(d, "started")
        for child in ("tessera-coordinator", "tessera-node"):
            path = os.path.join(d, child)
            with open(path, "w") as fh:
                fh.write("#!/bin/sh\necho %s >> %s\nexit 1\n" % (child, mark))
            os.chmod(path, 0o755)
        synth = os.path.join(d, "h12kv3.gguf")
        harness.run([tessera, "model", "synth", "--dim", "96", "--layers", "1", "--heads", "12",
                     "--kv-heads", "3", "--ff", "128", "--vocab", "512", "--ctx", "64",
                     "--vocab-from", "none", "--type", "f32", "-o", synth], timeout=120)
        cases = [
            ("--tp 3", ["-m", harness.MODEL_F32, "--tp", "3"],
             ["--tp 3: ", "does not divide the model's 8 query heads: use one of 1, 2, 4, 8"]),
            ("--decode-tp 3", ["-m", harness.MODEL_F32, "--prefill-groups", "1",
                               "--decode-groups", "1", "--decode-tp", "3"],
             ["--decode-tp 3: ", "does not divide the model's 8 query heads"]),
            ("--tp 2 on 3 KV heads", ["-m", synth, "--tp", "2"],
             ["--tp 2: ", "the model's 3 KV heads: one must divide the other"]),
        ]
        for what, flags, words in cases:
            p = harness.run([exe, "up", "--port", "0"] + flags, check=False, timeout=60)
            err = p.stderr.strip().splitlines()
            f.check(p.returncode == 2 and len(err) == 1 and all(w in err[0] for w in words),
                    "%s: exit 2, one line naming %s (got %d %r)" % (what, words, p.returncode,
                                                                    p.stderr))
            f.check(not os.path.exists(mark), "%s: no child was started" % what)
        # A legal degree gets as far as starting the (fake) children.
        p = harness.run([exe, "up", "--port", "0", "-m", harness.MODEL_F32, "--tp", "2",
                         "--startup-timeout-ms", "3000"], check=False, timeout=60)
        f.check(os.path.exists(mark), "--tp 2 passes the check and starts the children (%d %r)"
                % (p.returncode, p.stderr[-300:]))
    f.finish()


if __name__ == "__main__":
    main()
