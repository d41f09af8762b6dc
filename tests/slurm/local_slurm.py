"""local_slurm.py — a real Slurm for the tests (local_slurm.sh does the work) and what the
Slurm tests share: submitting a Tessera job, waiting for its endpoint, talking to it with the
Python grpcio client of tests/integration/serving_cluster.py, and checking that scancel leaves
no process behind.

    with LocalSlurm(nodes=2) as slurm:
        job = slurm.submit(["-N2", "--ntasks-per-node=2"], "slurm/tessera.sbatch", env)
"""
import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
import serving_cluster  # noqa: E402

SOURCE_DIR = harness.SOURCE_DIR


class Namespaces:
    """Network namespaces <prefix>-<host> ("hosts"), each with eth0 at 10.213.N.(i+1)/24 on a
    bridge in <prefix>-br; the addresses exist only inside them. Skips (77) where namespaces
    cannot be created."""

    def __init__(self, hosts):
        self.hosts = tuple(hosts)
        self.prefix = "ts%d" % os.getpid()
        net = random.randrange(1, 250)
        self.addr = {h: "10.213.%d.%d" % (net, i + 1) for i, h in enumerate(self.hosts)}
        self.created = []

    def ns(self, host):
        return "%s-%s" % (self.prefix, host)

    def ip(self, *args, ns=None, check=True):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip"] + list(args)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and p.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(cmd), p.stdout.strip()))
        return p

    def __enter__(self):
        try:
            for h in self.hosts + ("br",):
                self.ip("netns", "add", self.ns(h))
                self.created.append(self.ns(h))
                self.ip("link", "set", "lo", "up", ns=self.ns(h))
            br = self.ns("br")
            self.ip("link", "add", "br0", "type", "bridge", ns=br)
            self.ip("link", "set", "br0", "up", ns=br)
            for i, h in enumerate(self.hosts):
                a, b = "%sv%d" % (self.prefix, i), "%sp%d" % (self.prefix, i)
                self.ip("link", "add", a, "type", "veth", "peer", "name", b)
                self.ip("link", "set", a, "netns", self.ns(h))
                self.ip("link", "set", b, "netns", br)
                self.ip("link", "set", a, "name", "eth0", ns=self.ns(h))
                self.ip("addr", "add", self.addr[h] + "/24", "dev", "eth0", ns=self.ns(h))
                self.ip("link", "set", "eth0", "up", ns=self.ns(h))
                self.ip("link", "set", b, "master", "br0", ns=br)
                self.ip("link", "set", b, "up", ns=br)
        except (RuntimeError, OSError) as e:
            self.__exit__(None, None, None)
            harness.skip("network namespaces cannot be created here: %s" % e)
        return self

    def __exit__(self, *exc):
        for ns in reversed(self.created):
            self.ip("netns", "del", ns, check=False)  # its veth ends go with it
        return False

    def exec_prefix(self, host):
        return ["ip", "netns", "exec", self.ns(host)]

    def eth0_bytes(self, host):
        p = subprocess.run(self.exec_prefix(host) + ["cat", "/sys/class/net/eth0/statistics/rx_bytes",
                                                     "/sys/class/net/eth0/statistics/tx_bytes"],
                           stdout=subprocess.PIPE, text=True)
        return sum(int(x) for x in p.stdout.split())


def ports_free(base, n):
    for port in range(base, base + n):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def skip_unless_possible():
    if os.geteuid() != 0:
        harness.skip("a local Slurm needs root (slurmd runs jobs as any user)")
    missing = [b for b in ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "unshare")
               if not shutil.which(b)]
    if missing:
        harness.skip("slurmctld cannot start here: %s not installed (apt-get install slurm-wlm "
                     "munge)" % ", ".join(missing))


class LocalSlurm:
    """nodes: slurmd "nodes" n1..nN. nsx: a Namespaces with hosts n1..nN, to put each node (and
    the controller, on n1) on its own network namespace; Slurm commands then run in n1's."""

    def __init__(self, nodes=2, nsx=None):
        self.nodes = nodes
        self.nsx = nsx
        self.dir = tempfile.mkdtemp(prefix="tessera-slurm-")
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("SLURM_"):
                del self.env[k]
        self.env["SLURM_CONF"] = os.path.join(self.dir, "slurm.conf")
        self.env["SLURM_TEST_NODES"] = str(nodes)
        for _ in range(50):
            base = random.randrange(20000, 40000)
            if ports_free(base, nodes + 1):
                break
        self.env["SLURM_TEST_PORT"] = str(base)
        self.prefix = []
        if nsx:
            self.env["SLURM_TEST_NETNS"] = nsx.prefix
            self.env["SLURM_TEST_ADDRS"] = " ".join(nsx.addr["n%d" % (i + 1)] for i in range(nodes))
            self.prefix = ["nsenter", "--net=/run/netns/" + nsx.ns("n1")]

    def _script(self, cmd, timeout=60):
        return subprocess.run([os.path.join(HERE, "local_slurm.sh"), cmd, self.dir],
                              env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)

    def __enter__(self):
        p = self._script("up")
        if p.returncode != 0:
            ctld_ok = subprocess.run(self.prefix + ["scontrol", "ping"], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True).stdout
            log = self.logs()
            self.__exit__(None, None, None)
            if "UP" not in ctld_ok:
                harness.skip("slurmctld cannot start here:\n%s\n%s" % (p.stdout[-2000:], log))
            raise AssertionError("slurmctld runs but the slurmd nodes did not come up:\n%s\n%s"
                                 % (p.stdout[-2000:], log))
        return self

    def __exit__(self, *exc):
        self._script("down")
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def logs(self):
        out = []
        logdir = os.path.join(self.dir, "log")
        for name in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []:
            with open(os.path.join(logdir, name), errors="replace") as f:
                out.append("--- %s ---\n%s" % (name, f.read()[-1500:]))
        return "\n".join(out)

    def run(self, cmd, timeout=30, check=True):
        return harness.run(self.prefix + cmd, timeout=timeout, env=self.env, check=check)

    def submit(self, sbatch_args, script, job_env, workdir):
        env = dict(self.env)
        env.update(job_env)
        p = harness.run(self.prefix + ["sbatch", "--parsable", "--chdir", workdir,
                         "--output", os.path.join(workdir, "tessera-%j.out")] + sbatch_args
                        + [script], env=env, timeout=30)
        return p.stdout.strip().split(";")[0]

    def stray_processes(self):
        """Processes of this cluster other than its daemons: anything whose environment names
        this cluster's slurm.conf (job scripts, steps, srun, tasks)."""
        daemons = set()
        rundir = os.path.join(self.dir, "run")
        for name in os.listdir(rundir) if os.path.isdir(rundir) else []:
            try:
                with open(os.path.join(rundir, name)) as f:
                    daemons.add(int(f.read().strip()))
            except (OSError, ValueError):
                pass
        marker = ("SLURM_CONF=" + self.env["SLURM_CONF"]).encode() + b"\0"
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in daemons or int(pid) == os.getpid():
                continue
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if marker not in f.read():
                        continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            # slurmscriptd is slurmctld's own helper; the rest are this test's queries.
            if cmd and not cmd.endswith("slurmscriptd") and not cmd.startswith(
                    ("pgrep", "squeue", "scancel", "scontrol", "sinfo", "nsenter")):
                found.append("%s %s" % (pid, cmd))
        return found

    def job_state(self, job):
        p = self.run(["squeue", "-h", "-j", job, "-o", "%T"], check=False)
        states = p.stdout.split()
        return states[0] if states else ""


