"""cluster.py — a real local Tessera cluster on loopback for client-facing tests.

    with cluster.Cluster(tessera, groups=2, tp=2) as c:
        run([tessera, "generate", "--server", c.target, ...])

Two ways to start it, both real processes:
  launcher="direct" (default): tessera-coordinator --listen 127.0.0.1:0 --endpoint-file F
      --worker-listen 127.0.0.1:0 --worker-endpoint-file W, then G node groups, each
      `tessera-node --coordinator WORKER_HOST:PORT`, all with a fresh TESSERA_CLUSTER_SECRET
      in their environment (under `mpirun -np N` when
      N > 1); ready when the coordinator has logged G "node group ... attached" lines.
  launcher="up": `tessera up --port 0 --endpoint-file F ...`, which does the same; ready when it
      logs "tessera up: serving".
Leaving the block sends SIGTERM (a clean stop) and, after 30 s, kills the process groups that
are left. The logs are printed when the cluster fails to start or the test body raised.
"""
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

import harness


def bindir(tessera):
    return os.path.dirname(os.path.abspath(tessera))


class Cluster:
    def __init__(self, tessera, model=harness.MODEL_F32, groups=1, tp=1, threads=1,
                 launcher="direct", node_flags=(), start_timeout=180):
        self.tessera = tessera
        self.model = model
        self.groups = groups
        self.tp = tp
        self.threads = threads
        self.launcher = launcher
        self.node_flags = list(node_flags)  # extra tessera-node flags (direct launcher only)
        self.start_timeout = start_timeout
        self.procs = []  # (name, Popen, log path); the first one is stopped first
        self.target = None
        self.port = None

    def _spawn(self, name, cmd, env=None):
        path = os.path.join(self.dir.name, name + ".log")
        with open(path, "w") as log:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env or harness.mpi_env(),
                                 start_new_session=True)
        self.procs.append((name, p, path))
        return path

    def _wait(self, what, ready):
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            for name, p, _ in self.procs:
                if p.poll() is not None:
                    self._fail("%s exited %d before %s" % (name, p.returncode, what))
            if ready():
                return
            time.sleep(0.1)
        self._fail("no %s within %d s" % (what, self.start_timeout))

    def __enter__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="tessera-cluster-")
        endpoint_file = os.path.join(self.dir.name, "endpoint")
        worker_file = os.path.join(self.dir.name, "worker.endpoint")
        threads = ["--threads", str(self.threads)]
        if self.launcher == "up":
            log = self._spawn("up", [self.tessera, "up", "-m", self.model, "--port", "0",
                                     "--groups", str(self.groups), "--tp", str(self.tp),
                                     "--endpoint-file", endpoint_file] + threads)
            self._wait("'tessera up: serving'", lambda: "tessera up: serving" in read(log)
                       and os.path.exists(endpoint_file))
        else:
            # The cluster secret through the environment (tessera up hands it over in a file).
            env = dict(harness.mpi_env(), TESSERA_CLUSTER_SECRET=secrets.token_hex(32))
            log = self._spawn("coordinator", [
                os.path.join(bindir(self.tessera), "tessera-coordinator"), "-m", self.model,
                "--listen", "127.0.0.1:0", "--endpoint-file", endpoint_file,
                "--worker-listen", "127.0.0.1:0", "--worker-endpoint-file", worker_file], env)
            self._wait("endpoint file", lambda: os.path.exists(endpoint_file))
            node = os.path.join(bindir(self.tessera), "tessera-node")
            target = read(worker_file).strip()
            for g in range(self.groups):
                prefix = harness.mpirun_prefix(self.tp) if self.tp > 1 else []
                self._spawn("group%d" % g, prefix + [
                    node, "-m", self.model, "--tp", str(self.tp), "--coordinator", target,
                    "--name", "g%d" % g] + threads + self.node_flags, env)
            self._wait("%d attached groups" % self.groups,
                       lambda: read(log).count("attached from") >= self.groups)
        endpoint = read(endpoint_file).strip()
        self.port = int(endpoint.rsplit(":", 1)[1])
        # The coordinator may listen on 0.0.0.0; clients dial loopback.
        self.target = "127.0.0.1:%d" % self.port
        return self

    def logs(self):
        return "".join("--- %s ---\n%s\n" % (name, read(path)[-4000:])
                       for name, _, path in self.procs)

    def alive(self):
        return all(p.poll() is None for _, p, _ in self.procs)

    def _fail(self, why):
        logs = self.logs()
        self.stop()
        raise AssertionError("%s\n%s" % (why, logs))

    def stop(self):
        """SIGTERM to the coordinator (or tessera up) first, then to what is left; kills what
        has not exited 30 s later. Returns the first process's exit code (None if killed)."""
        first = None
        for i, (name, p, _) in enumerate(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if i == 0:
                try:
                    first = p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    print("%s did not stop within 30 s of SIGTERM" % name, file=sys.stderr)
        deadline = time.time() + 30
        for name, p, _ in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                print("%s did not stop within 30 s; killing it" % name, file=sys.stderr)
            harness.kill_tree(p)  # whatever is left in its process group
            p.wait()
        return first

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            print(self.logs(), file=sys.stderr)
        self.stop()
        self.dir.cleanup()
        return False


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def import_grpc(pydir):
    """grpcio and the generated tessera.v1.inference_pb2 from pydir; skips if not importable."""
    sys.path.insert(0, pydir)
    try:
        import grpc
        from tessera.v1 import inference_pb2
    except ImportError as e:
        harness.skip("python grpcio/protobuf not importable: %s" % e)
    return grpc, inference_pb2


def inference_stubs(grpc, pb, target):
    """A channel to target and callables for tessera.v1.Inference's methods, by name:
    (channel, {"Generate": stream callable, "Health": ..., "ListModels": ..., "Tokenize": ...})."""
    channel = grpc.insecure_channel(target)
    stubs = {"Generate": channel.unary_stream(
        "/tessera.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
        response_deserializer=pb.GenerateResponse.FromString)}
    for name in ("Health", "ListModels", "Tokenize"):
        req, resp = (getattr(pb, name + "Request"), getattr(pb, name + "Response"))
        stubs[name] = channel.unary_unary("/tessera.v1.Inference/" + name,
                                          request_serializer=req.SerializeToString,
                                          response_deserializer=resp.FromString)
    return channel, stubs
