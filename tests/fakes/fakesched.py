"""Test doubles of PBS Pro and Cobalt's commands (qsub, qstat, qdel, pbsnodes).

They behave like the real ones where balsam can tell: the same options, output formats and exit
codes, and the job really runs: a detached runner waits out an optional start delay (the job is
queued meanwhile), then runs the script with bash in the scheduler's environment (PBS_JOBID,
PBS_NODEFILE, ... or COBALT_JOBID, COBALT_PARTNAME, ...), enforces the wall time and records the
exit status. ``qdel`` sends SIGTERM to the job script, then SIGKILL after the kill delay.

State lives in ``$FAKE_PBS_SPOOL`` / ``$FAKE_COBALT_SPOOL`` (default ``/tmp/fake-<flavor>-<uid>``).
Knobs: ``FAKE_START_DELAY`` (seconds queued before running, default 0), ``FAKE_KILL_DELAY``
(default 2), ``FAKE_PBS_QUEUES`` (default ``workq,debug``), ``FAKE_COBALT_QUEUES`` (default
``default,debug-cache-quad``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PBS_SERVER = "fakepbs"


# --- spool --------------------------------------------------------------------------------------


def spool(flavor: str) -> Path:
    path = Path(os.environ.get(f"FAKE_{flavor.upper()}_SPOOL")
                or f"/tmp/fake-{flavor}-{os.getuid()}")
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def next_seq(flavor: str) -> int:
    with open(spool(flavor) / "seq", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        seq = int(f.read().strip() or 0) + 1
        f.seek(0)
        f.truncate()
        f.write(str(seq))
    return seq


def job_path(flavor: str, seq: int) -> Path:
    return spool(flavor) / "jobs" / f"{seq}.json"


def load(flavor: str, seq: int) -> dict | None:
    try:
        return json.loads(job_path(flavor, seq).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def update(flavor: str, number: int, **changes: object) -> dict:
    """Read-modify-write one job record under a lock (qdel and the runner race)."""
    with open(spool(flavor) / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job = load(flavor, number) or {}
        job.update(changes)
        tmp = job_path(flavor, number).with_suffix(".tmp")
        tmp.write_text(json.dumps(job))
        os.replace(tmp, job_path(flavor, number))
    return job


def all_jobs(flavor: str) -> list[dict]:
    jobs = []
    for p in sorted((spool(flavor) / "jobs").glob("*.json"), key=lambda p: int(p.stem)):
        job = load(flavor, int(p.stem))
        if job:
            jobs.append(job)
    return jobs


def directives(script: Path, prefix: str) -> list[str]:
    """Option words from the script's leading ``#PBS``/``#COBALT`` lines."""
    words: list[str] = []
    for line in script.read_text().splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith(prefix):
            words += stripped[len(prefix):].split()
        elif stripped and not stripped.startswith("#"):
            break
    return words


def user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def start_runner(flavor: str, seq: int) -> None:
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", flavor, str(seq)],
                     start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- the runner -------------------------------------------------------------------------------


def run(flavor: str, seq: int) -> int:
    """Run one job: queued for the start delay, then the script, then record the outcome."""
    job = load(flavor, seq)
    assert job is not None
    deadline = time.time() + job["start_delay"]
    while time.time() < deadline:
        if (load(flavor, seq) or {}).get("deleted"):
            update(flavor, seq, state="F", exit_status=-3, end=time.time())
            return 0
        time.sleep(0.1)
    env = dict(os.environ)
    env.update(job["env"])
    host = socket.gethostname()
    if flavor == "pbs":
        nodefile = spool(flavor) / "jobs" / f"{seq}.nodes"
        nodefile.write_text("".join(f"{host}\n" for _ in range(job["nodes"])))
        env.update(PBS_JOBID=job["id"], PBS_NODEFILE=str(nodefile), PBS_QUEUE=job["queue"],
                   PBS_JOBNAME=job["name"], PBS_O_WORKDIR=job["workdir"],
                   PBS_ENVIRONMENT="PBS_BATCH", NCPUS=str(os.cpu_count() or 1))
        out = open(job["output"], "ab")
        err = out if job["join"] else open(job["error"], "ab")
        cwd = env.get("HOME", "/")
    else:
        partname = "0" if job["nodes"] == 1 else f"0-{job['nodes'] - 1}"
        env.update(COBALT_JOBID=job["id"], COBALT_PARTNAME=partname,
                   COBALT_PARTSIZE=str(job["nodes"]), COBALT_JOBSIZE=str(job["nodes"]),
                   COBALT_QUEUE=job["queue"], COBALT_PROJECT=job["project"])
        out, err = open(job["output"], "ab"), open(job["error"], "ab")
        cwd = job["workdir"]
        cobaltlog(job, f"Command: {job['script']}")
        cobaltlog(job, f"COBALT_STARTTIME = {int(time.time())}")
    # the job is a process group, signalled as a whole like a real job's session
    child = subprocess.Popen(["/bin/bash", job["script"]], stdout=out, stderr=err, env=env,
                             cwd=cwd, stdin=subprocess.DEVNULL, process_group=0)
    update(flavor, seq, state="R" if flavor == "pbs" else "running", start=time.time(),
           pid=child.pid)
    term_at = kill_at = None
    limit = time.time() + job["walltime"]
    while child.poll() is None:
        now = time.time()
        current = load(flavor, seq) or {}
        if term_at is None and (current.get("deleted") or now > limit):
            term_at, kill_at = now, now + job["kill_delay"]
            update(flavor, seq, reason="deleted" if current.get("deleted") else "walltime")
            signal_job(child.pid, signal.SIGTERM)
        elif kill_at is not None and now > kill_at:
            signal_job(child.pid, signal.SIGKILL)
            kill_at = float("inf")
        time.sleep(0.1)
    code = child.returncode
    exit_status = code if code >= 0 else 256 - code
    if flavor == "pbs":
        update(flavor, seq, state="F", exit_status=exit_status, end=time.time())
    else:
        cobaltlog(job, f"task completed normally with an exit code of {exit_status}; "
                       "initiating job cleanup and removal")
        update(flavor, seq, state="done", exit_status=exit_status, end=time.time())
    return 0


