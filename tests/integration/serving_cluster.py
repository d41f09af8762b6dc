"""serving_cluster.py — start a real coordinator and node groups on loopback, talk to them with
Python grpcio (Debian's python3-grpcio; message classes from `protoc --python_out` in the build
tree, generic unary/stream calls, no grpc_tools).

Ports: the coordinator listens on port 0 for the API and for the Worker service and writes the
endpoints to files (--endpoint-file, --worker-endpoint-file); nodes read the worker one
(--coordinator-file), so parallel tests never clash on a port.
"""
import argparse
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import harness


def import_protos(pydir):
    """Returns (grpc, inference_pb2) or exits 77 when grpcio/protobuf are missing."""
    sys.path.insert(0, pydir)
    try:
        import grpc
        from tessera.v1 import inference_pb2
    except ImportError as e:
        harness.skip("python grpcio/protobuf not importable: %s" % e)
    return grpc, inference_pb2


class Cluster:
    def __init__(self, bin_dir, pydir):
        self.bin_dir = bin_dir
        self.grpc, self.pb = import_protos(pydir)
        self._tmp = None
        self.procs = []
        self.coordinator = None
        self.endpoint = None
        self.channel = None
        self.secret = self.secret_file = None  # the cluster secret, made by start_coordinator
        self.api_key = None  # sent with every call when set (--api-key-file, TESSERA_API_KEY)

    @property
    def tmp(self):
        """The directory of this run's logs, made on first use (a client-only Cluster makes none)."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="tessera-serving-")
        return self._tmp

    # ---- processes ----

    def _spawn(self, cmd, log_name, env=None):
        log = open(os.path.join(self.tmp, log_name), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=env)
        p.log_path = log.name
        self.procs.append(p)
        return p

    def start_coordinator(self, *extra, env=None):
        ep_file = os.path.join(self.tmp, "endpoint")
        worker_file = os.path.join(self.tmp, "worker.endpoint")
        for old in (ep_file, worker_file):
            if os.path.exists(old):
                os.remove(old)  # a previous coordinator's
        self.secret_file = os.path.join(self.tmp, "cluster.secret")
        if not os.path.exists(self.secret_file):
            self.secret = write_secret(self.secret_file)
        cmd = [os.path.join(self.bin_dir, "tessera-coordinator"), "--listen", "127.0.0.1:0",
               "--endpoint-file", ep_file, "--worker-listen", "127.0.0.1:0",
               "--worker-endpoint-file", worker_file, "--cluster-secret-file", self.secret_file,
               "-m", harness.MODEL_F32] + list(extra)
        self.coordinator = self._spawn(cmd, "coordinator.log", env)
        if not harness.wait_for(lambda: os.path.exists(ep_file), 30):
            raise AssertionError("the coordinator wrote no endpoint file:\n" + self.log(self.coordinator))
        with open(ep_file) as f:
            self.endpoint = f.read().strip()
        with open(worker_file) as f:
            self.worker_endpoint = f.read().strip()
        self.endpoint_file = ep_file
        self.worker_endpoint_file = worker_file
        self.channel = self.grpc.insecure_channel(self.endpoint)
        return self.coordinator

    def start_node(self, name, *extra, np=0, tp=0):
        cmd = [os.path.join(self.bin_dir, "tessera-node"), "--coordinator-file",
               self.worker_endpoint_file, "--cluster-secret-file", self.secret_file,
               "--name", name, "-m", harness.MODEL_F32, "--threads", "1"] + list(extra)
        env = None
        if np:
            cmd = harness.mpirun_prefix(np) + cmd + ["--tp", str(tp or np)]
            env = harness.mpi_env()
        log = open(os.path.join(self.tmp, "node-%s.log" % name), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=env)
        p.log_path = log.name
        p.node_name = name  # stop_node finds it by this, never by its command line
        self.procs.append(p)
        return p

    def stop_node(self, name, timeout=30):
        """Stops (SIGTERM, then waits for) the node started with this --name."""
        for p in self.procs:
            if getattr(p, "node_name", None) == name and p.poll() is None:
                p.terminate()
                p.wait(timeout=timeout)

    def log(self, p):
        if p is None:  # a client-only cluster object (the processes run elsewhere)
            return "(not started here)"
        try:
            with open(p.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def log_full(self, p):
        """The whole log of a process this Cluster started."""
        with open(p.log_path, errors="replace") as f:
            return f.read()

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                # `tessera up` puts its children in their own process groups: kill them too.
                for pid in descendants(p.pid):
                    try:
                        os.killpg(pid, SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                harness.kill_tree(p)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.channel:
            self.channel.close()

    def remove_logs(self):
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # ---- calls ----

    def _unary(self, method, req, resp_cls, timeout=10):
        call = self.channel.unary_unary("/tessera.v1.Inference/" + method,
                                        request_serializer=req.SerializeToString,
                                        response_deserializer=resp_cls.FromString)
        return call(req, timeout=timeout, metadata=self.metadata())

    def metadata(self):
        """The calls' metadata: the API key (self.api_key) when the coordinator wants one."""
        return [("authorization", "Bearer " + self.api_key)] if self.api_key else None

    def health(self):
        return self._unary("Health", self.pb.HealthRequest(), self.pb.HealthResponse)

    def list_models(self):
        return self._unary("ListModels", self.pb.ListModelsRequest(), self.pb.ListModelsResponse)

    def generate_call(self, timeout=60, **fields):
        call = self.channel.unary_stream(
            "/tessera.v1.Inference/Generate",
            request_serializer=self.pb.GenerateRequest.SerializeToString,
            response_deserializer=self.pb.GenerateResponse.FromString)
        return call(self.pb.GenerateRequest(**fields), timeout=timeout, metadata=self.metadata())

    def generate(self, timeout=60, **fields):
        """Runs a whole stream: (text, token ids, messages) or raises grpc.RpcError."""
        msgs = list(self.generate_call(timeout=timeout, **fields))
        text = "".join(m.text for m in msgs)
        ids = [t for m in msgs for t in m.token_ids]
        return text, ids, msgs

    def status_of(self, timeout=60, **fields):
        """The gRPC status code of a Generate call (OK when it succeeds) and its details."""
        try:
            self.generate(timeout=timeout, **fields)
            return self.grpc.StatusCode.OK, ""
        except self.grpc.RpcError as e:
            return e.code(), e.details()

    def wait_groups(self, n, timeout=60):
        """Waits until Health lists exactly n groups; returns the last HealthResponse."""
        last = [None]

        def ok():
            try:
                last[0] = self.health()
            except self.grpc.RpcError:
                return False
            return len(last[0].groups) == n

        if not harness.wait_for(ok, timeout, 0.1):
            raise AssertionError("Health never showed %d groups: %s\ncoordinator log:\n%s"
                                 % (n, last[0], self.log(self.coordinator)))
        return last[0]

    def wait_kv_idle(self, timeout=15):
        """Waits until every group reports all its KV blocks free and nothing running."""
        def idle():
            h = self.health()
            return all(g.kv_blocks_free == g.kv_blocks_total and g.running == 0 and g.waiting == 0
                       for g in h.groups)
        return harness.wait_for(idle, timeout, 0.05)


