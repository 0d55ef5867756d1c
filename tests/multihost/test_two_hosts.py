"""test_two_hosts.py — a real shardline job across two hosts, over TCP between them.

Purpose: exercise the path between nodes that a single-machine mpirun never takes (Open MPI's
rsh launcher, remote daemons, the TCP BTL, one-sided windows and all-reduces between nodes)
with the real binary, and check that a job spread over two hosts gives the predictions of a
job on one host.

The two hosts are made on this machine:
  - two network namespaces, sl-mh-<pid>-a and sl-mh-<pid>-b, each with its loopback up, joined
    by a veth pair slmh<pid>a <-> slmh<pid>b carrying 10.231.0.1/30 and 10.231.0.2/30 (the
    pair exists only between these two namespaces; the root namespace's interfaces and routes
    are never touched);
  - mpirun runs inside the first namespace with a hostfile naming hostA and hostB (one slot
    each) and Open MPI's rsh agent set to tests/multihost/netns-agent.sh, which starts each
    remote daemon inside the host's namespace under its own UTS namespace whose host name is
    hostA or hostB; `--mca btl tcp,self` and `--mca btl_tcp_if_include / oob_tcp_if_include
    10.231.0.0/30` keep all MPI traffic on the veth pair.

Checks (example MLP of examples/mlp, data from examples/mlp/make_data.py, 2 ranks):
  - a job with Open MPI's own configuration (no extra MCA options) runs across the two hosts;
  - --tp 2 (the tensor-parallel all-reduce crosses the veth): status 0, placement lines with
    two distinct hosts hostA and hostB, node-local rank 0/1 on each, the two TP ranks on
    different hosts, all-reduce over MPI; at least rows * 64 * 4 bytes went over the veth
    pair; predictions equal a single-host `mpirun -np 2 --tp 2` run (relative 1e-6) and the
    float64 reference of the model (relative 1e-4); part files cover every row;
  - --tp 1 (data parallel across the hosts): the same placement checks, predictions bitwise
    equal to a single-host `mpirun -np 2 --tp 1` run with the same --batch-size;
  - the namespaces are gone at the end (they are removed on failure and on SIGTERM/SIGINT too).

Exit status: 0 when every check passed, 1 on any failure, 77 (ctest: skipped) with the line
"skipped: <reason>" when two hosts cannot be made here: not root, `ip` or `unshare` missing,
`ip netns add` or the veth pair refused, or Open MPI unable to start a trivial program on the
two hosts. A skip is never a pass.

Environment: as tests/mpi/sl_e2e.py (SHARDLINE, SL_SOURCE_DIR, MPIEXEC, SL_DEVICE,
SL_KEEP_TMP). Run by hand (as root): /usr/bin/python3 tests/multihost/test_two_hosts.py
Leftovers of a run killed with SIGKILL: `ip netns list | grep sl-mh-`, then
`ip netns pids NS` / `ip netns del NS` for the namespaces of a process that no longer exists.
"""
import glob
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mpi"))
import numpy as np  # noqa: E402

import sl_e2e as e2e  # noqa: E402

NAME = "test_two_hosts"
SUBNET = "10.231.0.0/30"
ADDRS = ("10.231.0.1/30", "10.231.0.2/30")
HOSTS = ("hostA", "hostB")
SHARDS, ROWS, SEED = 3, 3000, 11
UNIT_ROWS, BATCH = 500, 256
HIDDEN = 64  # width of the layer pair whose row-parallel half ends in the all-reduce
EXAMPLE = os.path.join(e2e.SOURCE_DIR, "examples", "mlp")
PLACEMENT_RE = re.compile(r"^shardline: rank (\d+)/(\d+) host (\S+) local (\d+)/(\d+) "
                          r"tp (\d+)/(\d+) dp (\d+)/(\d+)")
TRANSPORT_RE = re.compile(r"^shardline: \d+ TP group\(s\) of \d+ rank\(s\), all-reduce over (\S+)")


class Skip(Exception):
    """Two hosts cannot be made on this machine; the message says why."""


class Interrupted(Exception):
    pass


