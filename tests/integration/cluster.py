"""cluster.py — a real local Tessera cluster for client-facing tests (`tessera up` on loopback).

    with cluster.Cluster(tessera, groups=2, tp=2) as c:
        run([tessera, "generate", "--server", c.target, ...])

`tessera up` starts tessera-coordinator (port 0: it picks a free port and writes it to the
endpoint file) and the node groups, and logs "tessera up: serving ..." once every group has
registered; the cluster is ready then. Leaving the block sends SIGTERM (a clean stop) and, if
that takes longer than 30 s, kills the whole process group. The cluster's log is printed when
it fails to start or when the test body raised.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

import harness


def serving_binaries(tessera):
    """The binaries `tessera up` needs next to `tessera`; the missing ones."""
    bindir = os.path.dirname(os.path.abspath(tessera))
    return [b for b in ("tessera-coordinator", "tessera-node")
            if not os.access(os.path.join(bindir, b), os.X_OK)]


class Cluster:
    def __init__(self, tessera, model=harness.MODEL_F32, groups=1, tp=1, threads=1, extra=(),
                 start_timeout=180):
        self.tessera = tessera
        self.model = model
        self.groups = groups
        self.tp = tp
        self.threads = threads
        self.extra = list(extra)
        self.start_timeout = start_timeout
        self.proc = None
        self.target = None
        self.port = None

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="tessera-cluster-")
        self.endpoint_file = os.path.join(self.dir.name, "endpoint")
        self.log_path = os.path.join(self.dir.name, "up.log")
        cmd = [self.tessera, "up", "-m", self.model, "--port", "0", "--groups", str(self.groups),
               "--tp", str(self.tp), "--threads", str(self.threads),
               "--endpoint-file", self.endpoint_file] + self.extra
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=harness.mpi_env(),
                                     start_new_session=True)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self._fail("tessera up exited %d before serving" % self.proc.returncode)
            if "tessera up: serving" in self.read_log() and os.path.exists(self.endpoint_file):
                break
            time.sleep(0.1)
        else:
            self._fail("tessera up did not report serving within %d s" % self.start_timeout)
        with open(self.endpoint_file) as f:
            endpoint = f.read().strip()
        self.port = int(endpoint.rsplit(":", 1)[1])
        # The coordinator may listen on 0.0.0.0; clients dial loopback.
        self.target = "127.0.0.1:%d" % self.port
        return self

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def _fail(self, why):
        log = self.read_log()
        self.stop()
        raise AssertionError("%s\n--- cluster log ---\n%s" % (why, log[-6000:]))

    def stop(self):
        """SIGTERM and wait; returns tessera up's exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                code = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print("cluster did not stop within 30 s of SIGTERM; killing it", file=sys.stderr)
                code = None
        harness.kill_tree(self.proc)  # whatever is left in its process group
        self.proc.wait()
        self.proc = None
        self.log.close()
        return code

    def __exit__(self, exc_type, exc, tb):
        log = self.read_log()
        self.stop()
        if exc_type is not None:
            print("--- cluster log ---\n" + log[-6000:], file=sys.stderr)
        self.dir.cleanup()
        return False


def require_serving(tessera):
    """Skip (exit 77) while the serving binaries are not built."""
    missing = serving_binaries(tessera)
    if missing:
        harness.skip("serving binaries not built yet: %s" % ", ".join(missing))


def import_grpc(pydir):
    """grpcio and the generated tessera.v1.inference_pb2 from pydir; skips if not importable."""
    sys.path.insert(0, pydir)
    try:
        import grpc
        from tessera.v1 import inference_pb2
    except ImportError as e:
        harness.skip("python grpcio/protobuf not importable: %s" % e)
    return grpc, inference_pb2
