"""test_slurm_submit.py — `shardline submit` without a cluster: the batch script it writes, and
its errors. Needs no Slurm (a stand-in `sbatch` on PATH plays the submitting part).

Checks:
  - `submit JOB --cpu --ntasks-per-node 2 --dry-run` prints a script (exit 0) with the expected
    #SBATCH directives (nodes, ntasks-per-node=2, cpus-per-task, time, signal=B:USR1@120,
    requeue, open-mode=append, output into the job's output directory, chdir), no GPU request,
    `--device cpu`, the binary's and the job file's absolute paths, `srun --mpi=pmix`, the
    USR1/TERM trap and `scontrol requeue`; `bash -n` accepts it; nothing is written;
  - the GPU form (--nodes 2 --gpus-per-node 4 --time 1:00:00 --partition gpu --account proj
    --array 3): ntasks-per-node=4 and gpus-per-node=4 (never --gpus-per-task), --array=0-2 with a
    %A_%a log, partition and account;
  - the embedded template is slurm/shardline.sbatch: every line of the file that submit does not
    fill in appears unchanged, in order, in the printed script;
  - a submission through a stand-in sbatch: OUTPUT/shardline.sbatch written (executable, same
    text as --dry-run), sbatch called as `sbatch --parsable OUTPUT/shardline.sbatch`, the job id
    printed on stdout alone;
  - errors: missing job file (2), job file without `output` (2, names --output), unknown key
    (2), bad option values (2), --cpu with --gpus-per-node (2), no --gpus-per-node (2), an output
    directory that cannot be created (3), sbatch not on PATH (1, says so), sbatch failing (1, its
    stderr shown).

Run by hand: SHARDLINE=build/shardline /usr/bin/python3 tests/slurm/test_slurm_submit.py
"""
import os
import re
import stat
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi"))
import sl_e2e as e  # noqa: E402


def write(path, text, mode=None):
    with open(path, "w") as f:
        f.write(text)
    if mode:
        os.chmod(path, mode)


def directives(script):
    """{key: value or True} of the #SBATCH lines."""
    out = {}
    for line in script.splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2) if m.group(2) is not None else True
    return out