def signal_job(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def cobaltlog(job: dict, text: str) -> None:
    stamp = time.strftime("%a %b %d %H:%M:%S %Y +0000 (UTC)", time.gmtime())
    with open(job["cobaltlog"], "a") as f:
        f.write(f"{stamp} {text}\n")


# --- PBS ----------------------------------------------------------------------------------------


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def parse_hms(value: str) -> int | None:
    parts = value.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return seconds


def pbs_qsub(argv: list[str]) -> int:
    if not argv:
        return fail("usage: qsub [-A account] [-l resource_list] [-N name] [-o path] [-q queue]"
                    " script", 2)
    script = Path(argv[-1])
    if not script.is_file():
        return fail(f"qsub: script file:: No such file or directory: {script}", 2)
    words = directives(script, "#PBS") + argv[:-1]
    opts: dict[str, str] = {}
    resources: dict[str, str] = {}
    i = 0
    while i < len(words):
        flag = words[i]
        if flag in ("-A", "-q", "-N", "-o", "-e", "-j", "-l", "-v", "-W") and i + 1 < len(words):
            value = words[i + 1]
            if flag == "-l":
                for item in value.split(","):
                    key, _, val = item.partition("=")
                    resources[key] = val
            else:
                opts[flag] = value
            i += 2
        elif flag == "-V":
            i += 1
        else:
            return fail(f"qsub: invalid option -- '{flag.lstrip('-')}'", 2)
    queues = os.environ.get("FAKE_PBS_QUEUES", "workq,debug").split(",")
    queue = opts.get("-q", queues[0])
    if queue not in queues:
        return fail("qsub: Unknown queue", 170)
    nodes = resources.get("select", resources.get("nodes", "1")).split(":")[0]
    walltime = parse_hms(resources.get("walltime", "01:00:00"))
    if not nodes.isdigit() or int(nodes) < 1 or walltime is None:
        return fail("qsub: Illegal attribute or resource value for Resource_List", 188)
    seq = next_seq("pbs")
    job_id = f"{seq}.{PBS_SERVER}"
    name = opts.get("-N", script.name)
    workdir = os.getcwd()
    job = {
        "id": job_id, "seq": seq, "name": name, "owner": user(), "queue": queue,
        "project": opts.get("-A", ""), "nodes": int(nodes), "walltime": walltime,
        "script": str(script.absolute()), "workdir": workdir,
        "output": opts.get("-o", f"{workdir}/{name}.o{seq}"),
        "error": opts.get("-e", f"{workdir}/{name}.e{seq}"), "join": opts.get("-j") == "oe",
        "state": "Q", "ctime": time.time(), "start_delay": float(os.environ.get(
            "FAKE_START_DELAY", "0")), "kill_delay": float(os.environ.get("FAKE_KILL_DELAY", "2")),
        "env": {},
    }
    update("pbs", seq, **job)
    start_runner("pbs", seq)
    print(job_id)
    return 0


def _pbs_seq(job_id: str) -> int | None:
    head = job_id.split(".")[0]
    return int(head) if head.isdigit() else None


def pbs_qstat(argv: list[str]) -> int:
    full = "-f" in argv
    history = "-x" in argv or "-H" in argv
    ids = [a for a in argv if not a.startswith("-")]
    rc = 0
    jobs = []
    if ids:
        for job_id in ids:
            seq = _pbs_seq(job_id)
            job = load("pbs", seq) if seq is not None else None
            if job is None:
                print(f"qstat: Unknown Job Id {job_id}", file=sys.stderr)
                rc = 153
            elif job["state"] == "F" and not history:
                print(f"qstat: {job['id']} Job has finished, use -x or -H to obtain historical "
                      "job information", file=sys.stderr)
                rc = 35
            else:
                jobs.append(job)
    else:
        jobs = [j for j in all_jobs("pbs") if history or j["state"] != "F"]
    if full:
        print("\n".join(_pbs_full(j) for j in jobs), end="")
    elif jobs:
        print(f"{'Job id':<17} {'Name':<16} {'User':<16} {'Time Use':<8} S Queue")
        print(f"{'-' * 17} {'-' * 16} {'-' * 16} {'-' * 8} - {'-' * 5}")
        for j in jobs:
            used = hms(time.time() - j["start"]) if j.get("start") and j["state"] == "R" else "0"
            print(f"{j['id']:<17} {j['name'][:16]:<16} {j['owner'][:16]:<16} {used:>8} "
                  f"{j['state']} {j['queue']}")
    return rc


def _pbs_full(j: dict) -> str:
    host = socket.gethostname()
    lines = [f"Job Id: {j['id']}",
             f"    Job_Name = {j['name']}",
             f"    Job_Owner = {j['owner']}@{host}",
             f"    job_state = {j['state']}",
             f"    queue = {j['queue']}",
             f"    server = {PBS_SERVER}",
             f"    ctime = {time.ctime(j['ctime'])}",
             f"    Output_Path = {host}:{j['output']}",
             f"    Resource_List.select = {j['nodes']}",
             f"    Resource_List.walltime = {hms(j['walltime'])}"]
    if j.get("project"):
        lines.append(f"    Account_Name = {j['project']}")
    if j.get("start"):
        lines += [f"    stime = {time.ctime(j['start'])}", f"    exec_host = {host}/0"]
    if j["state"] == "F":
        lines += [f"    obittime = {time.ctime(j.get('end') or time.time())}",
                  f"    Exit_status = {j.get('exit_status', 0)}"]
    return "\n".join(lines) + "\n\n"


def pbs_qdel(argv: list[str]) -> int:
    ids = [a for a in argv if not a.startswith("-") and a != "force"]
    rc = 0
    for job_id in ids:
        seq = _pbs_seq(job_id)
        job = load("pbs", seq) if seq is not None else None
        if job is None:
            print(f"qdel: Unknown Job Id {job_id}", file=sys.stderr)
            rc = 153
        elif job["owner"] != user() and os.getuid() != 0:
            print(f"qdel: Unauthorized Request  {job_id}", file=sys.stderr)
            rc = 159
        elif job["state"] == "F":
            print(f"qdel: Job has finished {job_id}", file=sys.stderr)
            rc = 35
        else:
            update("pbs", seq, deleted=True, kill_delay=0 if "force" in argv else
                   job["kill_delay"])
    return rc


def pbs_pbsnodes(argv: list[str]) -> int:
    host = socket.gethostname()
    print(f"{host}\n     Mom = {host}\n     ntype = PBS\n     state = free\n"
          f"     resources_available.host = {host}\n"
          f"     resources_available.ncpus = {os.cpu_count() or 1}\n")
    return 0


# --- Cobalt -----------------------------------------------------------------------------------

COBALT_DEFAULT_HEADER = "JobID:User:WallTime:Nodes:State:Location"


def cobalt_qsub(argv: list[str]) -> int:
    args = list(argv)
    if not args:
        return fail("Usage: qsub [options] <executable> [<executable options>]", 1)
    script = Path(args[-1])
    if not script.is_file():
        return fail(f"file {script} not found, or is not a file", 1)
    if not os.access(script, os.X_OK):
        return fail(f"file {script} is not executable", 1)
    words = directives(script, "#COBALT") + args[:-1]
    opts: dict[str, str] = {}
    i = 0
    while i < len(words):
        flag = words[i]
        if flag in ("-A", "--project", "-q", "--queue", "-n", "--nodecount", "-t", "--time",
                    "-O", "--outputprefix", "-o", "--output", "-e", "--error", "--debuglog",
                    "--mode", "--attrs", "--env", "--cwd") and i + 1 < len(words):
            short = {"--project": "-A", "--queue": "-q", "--nodecount": "-n", "--time": "-t",
                     "--outputprefix": "-O", "--output": "-o", "--error": "-e"}.get(flag, flag)
            opts[short] = words[i + 1]
            i += 2
        else:
            return fail(f"qsub: error: no such option: {flag}", 2)
    if "-A" not in opts:
        return fail("'project' not provided (use -A)", 1)
    if "-n" not in opts or not opts["-n"].isdigit() or int(opts["-n"]) < 1:
        return fail("'nodecount' not provided or not a positive integer (use -n)", 1)
    if "-t" not in opts:
        return fail("'time' not provided (use -t)", 1)
    minutes = opts["-t"]
    walltime = int(minutes) * 60 if minutes.isdigit() else parse_hms(minutes)
    if not walltime:
        return fail(f"time {minutes!r} is not valid", 1)
    queues = os.environ.get("FAKE_COBALT_QUEUES", "default,debug-cache-quad").split(",")
    queue = opts.get("-q", "default")
    if queue not in queues:
        return fail(f"Queue {queue!r} does not exist", 1)
    seq = next_seq("cobalt")
    workdir = opts.get("--cwd", os.getcwd())
    prefix = opts.get("-O", f"{workdir}/{seq}")
    job = {
        "id": str(seq), "seq": seq, "name": script.name, "owner": user(), "queue": queue,
        "project": opts["-A"], "nodes": int(opts["-n"]), "walltime": walltime,
        "script": str(script.absolute()), "workdir": workdir,
        "output": opts.get("-o", f"{prefix}.output"), "error": opts.get("-e", f"{prefix}.error"),
        "cobaltlog": opts.get("--debuglog", f"{prefix}.cobaltlog"), "state": "queued",
        "ctime": time.time(), "start_delay": float(os.environ.get("FAKE_START_DELAY", "0")),
        "kill_delay": float(os.environ.get("FAKE_KILL_DELAY", "2")), "env": {},
    }
    update("cobalt", seq, **job)
    cobaltlog(job, f"Jobid: {seq}")
    cobaltlog(job, f"qsub {' '.join(argv)}")
    start_runner("cobalt", seq)
    print(seq)
    return 0


def cobalt_qstat(argv: list[str]) -> int:
    header = os.environ.get("QSTAT_HEADER", COBALT_DEFAULT_HEADER)
    ids: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--header" and i + 1 < len(argv):
            header = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--header="):
            header = argv[i].split("=", 1)[1]
        elif argv[i] in ("-u", "-q") and i + 1 < len(argv):
            i += 1
        elif not argv[i].startswith("-"):
            ids.append(argv[i])
        i += 1
    jobs = [j for j in all_jobs("cobalt") if j["state"] != "done"]
    if ids:
        jobs = [j for j in jobs if j["id"] in ids]
    if not jobs:
        return 0
    fields = header.split(":")
    rows = [[_cobalt_field(j, f) for f in fields] for j in jobs]
    widths = [max(len(f), *(len(r[k]) for r in rows)) for k, f in enumerate(fields)]
    line = "  ".join(f"{f:<{w}}" for f, w in zip(fields, widths, strict=True))
    print(line)
    print("=" * len(line))
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)))
    return 0


