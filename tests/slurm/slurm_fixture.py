"""slurm_fixture.py — a real single-node Slurm cluster for the tests in tests/slurm/.

Not a test itself. SlurmCluster() starts, in a private temporary directory:
  - munged as user `munge` on its own socket (when munge cannot start, the cluster falls back to
    AuthType=auth/none + CredType=cred/none, which Slurm 22.05 also accepts);
  - slurmctld -i (ignoring any saved state) and slurmd -N localhost, both on free TCP ports, so a
    second cluster (another test, another user) on the same machine does not collide;
and waits until `sinfo` shows the node idle. Every daemon writes its pid file, logs and state
under that directory; stop() cancels every job, waits for an empty queue and kills the daemons
by their pid files (zombies count as gone). stop() also runs from atexit and on SIGTERM/SIGINT,
so a failing or interrupted test does not leave daemons behind.

The node has CPUs=$(nproc) (at least 2: with one core the count is declared with
SlurmdParameters=config_overrides) and the partition OverSubscribe=FORCE:4, so a 2-rank job fits
on 2 cores and array tasks may share them. MpiDefault=pmix.

Client commands (sbatch, squeue, scontrol, ...) go through cluster.cmd(), which exports
SLURM_CONF and wraps them in `timeout` (a client without a reachable controller retries for 60 s).

When the Slurm packages are missing, ensure_installed() tries
`apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge` (as root) and
otherwise raises Unavailable; tests turn that into exit status 77 (ctest: skipped) and print
"skipped: <reason>".
"""
import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SBIN = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


class Unavailable(Exception):
    """Slurm cannot be run here; the message says why (tests exit 77 with it)."""


def _which(name):
    for d in SBIN + os.environ.get("PATH", "").split(":"):
        p = os.path.join(d, name)
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _missing():
    return [n for n in ("slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol", "munged")
            if not _which(n)]