def write_secret(path):
    """A fresh cluster secret in a new file of mode 0600, as tessera up makes one; returns it."""
    secret = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


class FakeGroup:
    """A node group leader in this process: a raw grpcio client of tessera.v1.Worker/Attach that
    registers like tessera-node, records every message the coordinator sends (received), and
    hands each Submit to on_submit(group, submit). target: the Worker listener by default;
    metadata: sent with the call (default: the cluster's secret, as tessera-node sends it).
    ended is set with code/details when the stream is over."""

    def __init__(self, c, wpb, name, on_submit=None, target=None, metadata=None):
        if metadata is None:
            metadata = (("tessera-cluster-secret", c.secret),)
        self.wpb = wpb
        self.name = name
        self.on_submit = on_submit
        self.submits = []
        self.received = []
        self.welcomed = threading.Event()
        self.ended = threading.Event()
        self.code = self.details = None
        self.out = queue.Queue()
        self.channel = c.grpc.insecure_channel(target or c.worker_endpoint)
        attach = self.channel.stream_stream(
            "/tessera.v1.Worker/Attach", request_serializer=wpb.NodeMessage.SerializeToString,
            response_deserializer=wpb.CoordinatorMessage.FromString)
        self.out.put(wpb.NodeMessage(register=wpb.Register(
            group_name=name, role="mixed", model_name="fake", vocab_size=512,
            context_length=512, tp=1, kv_blocks_total=64, block_size=16, max_batch_seqs=8,
            host="fake-" + name, model_fingerprint="fake")))
        self.call = attach(self._outgoing(), metadata=metadata)
        threading.Thread(target=self._read, daemon=True).start()

    def _outgoing(self):
        while True:
            m = self.out.get()
            if m is None:
                return
            yield m

    def _read(self):
        try:
            for m in self.call:
                self.received.append(m)
                kind = m.WhichOneof("msg")
                if kind == "welcome":
                    self.welcomed.set()
                elif kind == "submit":
                    self.submits.append(m.submit)
                    if self.on_submit:
                        self.on_submit(self, m.submit)
        except Exception:  # the stream ended (refused, or cancelled at the end of the test)
            pass
        self.code, self.details = self.call.code(), self.call.details()
        self.ended.set()

    def event(self, **fields):
        self.out.put(self.wpb.NodeMessage(events=self.wpb.TokenEvents(
            events=[self.wpb.TokenEvent(**fields)])))

    def close(self):
        self.out.put(None)
        self.call.cancel()
        self.channel.close()