def _cobalt_field(job: dict, field: str) -> str:
    name = field.lower()
    if name == "jobid":
        return job["id"]
    if name == "user":
        return job["owner"]
    if name == "walltime":
        return hms(job["walltime"])
    if name == "nodes":
        return str(job["nodes"])
    if name == "state":
        return "killing" if job.get("deleted") and job["state"] == "running" else job["state"]
    if name == "location":
        return "0" if job["state"] == "running" else "None"
    if name == "queue":
        return job["queue"]
    if name == "project":
        return job["project"]
    if name == "runtime":
        return hms(time.time() - job["start"]) if job.get("start") else "N/A"
    return "N/A"


def cobalt_qdel(argv: list[str]) -> int:
    deleted = []
    for job_id in (a for a in argv if not a.startswith("-")):
        job = load("cobalt", int(job_id)) if job_id.isdigit() else None
        if job is None or job["state"] == "done":
            continue
        if job["owner"] != user() and os.getuid() != 0:
            return fail(f"Only {job['owner']} may delete job {job_id}", 1)
        update("cobalt", int(job_id), deleted=True)
        deleted.append(job)
    if deleted:
        print("      Deleted Jobs")
        print(f"{'JobID':<7}{'User':<10}")
        print("=" * 17)
        for j in deleted:
            print(f"{j['id']:<7}{j['owner']:<10}")
    return 0


COMMANDS = {
    ("pbs", "qsub"): pbs_qsub, ("pbs", "qstat"): pbs_qstat, ("pbs", "qdel"): pbs_qdel,
    ("pbs", "pbsnodes"): pbs_pbsnodes,
    ("cobalt", "qsub"): cobalt_qsub, ("cobalt", "qstat"): cobalt_qstat,
    ("cobalt", "qdel"): cobalt_qdel,
}


def main(flavor: str, command: str, argv: list[str]) -> int:
    return COMMANDS[flavor, command](argv)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], int(sys.argv[3])))
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))