def tessera_job_env(bin_dir, workdir, **extra):
    """Settings of the sbatch scripts for a job on this machine's simulated nodes."""
    env = {
        "TESSERA_BIN_DIR": bin_dir,
        "TESSERA_MODEL": harness.MODEL_F32,
        "TESSERA_PORT": "0",                   # any free port: tests run in parallel
        "TESSERA_ADVERTISE_HOST": "127.0.0.1", # the simulated hosts n1, n2 are not in DNS
        "TESSERA_THREADS": "1",
        "TESSERA_GRACE_S": "15",
        "TMPDIR": workdir,                     # the job's own files (and pgrep's handle) there
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_mpi_yield_when_idle": "1",
    }
    env.update(extra)
    return env


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_endpoint(slurm, job, workdir, timeout=120):
    """The endpoint the job published, or raises with the job output."""
    path = os.path.join(workdir, "tessera-%s.endpoint" % job)
    out = os.path.join(workdir, "tessera-%s.out" % job)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and read(path).strip():
            return read(path).strip()
        if slurm.job_state(job) not in ("PENDING", "RUNNING", "CONFIGURING", ""):
            break
        time.sleep(0.2)
    raise AssertionError("job %s published no endpoint (state %r):\n%s\n%s"
                         % (job, slurm.job_state(job), read(out)[-4000:], slurm.logs()))


def job_processes(workdir):
    """Processes whose command line names the job's directory (srun, coordinator, nodes)."""
    p = subprocess.run(["pgrep", "-a", "-f", workdir], stdout=subprocess.PIPE, text=True)
    return [line for line in p.stdout.splitlines() if "pgrep" not in line]


def scancel_and_check_gone(slurm, job, workdir, f, timeout=90, scancel_args=()):
    """scancel the job; every process of it must be gone and the endpoint file removed."""
    before = job_processes(workdir)
    f.check(len(before) > 0, "job %s: its processes are visible before scancel" % job)
    slurm.run(["scancel"] + list(scancel_args) + [job])
    gone = harness.wait_for(lambda: slurm.job_state(job) == "" and not job_processes(workdir)
                            and not slurm.stray_processes(), timeout, 0.2)
    out = read(os.path.join(workdir, "tessera-%s.out" % job))
    f.check(gone, "job %s: after scancel no process is left (left: %s %s)"
            % (job, job_processes(workdir), slurm.stray_processes()))
    f.check("SIGTERM received" in out and "stopped" in out,
            "job %s: the script handled SIGTERM and stopped its children" % job)
    f.check(not os.path.exists(os.path.join(workdir, "tessera-%s.endpoint" % job)),
            "job %s: the endpoint file is removed" % job)
    if not gone:
        print(out[-4000:])
    return out


def connect(pydir, endpoint):
    """serving_cluster's grpcio client (health, generate, wait_groups), pointed at a running
    cluster's endpoint; it starts nothing."""
    c = serving_cluster.Cluster(os.path.dirname(sys.executable), pydir)
    c.channel = c.grpc.insecure_channel(endpoint)
    return c


def job_test(prefix, body, netns=False):
    """The frame of a Slurm test: --bin-dir/--pydir, skips, a job directory and a local Slurm of
    two nodes (netns: each in its own network namespace, plus a "client" namespace);
    body(slurm, workdir, args, failures) submits and checks."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--pydir", required=True)
    args = ap.parse_args()
    skip_unless_possible()
    serving_cluster.import_protos(args.pydir)
    f = harness.Failures()
    workdir = tempfile.mkdtemp(prefix=prefix)
    try:
        if netns:
            with Namespaces(("n1", "n2", "client")) as nsx, LocalSlurm(2, nsx) as slurm:
                body(slurm, workdir, args, f)
        else:
            with LocalSlurm(nodes=2) as slurm:
                body(slurm, workdir, args, f)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    f.finish()