def stream_until(c, n_tokens, **fields):
    """Opens a stream, reads n_tokens, returns (call, iterator)."""
    call = c.generate_call(timeout=120, **fields)
    it = iter(call)
    got = 0
    while got < n_tokens:
        got += len(next(it).token_ids)
    return call, it


def read_ids(it, n_tokens):
    """Reads messages of a stream until it has at least n_tokens tokens: their ids."""
    ids = []
    while len(ids) < n_tokens:
        ids.extend(next(it).token_ids)
    return ids


def rest_of(c, it):
    """Reads a stream to its end: (token ids, (status code, details)), OK when it ended well."""
    ids = []
    try:
        for m in it:
            ids.extend(m.token_ids)
        return ids, (c.grpc.StatusCode.OK, "")
    except c.grpc.RpcError as e:
        return ids, (e.code(), e.details())


def drain_status(c, it, timeout):
    """Reads the rest of a stream in a thread; returns (code, details, seconds) or None if it
    did not end within timeout."""
    out = {}

    def run():
        t = time.time()
        try:
            for _ in it:
                pass
            out["r"] = (c.grpc.StatusCode.OK, "", time.time() - t)
        except c.grpc.RpcError as e:
            out["r"] = (e.code(), e.details(), time.time() - t)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    return out.get("r")


def descendants(pid):
    """Every process below pid (from /proc), children first."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    out = []
    for k in kids:
        out += [k] + descendants(k)
    return out


def start_up(c, *flags):
    """`tessera up` on port 0 with the bundled model and `flags`, started as a process of c;
    returns it once it logs that it serves, with c.endpoint and c.channel set."""
    ep = os.path.join(c.tmp, "endpoint")
    if os.path.exists(ep):
        os.remove(ep)
    log = open(os.path.join(c.tmp, "up.log"), "w")
    p = subprocess.Popen([os.path.join(c.bin_dir, "tessera"), "up", "-m", harness.MODEL_F32,
                          "--port", "0", "--endpoint-file", ep, "--threads", "1"] + list(flags),
                         stdout=log, stderr=subprocess.STDOUT, env=harness.mpi_env(),
                         start_new_session=True)
    p.log_path = log.name
    c.procs.append(p)
    ok = harness.wait_for(lambda: "tessera up: serving" in c.log(p) or p.poll() is not None, 120)
    if not ok or p.poll() is not None:
        raise AssertionError("tessera up did not start:\n" + c.log(p))
    with open(ep) as f:
        c.endpoint = f.read().strip()
    c.channel = c.grpc.insecure_channel(c.endpoint)
    return p


def from_args():
    """The Cluster of a test run as `test_serving_X.py --bin-dir BUILD/bin --pydir PYDIR`."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--pydir", required=True)
    args = ap.parse_args()
    return Cluster(args.bin_dir, args.pydir)


def finish(c, f):
    """Stops everything; prints the logs when a check failed (else removes them); exits. Called
    in a `finally:`, it also counts an exception that is on its way out as a failure."""
    if sys.exc_info()[0] is not None:
        f.check(False, "exception: " + "".join(traceback.format_exception(*sys.exc_info())))
    c.stop_all()
    if f.failed:
        for p in c.procs:
            print("---- %s\n%s" % (p.log_path, c.log(p)))
    else:
        c.remove_logs()
    f.finish()


def signal_proc(p, sig):
    signal_proc_pid(p.pid, sig)


def signal_proc_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_exit(p, timeout):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


SIGTERM = signal.SIGTERM
SIGKILL = signal.SIGKILL
SIGSTOP = signal.SIGSTOP
SIGCONT = signal.SIGCONT
SIGINT = signal.SIGINT