def ensure_installed():
    """Installs the Debian Slurm packages when a program is missing; raises Unavailable."""
    missing = _missing()
    if not missing:
        return
    if os.geteuid() != 0:
        raise Unavailable(f"Slurm is not installed ({', '.join(missing)} missing) and this is "
                          "not root, so apt-get cannot install it")
    if not shutil.which("apt-get"):
        raise Unavailable(f"Slurm is not installed ({', '.join(missing)} missing) and there is "
                          "no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + PACKAGES,
                       env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:  # maybe the package lists are stale: update once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                           + PACKAGES, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or _missing():
        raise Unavailable("Slurm is not installed and `apt-get install "
                          + " ".join(PACKAGES) + "` failed: "
                          + (r.stderr.strip().splitlines() or ["?"])[-1])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid):
    """True while pid exists and is not a zombie (kill -0 succeeds on zombies)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2] != "Z"
    except (OSError, ValueError):
        return False


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class SlurmCluster:
    """A started single-node cluster. Use as a context manager, or call stop()."""

    def __init__(self, keep=False, cpus=None):
        ensure_installed()
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="sl-slurm-")
        os.chmod(self.dir, 0o755)  # munged runs as user munge and must reach its socket dir
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.auth = None
        self.pidfiles = {}
        self.stopped = False
        self.cpus = cpus or max(os.cpu_count() or 1, 1)
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in list(self.env):  # a test run inside a Slurm job must not leak the outer job
            if k.startswith("SLURM_") and k != "SLURM_CONF":
                del self.env[k]
        atexit.register(self.stop)
        self._old_handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # ---- start ---------------------------------------------------------------------------

    def _on_signal(self, sig, frame):
        self.stop()
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    def _start_munge(self):
        """Starts munged as user munge; returns the socket path or None (then auth/none)."""
        munged = _which("munged")
        if not munged:
            return None
        try:
            pw = pwd.getpwnam("munge")
        except KeyError:
            return None
        d = os.path.join(self.dir, "munge")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        key = "/etc/munge/munge.key"
        if not os.path.exists(key):
            mk = _which("mungekey")
            if mk:
                subprocess.run(["runuser", "-u", "munge", "--", mk, "--create", "--keyfile", key],
                               capture_output=True, timeout=30)
        if not os.path.exists(key):
            return None
        sock = os.path.join(d, "munge.sock")
        pidf = os.path.join(d, "munged.pid")
        r = subprocess.run(["runuser", "-u", "munge", "--", munged, f"--socket={sock}",
                            f"--pid-file={pidf}", f"--log-file={d}/munged.log",
                            f"--seed-file={d}/munged.seed"],
                           capture_output=True, text=True, timeout=30)
        self.pidfiles["munged"] = pidf
        if r.returncode != 0:
            self.munge_error = (r.stderr or r.stdout).strip()
            return None
        # munged daemonises once its socket is ready; check it answers
        unmunge, munge = _which("unmunge"), _which("munge")
        if munge and unmunge:
            p = subprocess.run(f"{munge} -S {sock} -n | {unmunge} -S {sock}", shell=True,
                               capture_output=True, timeout=30)
            if p.returncode != 0:
                self.munge_error = p.stderr.decode(errors="replace").strip()
                return None
        return sock

    def _write_conf(self, munge_sock):
        d = self.dir
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        cpus = max(self.cpus, 2)
        if munge_sock:
            auth = ["AuthType=auth/munge", "CredType=cred/munge",
                    f"AuthInfo=socket={munge_sock},cred_expire=10"]
            self.auth = "munge"
        else:
            auth = ["AuthType=auth/none", "CredType=cred/none"]
            self.auth = "none"
        lines = [
            "# single-node test cluster written by tests/slurm/slurm_fixture.py",
            f"ClusterName=sltest{os.getpid()}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            *auth,
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=pmix",
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=300",
            "SchedulerParameters=sched_interval=2",
            "JobRequeue=1",
        ]
        if cpus > self.cpus:
            lines.append("SlurmdParameters=config_overrides")
        lines += [
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=FORCE:4",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.pidfiles["slurmctld"] = f"{d}/slurmctld.pid"
        self.pidfiles["slurmd"] = f"{d}/slurmd.pid"

    def _start(self):
        self.munge_error = None
        sock = self._start_munge()
        self._write_conf(sock)
        for prog, args in (("slurmctld", ["-i"]), ("slurmd", ["-N", "localhost"])):
            r = subprocess.run([_which(prog)] + args + ["-f", self.conf], env=self.env,
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise Unavailable(f"{prog} did not start ({r.returncode}): "
                                  f"{(r.stderr or r.stdout).strip()} {self.log_tail(prog)}")
        end = time.time() + 60
        state = ""
        while time.time() < end:
            r = self.cmd(["sinfo", "-h", "-N", "-o", "%t"], timeout=10)
            state = r.stdout.strip()
            if r.returncode == 0 and state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.2)
        raise Unavailable(f"the node did not become idle in 60 s (sinfo: {state!r}); "
                          f"{self.log_tail('slurmctld')} {self.log_tail('slurmd')}")

    # ---- use -----------------------------------------------------------------------------

    def cmd(self, args, timeout=60, env=None, cwd=None):
        """Runs a Slurm client command (list) under `timeout`; returns CompletedProcess."""
        e = dict(self.env)
        if env:
            e.update(env)
        return subprocess.run(["timeout", "-k", "5", str(timeout)] + list(args), env=e, cwd=cwd,
                              capture_output=True, text=True, errors="replace")

    def log_tail(self, prog, n=15):
        path = os.path.join(self.dir, f"{prog}.log")
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()[-n:]
            return f"\n--- {path} (last {n} lines):\n" + "\n".join(lines)
        except OSError:
            return ""

    def job_info(self, jobid):
        """`scontrol show job -o JOBID` as a dict of key=value (first record only)."""
        r = self.cmd(["scontrol", "-o", "show", "job", str(jobid)], timeout=20)
        info = {}
        for line in r.stdout.splitlines()[:1]:
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    info.setdefault(k, v)
        return info

    def jobs(self, jobid):
        """All records of a job (array tasks included) as a list of dicts."""
        r = self.cmd(["scontrol", "-o", "show", "job", str(jobid)], timeout=20)
        out = []
        for line in r.stdout.splitlines():
            info = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    info.setdefault(k, v)
            if info:
                out.append(info)
        return out

    def wait_state(self, jobid, states, timeout=180, kick=True):
        """Waits until every record of the job is in one of `states`; returns the records (or
        None on timeout). kick: a PENDING job with a start time in the future (a requeued one)
        is released with `scontrol update jobid=N starttime=now` -- but only 3 s after it was
        first seen waiting. Slurm revokes the old credential when it requeues a job and compares
        times in whole seconds: a restart within the same second as the revocation is killed
        ("Killing non-startable batch job: Job credential revoked") and the job ends FAILED.
        (Slurm's own delay, cred_expire + a margin, avoids that; this only shortens it.)"""
        end = time.time() + timeout
        recs = []
        waiting_since = {}
        while time.time() < end:
            recs = self.jobs(jobid)
            if recs and all(r.get("JobState") in states for r in recs):
                return recs
            if kick:
                for r in recs:
                    if r.get("JobState") == "PENDING" and r.get("Reason") == "BeginTime":
                        first = waiting_since.setdefault(r["JobId"], time.time())
                        if time.time() - first >= 3:
                            self.cmd(["scontrol", "update", f"jobid={r['JobId']}",
                                      "starttime=now"], timeout=20)
                            waiting_since[r["JobId"]] = time.time() + 30  # once
                    else:
                        waiting_since.pop(r.get("JobId"), None)
            time.sleep(0.3)
        return None

    # ---- stop ----------------------------------------------------------------------------

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        try:
            if os.path.exists(self.conf) and _alive(_read_pid(self.pidfiles.get("slurmctld", ""))
                                                    or -1):
                user = pwd.getpwuid(os.geteuid()).pw_name
                self.cmd(["scancel", "-u", user], timeout=20)
                end = time.time() + 30
                while time.time() < end:
                    r = self.cmd(["squeue", "-h", "-o", "%i %T"], timeout=10)
                    if r.returncode != 0 or not r.stdout.strip():
                        break
                    time.sleep(0.3)
        finally:
            pids = []
            for name in ("slurmd", "slurmctld", "munged"):
                pid = _read_pid(self.pidfiles.get(name, ""))
                if pid and _alive(pid):
                    try:
                        os.kill(pid, signal.SIGTERM)
                        pids.append(pid)
                    except ProcessLookupError:
                        pass
            end = time.time() + 15
            while time.time() < end and any(_alive(p) for p in pids):
                time.sleep(0.1)
            for p in pids:
                if _alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for sig, h in self._old_handlers.items():
                try:
                    signal.signal(sig, h)
                except (ValueError, TypeError):
                    pass
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


if __name__ == "__main__":  # a quick manual check: start, show the node, stop
    with SlurmCluster() as c:
        print("auth:", c.auth, "dir:", c.dir)
        print(c.cmd(["sinfo"]).stdout)
        r = c.cmd(["srun", "-n2", "hostname"], timeout=60)
        print(r.returncode, r.stdout, r.stderr)
