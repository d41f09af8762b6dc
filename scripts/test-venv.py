#!/usr/bin/env python3
"""test-venv.py — a virtual environment with the PyPI packages a test needs, outside the clone.

    scripts/test-venv.py REQUIREMENT...      e.g. tokenizers==0.23.3 gguf==0.19.0

Prints the path of the environment's python on stdout once every requirement is installed. The
environment lives under $TESSERA_CACHE (default ~/.cache/tessera) in venv/<digest of the sorted
requirements>, so tests asking for the same pins share it and later runs cost nothing; a lock
file serializes tests that create it at the same time. Pin exact versions.

Exit codes (as scripts/fetch-models.py): 0 ready; 3 the registry could not be reached (a test
that needs the packages reports itself skipped on 3); 1 anything else.
"""
import fcntl
import hashlib
import os
import subprocess
import sys
import venv

EXIT_OFFLINE = 3
OFFLINE_SIGNS = ("Could not find a version", "NewConnectionError", "Temporary failure in name "
                 "resolution", "Network is unreachable", "ConnectTimeout", "Max retries exceeded")


def main():
    reqs = sorted(set(sys.argv[1:]))
    if not reqs or any(r.startswith("-") or "==" not in r for r in reqs):
        print(__doc__, file=sys.stderr)
        return 1
    base = os.environ.get("TESSERA_CACHE") or os.path.expanduser("~/.cache/tessera")
    digest = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]
    root = os.path.join(base, "venv", digest)
    python = os.path.join(root, "bin", "python")
    ready = os.path.join(root, "READY")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(ready):
            venv.create(root, with_pip=True, clear=True)
            cmd = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--retries", "2", "--timeout", "30"] + reqs
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                err = (proc.stderr + proc.stdout).strip()
                if any(s in err for s in OFFLINE_SIGNS):
                    print("test-venv: PyPI cannot be reached: %s" % err.splitlines()[-1],
                          file=sys.stderr)
                    return EXIT_OFFLINE
                print("test-venv: pip install %s failed:\n%s" % (" ".join(reqs), err),
                      file=sys.stderr)
                return 1
            with open(ready, "w") as f:
                f.write("\n".join(reqs) + "\n")
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