def sh(cmd, timeout=30):
    """Runs a short command; returns (status, stdout + stderr)."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", timeout=timeout)
        return p.returncode, p.stdout.strip()
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    except OSError as ex:
        return None, str(ex)


class TwoHosts:
    """Two network namespaces joined by a veth pair; teardown() removes what setup() made."""

    def __init__(self, tag):
        self.ns = (f"sl-mh-{tag}-a", f"sl-mh-{tag}-b")
        self.ifs = (f"slmh{tag}a", f"slmh{tag}b")
        self.made = []

    def _must(self, cmd, what):
        rc, out = sh(cmd)
        if rc != 0:
            raise Skip(f"{what}: `{e2e.cmdline(cmd)}` failed (status {rc}): {out}")

    def setup(self):
        for ns in self.ns:
            self._must(["ip", "netns", "add", ns], "cannot create a network namespace")
            self.made.append(ns)
        a, b = self.ns
        self._must(["ip", "link", "add", self.ifs[0], "netns", a, "type", "veth",
                    "peer", "name", self.ifs[1], "netns", b], "cannot create a veth pair")
        for ns, ifname, addr in zip(self.ns, self.ifs, ADDRS):
            self._must(["ip", "-n", ns, "link", "set", "lo", "up"], "cannot bring loopback up")
            self._must(["ip", "-n", ns, "addr", "add", addr, "dev", ifname],
                       "cannot address the veth")
            self._must(["ip", "-n", ns, "link", "set", ifname, "up"], "cannot bring the veth up")

    def bytes_moved(self):
        """tx bytes of both veth ends (what went across the pair, either way)."""
        total = 0
        for ns, ifname in zip(self.ns, self.ifs):
            rc, out = sh(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname])
            if rc != 0:
                raise RuntimeError(f"cannot read counters of {ifname} in {ns}: {out}")
            total += int(json.loads(out)[0]["stats64"]["tx"]["bytes"])
        return total

    def teardown(self):
        """Ends the processes left in the namespaces (mpirun, daemons, ranks: all started by
        this test) and deletes the namespaces (which removes the veth pair). Returns problems."""
        problems = []
        for ns in self.made:
            rc, out = sh(["ip", "netns", "pids", ns])
            pids = [int(p) for p in out.split()] if rc == 0 else []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if pids and not e2e.wait_gone(pids, 15):
                problems.append(f"processes {pids} in {ns} did not end")
        for ns in self.made:
            rc, out = sh(["ip", "netns", "del", ns])
            if rc != 0:
                problems.append(f"ip netns del {ns}: {out}")
        rc, out = sh(["ip", "netns", "list"])
        left = [ns for ns in self.made if re.search(rf"^{re.escape(ns)}(\s|$)", out, re.M)]
        if left:
            problems.append(f"namespaces still listed: {left}")
        self.made = []
        return problems


class Cluster:
    """mpirun inside the first namespace, ranks on hostA and hostB through netns-agent.sh."""

    def __init__(self, hosts, tmp):
        self.hosts = hosts
        self.agent = os.path.join(tmp, "netns-agent.sh")
        shutil.copyfile(os.path.join(HERE, "netns-agent.sh"), self.agent)
        os.chmod(self.agent, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        self.hostfile = os.path.join(tmp, "hostfile")
        with open(self.hostfile, "w") as f:
            f.write("".join(f"{h} slots=1\n" for h in HOSTS))
        self.log = os.path.join(tmp, "agent.log")
        self.env = {"SL_MH_HOSTS": " ".join(f"{h}={ns}" for h, ns in zip(HOSTS, hosts.ns)),
                    "SL_MH_AGENT_LOG": self.log}

    def cmd(self, program, mca=()):
        return (["ip", "netns", "exec", self.hosts.ns[0], e2e.MPIEXEC,
                 "--hostfile", self.hostfile, "-np", str(len(HOSTS)),
                 "--mca", "plm_rsh_agent", self.agent, "--mca", "plm_rsh_no_tree_spawn", "1",
                 "--mca", "oob_tcp_if_include", SUBNET,
                 "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", SUBNET]
                + list(mca) + list(program))

    def run(self, program, mca=(), timeout=240):
        return e2e.run_cmd(self.cmd(program, mca), timeout=timeout, env=self.env)


def shardline_args(data, out, tp):
    args = e2e.job_args(EXAMPLE, os.path.join(data, "*.h5"), out, tp=tp, unit_rows=UNIT_ROWS,
                        batch=BATCH)
    if e2e.DEVICE:
        args += ["--device", e2e.DEVICE]
    return args


def placement(res):
    return [tuple(int(g) if g.isdigit() else g for g in m.groups())
            for m in (PLACEMENT_RE.match(line) for line in res.stderr.splitlines()) if m]


def check_placement(t, res, tp, label):
    """Two ranks on two distinct hosts (hostA, hostB), each node-local rank 0 of 1."""
    lines = placement(res)
    if not t.check(len(lines) == 2, f"{label}: rank 0 printed 2 placement lines",
                   f"got {len(lines)}:\n{res.stderr[-1500:]}"):
        return
    hosts = sorted(line[2] for line in lines)
    t.equal(hosts, sorted(HOSTS), f"{label}: placement shows 2 distinct hosts")
    t.check(all(line[3] == 0 and line[4] == 1 for line in lines),
            f"{label}: node-local rank 0/1 on each host",
            "\n".join(f"rank {r[0]} host {r[2]} local {r[3]}/{r[4]}" for r in lines))
    t.check(all(line[6] == tp for line in lines), f"{label}: placement shows --tp {tp}",
            repr(lines))
    if tp == 2:
        by_tp = {line[5]: line[2] for line in lines}
        t.check(len(by_tp) == 2 and by_tp.get(0) != by_tp.get(1),
                f"{label}: the two TP ranks are on different hosts", repr(lines))
        m = [TRANSPORT_RE.match(line) for line in res.stderr.splitlines()]
        transport = next((x.group(1) for x in m if x), None)
        t.equal(transport, "mpi", f"{label}: all-reduce over MPI")


def load_inputs(data):
    paths = sorted(glob.glob(os.path.join(data, "*.h5")))
    import h5py
    rows = []
    for p in paths:
        with h5py.File(p, "r") as f:
            rows.append(e2e.as_f32(f["features"][()]))
    return np.concatenate(rows)


def example_reference(x):
    with open(os.path.join(EXAMPLE, "config.json")) as f:
        cfg = json.load(f)
    raw = e2e.load_safetensors(os.path.join(EXAMPLE, "model.safetensors"))
    params = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    return e2e.reference(params, cfg["dims"], cfg["activation"], cfg.get("final_activation"), x)


def smoke(cluster):
    """A trivial program on the two hosts; Skip when Open MPI cannot start it there."""
    prog = ["/bin/sh", "-c", 'echo "smoke $(hostname) $OMPI_COMM_WORLD_LOCAL_RANK"']
    res = cluster.run(prog, timeout=90)
    seen = sorted(re.findall(r"^smoke (\S+) (\d+)$", res.stdout, re.M))
    if res.rc != 0 or seen != [(HOSTS[0], "0"), (HOSTS[1], "0")]:
        try:
            with open(cluster.log) as f:
                log = f.read()[-1500:]
        except OSError:
            log = "(no agent log)"
        raise Skip("Open MPI could not start a trivial program on the two namespace hosts: "
                   f"{res.describe(1500)}\nagent log: {log}")
    print(f"ok    (set-up) mpirun started a program on {', '.join(h for h, _ in seen)}",
          flush=True)


def body(t, tmp, hosts, cluster):
    data = os.path.join(tmp, "data")
    res = e2e.run_cmd(["/usr/bin/python3", os.path.join(EXAMPLE, "make_data.py"), data,
                       str(SHARDS), str(ROWS), str(SEED)], timeout=120)
    if not t.check(res.rc == 0, "make_data.py wrote the input shards", res.describe()):
        return
    x = load_inputs(data)
    total = SHARDS * ROWS
    shards = [(p, ROWS) for p in sorted(glob.glob(os.path.join(data, "*.h5")))]

    # Single-host baselines: plain mpirun in the root namespace (shared memory between ranks).
    base = {}
    for tp in (2, 1):
        out = os.path.join(tmp, f"single-tp{tp}")
        res = e2e.run(2, shardline_args(data, out, tp), timeout=240)
        if t.check(res.rc == 0, f"single host, --tp {tp}: status 0", res.describe()):
            base[tp] = e2e.predictions(t, out, f"single host, --tp {tp}")
    if base.get(2) is not None:
        t.close(base[2], example_reference(x), 1e-4,
                "single host, --tp 2: predictions match the float64 reference (1e-4)")

    # 1. What a user types: Open MPI's own configuration, no MCA options beyond the network.
    mca = ()
    out = os.path.join(tmp, "two-hosts-default")
    res = cluster.run([e2e.SHARDLINE, "run"] + shardline_args(data, out, 1))
    ok = t.check(res.rc == 0, "two hosts, --tp 1, Open MPI's default MCA configuration: status 0",
                 res.describe()
                 + ("\n(MPI_Win_allocate over ranks on different nodes needs an osc component "
                    "that can span nodes; Debian's /etc/openmpi/openmpi-mca-params.conf has "
                    "'osc = ^ucx,pt2pt', which leaves only sm (one node) and rdma (needs a BTL "
                    "with atomics; tcp has none). The rest of this test runs with "
                    "--mca osc ^ucx, which enables pt2pt.)"
                    if "MPI_Win_allocate" in res.stderr else ""))
    if ok:
        check_placement(t, res, 1, "two hosts, default configuration")
        if base.get(1) is not None:
            got = e2e.predictions(t, out, "two hosts, default configuration")
            if got is not None:
                t.check(np.array_equal(got, base[1]),
                        "two hosts, default configuration: predictions bitwise equal to one host",
                        f"relative difference {e2e.rel_err(got, base[1]):.3g}")
    elif "MPI_Win_allocate" in res.stderr:
        mca = ("--mca", "osc", "^ucx")

    # 2. Tensor parallel across the hosts: the all-reduce goes over the veth pair.
    label = "two hosts, --tp 2" + (" (--mca osc ^ucx)" if mca else "")
    out = os.path.join(tmp, "two-hosts-tp2")
    before = hosts.bytes_moved()
    res = cluster.run([e2e.SHARDLINE, "run"] + shardline_args(data, out, 2), mca=mca)
    moved = hosts.bytes_moved() - before
    if t.check(res.rc == 0, f"{label}: status 0", res.describe()):
        check_placement(t, res, 2, label)
        need = total * HIDDEN * 4
        t.check(moved >= need, f"{label}: the all-reduce crossed the veth pair "
                f"({moved} bytes >= {need})", f"only {moved} bytes went over the veth pair")
        got = e2e.predictions(t, out, label)
        if got is not None:
            if base.get(2) is not None:
                t.close(got, base[2], 1e-6, f"{label}: predictions equal one host's --tp 2 (1e-6)")
            t.close(got, example_reference(x), 1e-4,
                    f"{label}: predictions match the float64 reference (1e-4)")
            e2e.check_parts_cover(t, out, shards, got.shape[1], f"{label}: parts cover every row")
            t.equal(got.shape[0], total, f"{label}: {total} rows predicted")

    # 3. Data parallel across the hosts: each host takes units from the shared queue.
    label = "two hosts, --tp 1" + (" (--mca osc ^ucx)" if mca else "")
    out = os.path.join(tmp, "two-hosts-tp1")
    before = hosts.bytes_moved()
    res = cluster.run([e2e.SHARDLINE, "run"] + shardline_args(data, out, 1), mca=mca)
    moved = hosts.bytes_moved() - before
    if t.check(res.rc == 0, f"{label}: status 0", res.describe()):
        check_placement(t, res, 1, label)
        t.check(moved > 0, f"{label}: traffic went over the veth pair ({moved} bytes)")
        got = e2e.predictions(t, out, label)
        if got is not None and base.get(1) is not None:
            t.check(np.array_equal(got, base[1]),
                    f"{label}: predictions bitwise equal to one host's --tp 1 (same --batch-size)",
                    f"relative difference {e2e.rel_err(got, base[1]):.3g}")
        report = e2e.load_json(os.path.join(out, "report.json")) or {}
        units = {r.get("rank"): r.get("units") for r in report.get("per_rank", [])}
        print(f"      units per rank: {units}", flush=True)


def preflight():
    if os.geteuid() != 0:
        return "not root: creating network namespaces needs CAP_NET_ADMIN and CAP_SYS_ADMIN"
    for tool in ("ip", "unshare", "hostname"):
        if not shutil.which(tool):
            return f"`{tool}` not found (apt-get install iproute2 util-linux hostname)"
    if not shutil.which(e2e.MPIEXEC) and not os.access(e2e.MPIEXEC, os.X_OK):
        return f"mpirun not found ({e2e.MPIEXEC})"
    return None


def main():
    t = e2e.Tally(NAME)
    tmp = tempfile.mkdtemp(prefix=f"sl-{NAME}-")
    keep = bool(os.environ.get("SL_KEEP_TMP"))
    t0 = time.time()
    hosts = None
    skip = None

    def stop(signum, _frame):
        raise Interrupted(f"signal {signum}")
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)

    try:
        if not (os.path.isfile(e2e.SHARDLINE) and os.access(e2e.SHARDLINE, os.X_OK)):
            t.check(False, "shardline binary exists", f"{e2e.SHARDLINE} is missing or not executable")
        else:
            skip = preflight()
            if skip is None:
                hosts = TwoHosts(os.getpid())
                hosts.setup()
                cluster = Cluster(hosts, tmp)
                smoke(cluster)
                os.chdir(tmp)
                body(t, tmp, hosts, cluster)
    except Skip as ex:
        skip = str(ex)
    except BaseException:  # a crash or a signal is a failure, never a silent pass
        t.check(False, "test body ran to the end", traceback.format_exc())
    finally:
        os.chdir("/")
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if hosts is not None and hosts.made:
            problems = hosts.teardown()
            t.check(not problems, f"namespaces {', '.join(hosts.ns)} removed", "; ".join(problems))
        print(f"[{NAME}: {time.time() - t0:.1f} s, tmp {tmp}{' kept' if keep else ''}]")
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if skip is not None and t.failed == 0:
        print(f"skipped: {skip}", flush=True)
        sys.exit(77)
    t.finish()


if __name__ == "__main__":
    main()