def body(t, tmp):
    model = os.path.join(e.SOURCE_DIR, "examples", "mlp")
    job = os.path.join(tmp, "nightly.ini")
    write(job, f"model = {model}\ninput = {tmp}/data/*.h5\noutput = out/scores\n"
               "[run]\nbatch-size = 64\n")
    out_abs = os.path.join(tmp, "out", "scores")

    # ---- (a) --cpu --dry-run ---------------------------------------------------------------
    r = e.run_direct(["submit", job, "--cpu", "--ntasks-per-node", "2", "--dry-run"], cwd=tmp)
    t.equal(r.rc, 0, "submit --cpu --dry-run: exit 0")
    s = r.stdout
    d = directives(s)
    t.check(s.startswith("#!/bin/bash\n"), "dry run prints a bash script", s[:200])
    expect = {"nodes": "1", "ntasks-per-node": "2", "cpus-per-task": "1", "time": "04:00:00",
              "signal": "B:USR1@120", "requeue": True, "open-mode": "append",
              "output": f"{out_abs}/slurm-%j.out", "chdir": tmp, "job-name": "shardline-nightly"}
    for k, v in expect.items():
        t.equal(d.get(k), v, f"--cpu script: #SBATCH --{k}")
    t.check("gpus-per-node" not in d and "gpus-per-task" not in d and "gpus" not in d,
            "--cpu script requests no GPU", str(d))
    t.check("array" not in d, "--cpu script is no array", str(d))
    t.check(f'shardline="${{SHARDLINE:-{os.path.realpath(e.SHARDLINE)}}}"' in s,
            "script runs this shardline binary by absolute path")
    t.check(f'job_file="${{1:-{job}}}"' in s, "script names the job file by absolute path")
    t.check('run_options="${SHARDLINE_RUN_OPTIONS:---device cpu}"' in s, "--cpu adds --device cpu")
    t.check(re.search(r"^\s*srun --mpi=pmix .*\brun\b", s, re.M) is not None,
            "ranks start with srun --mpi=pmix")
    t.check("trap 'forward USR1' USR1" in s and "trap 'forward TERM' TERM" in s,
            "the batch shell traps USR1 and TERM")
    t.check('kill -s "$1" "$step_pid"' in s, "the trap forwards the signal to the job step")
    t.check('scontrol requeue "$SLURM_JOB_ID"' in s and '"$status" -eq 5' in s,
            "exit status 5 leads to scontrol requeue")
    p = subprocess.run(["bash", "-n"], input=s, text=True, capture_output=True)
    t.equal((p.returncode, p.stderr), (0, ""), "bash -n accepts the script")
    t.check(not os.path.exists(os.path.join(tmp, "out")), "--dry-run writes nothing")

    # ---- GPU form --------------------------------------------------------------------------
    r = e.run_direct(["submit", job, "--nodes", "2", "--gpus-per-node", "4", "--time", "1:00:00",
                      "--partition", "gpu", "--account", "proj", "--array", "3", "--dry-run"],
                     cwd=tmp)
    t.equal(r.rc, 0, "submit --gpus-per-node 4 --dry-run: exit 0")
    d = directives(r.stdout)
    expect = {"nodes": "2", "ntasks-per-node": "4", "gpus-per-node": "4", "time": "1:00:00",
              "partition": "gpu", "account": "proj", "array": "0-2",
              "output": f"{out_abs}/slurm-%A_%a.out", "signal": "B:USR1@120", "requeue": True,
              "open-mode": "append"}
    for k, v in expect.items():
        t.equal(d.get(k), v, f"GPU script: #SBATCH --{k}")
    t.check("gpus-per-task" not in d, "GPU script does not use --gpus-per-task")
    t.check("SHARDLINE_RUN_OPTIONS:-}" in r.stdout, "GPU script adds no run options")
    t.check(re.search(r"#SBATCH --gpus-per-node=\d+\n(?:.*\n)*?.*--gpus-per-task", r.stdout) is None
            and "Not --gpus-per-task" in r.stdout, "the script says why not --gpus-per-task")

    # ---- the embedded template is slurm/shardline.sbatch -----------------------------------
    with open(os.path.join(e.SOURCE_DIR, "slurm", "shardline.sbatch")) as f:
        tpl = f.read().splitlines()
    r = e.run_direct(["submit", job, "--gpus-per-node", "4", "--dry-run"], cwd=tmp)
    got = r.stdout.splitlines()
    filled = re.compile(r"#SBATCH --|shardline=|job_file=|run_options=")
    j, missing = 0, []
    for line in tpl:
        if filled.match(line):
            continue
        while j < len(got) and got[j] != line:
            j += 1
        if j == len(got):
            missing.append(line)
            j = 0
    t.check(not missing, "every unfilled template line is in the script, in order",
            "missing: " + "; ".join(missing[:5]))

    # ---- a submission through a stand-in sbatch --------------------------------------------
    fake = os.path.join(tmp, "fakebin")
    os.makedirs(fake)
    log = os.path.join(tmp, "sbatch-args")
    write(os.path.join(fake, "sbatch"),
          f'#!/bin/sh\necho "$@" > {log}\necho "4242;testcluster"\n', 0o755)
    env = {"PATH": fake + ":/usr/bin:/bin"}
    dry = e.run_direct(["submit", job, "--cpu", "--ntasks-per-node", "2", "--dry-run"], cwd=tmp)
    r = e.run_direct(["submit", job, "--cpu", "--ntasks-per-node", "2"], cwd=tmp, env=env)
    t.equal((r.rc, r.stdout), (0, "4242\n"), "submit prints the job id alone on stdout",)
    script = os.path.join(out_abs, "shardline.sbatch")
    t.check(os.path.isfile(script), "OUTPUT/shardline.sbatch written")
    if os.path.isfile(script):
        with open(script) as f:
            t.check(f.read() == dry.stdout, "the written script is the dry-run text")
        t.check(os.stat(script).st_mode & stat.S_IXUSR, "the written script is executable")
    try:
        with open(log) as f:
            t.equal(f.read().split(), ["--parsable", script], "sbatch --parsable OUTPUT/shardline.sbatch")
    except OSError:
        t.check(False, "the stand-in sbatch ran")

    # ---- errors ----------------------------------------------------------------------------
    r = e.run_direct(["submit", os.path.join(tmp, "nope.ini"), "--cpu", "--dry-run"], cwd=tmp)
    t.check(r.rc == 2 and e.stderr_names(r, "nope.ini"), "missing job file: exit 2, named",
            r.describe())
    noout = os.path.join(tmp, "noout.ini")
    write(noout, f"model = {model}\ninput = {tmp}/data/*.h5\n")
    r = e.run_direct(["submit", noout, "--cpu", "--dry-run"], cwd=tmp)
    t.check(r.rc == 2 and e.stderr_names(r, "--output"), "job file without output: exit 2, names --output",
            r.describe())
    badkey = os.path.join(tmp, "badkey.ini")
    write(badkey, f"model = {model}\ninput = x.h5\noutput = o\nbatch_sise = 3\n")
    r = e.run_direct(["submit", badkey, "--cpu", "--dry-run"], cwd=tmp)
    t.check(r.rc == 2 and e.stderr_names(r, "batch_sise"), "unknown job-file key: exit 2, named",
            r.describe())
    for args, what in ((["--cpu", "--nodes", "0"], "--nodes 0"),
                       (["--cpu", "--array", "x"], "--array x"),
                       (["--cpu", "--time", "1 hour"], "--time with a space"),
                       (["--cpu", "--gpus-per-node", "2"], "--cpu with --gpus-per-node"),
                       ([], "neither --gpus-per-node nor --cpu"),
                       (["--cpu", "--frobnicate"], "unknown option")):
        r = e.run_direct(["submit", job] + args + ["--dry-run"], cwd=tmp)
        t.check(r.rc == 2 and r.stderr.startswith("shardline: error:"), f"{what}: exit 2 with a message",
                r.describe())
    blocked = os.path.join(tmp, "blocked.ini")
    write(os.path.join(tmp, "afile"), "")
    write(blocked, f"model = {model}\ninput = x.h5\noutput = {tmp}/afile/out\n")
    r = e.run_direct(["submit", blocked, "--cpu"], cwd=tmp, env=env)
    t.check(r.rc == 3 and e.stderr_names(r, "afile"), "output directory that cannot be created: exit 3",
            r.describe())
    r = e.run_direct(["submit", job, "--cpu"], cwd=tmp, env={"PATH": os.path.join(tmp, "empty")})
    t.check(r.rc == 1 and e.stderr_names(r, "sbatch not found"), "sbatch not on PATH: exit 1, says so",
            r.describe())
    write(os.path.join(fake, "sbatch"), "#!/bin/sh\necho 'sbatch: error: Batch job submission "
          "failed: Invalid partition name specified' >&2\nexit 1\n", 0o755)
    r = e.run_direct(["submit", job, "--cpu", "--partition", "nope"], cwd=tmp, env=env)
    t.check(r.rc == 1 and "Invalid partition name specified" in r.stderr and r.stdout == "",
            "sbatch failing: exit 1, its stderr shown, no job id", r.describe())


if __name__ == "__main__":
    e.main("test_slurm_submit", body)
