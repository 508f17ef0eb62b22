"""The control zone, attacked as a hostile group member would: bob (a member) and carol (a
viewer) rewrite, plant and link files where alice's tools read or write. Nothing of alice's is
reached: every tool refuses a control file someone else could have written, with one line that
names it and the fix; no tool follows a symlink it did not make."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from balsam_testing.launchers import kill_session
from balsam_testing.pg import ACTIVATE, balsam_as, sh, write_as

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

#: A Jinja2 template that runs a command as whoever renders it, outside a sandbox.
PAYLOAD = "#!/bin/bash\n{{ cycler.__init__.__globals__.os.system('touch ' ~ '%s') }}\n"


def project(run_as, shared_dir: Path) -> Path:
    """alice's project with bob as a member and carol as a viewer."""
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob && "
                              "balsam server --add-user carol --role viewer")
    return root


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


class Listener:
    """A TCP listener of bob's that records every connection it gets (a password catcher)."""

    def __init__(self, run_as_user: str, log: Path) -> None:
        code = ("import socket, sys\n"
                "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                "print(s.getsockname()[1], flush=True)\n"
                "while True:\n"
                "    c, _ = s.accept()\n"
                "    open(sys.argv[1], 'a').write('connection\\n')\n"
                "    c.close()\n")
        self.proc = subprocess.Popen(["runuser", "-u", run_as_user, "--", "/usr/bin/python3",
                                      "-c", code, str(log)], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.log = log

    def connections(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def stop(self) -> None:
        kill_session(self.proc)  # runuser and bob's listener under it
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def test_a_rewritten_server_info_is_refused_and_its_owner_restores_it(run_as, shared_dir):
    root = project(run_as, shared_dir)
    info = root / "server-info"
    # A slip of alice's (or a project of the old layout) leaves server-info group-writable.
    sh(run_as, "alice", root, 'chmod g+w "$P/server-info"')
    catcher = Listener("bob", shared_dir / "caught")
    try:
        # bob points everyone at his listener and opens the umask.
        rewrite = ("import json, sys; p = sys.argv[1]; d = json.load(open(p)); "
                   "d.update(host='127.0.0.1', port=int(sys.argv[2]), umask='0000'); "
                   "open(p, 'w').write(json.dumps(d))")
        run_as("bob", ["python", "-c", rewrite, str(info), str(catcher.port)])
        refused = f"Error: refusing {info}: writable by group balsamtest; ask the project " \
                  "owner alice to run: balsam perms fix"
        for user in ("carol", "bob"):
            proc = balsam_as(run_as, user, root, "ls", check=False)
            assert one_error_line(proc) == refused
            proc = sh(run_as, user, root, ACTIVATE, check=False)
            assert one_error_line(proc) == refused
        # alice's own tools read her private copy: the real server, never bob's.
        assert balsam_as(run_as, "alice", root, "ls").returncode == 0
        proc = sh(run_as, "alice", root, f"{ACTIVATE} && umask")
        assert proc.stdout.strip().splitlines()[-1] == "0007"
        assert catcher.connections() == 0
    finally:
        catcher.stop()
    # alice's activation published her copy again: bob's changes are gone, the group reads it.
    assert oct(info.stat().st_mode & 0o777) == oct(0o640)
    restored = json.loads(info.read_text())
    assert restored["port"] != catcher.port and restored["umask"] == "0007"
    assert balsam_as(run_as, "carol", root, "ls").returncode == 0


def test_planted_templates_never_run(run_as, shared_dir):
    root = project(run_as, shared_dir)
    marker = shared_dir / "PWNED"
    templates = root / "job-templates"
    # The old layout let the group write job-templates/: bob and carol (a viewer) plant.
    sh(run_as, "alice", root, 'chmod g+w "$P/job-templates"')
    run_as("bob", ["tee", str(templates / "local.sh")], input=PAYLOAD % marker)
    run_as("carol", ["tee", str(templates / "slurm.sh")], input=PAYLOAD % marker)
    submit = ("submit-launch", "-A", "P", "-q", "Q", "-t", "15", "-n", "5")
    for scheduler, planter in (("local", "bob"), ("slurm", "carol")):
        for extra in (("--dry-run",), ()):
            proc = balsam_as(run_as, "alice", root, *submit, "--scheduler", scheduler, *extra,
                             check=False)
            assert one_error_line(proc) == (
                f"Error: job template '{scheduler}.sh': refusing {templates}/{scheduler}.sh: "
                f"owned by {planter}, not alice; check it, then repair it with: balsam perms "
                f"fix (which also brings a project of the old layout up to date)")
    assert not (root / "qsubmit/qlaunch1.sh").exists()
    # Anywhere else on alice's lookup path bob can write: a BALSAM_HOME alice keeps in a
    # group-writable directory by mistake.
    sh(run_as, "alice", root, 'rm "$P"/job-templates/*.sh && chmod g-w "$P/job-templates"')
    home = shared_dir / "alice-balsam"
    run_as("alice", ["mkdir", "-m", "2770", "-p", str(home / "job-templates")])
    os.chmod(home / "job-templates", 0o2770)
    run_as("bob", ["tee", str(home / "job-templates/local.sh")], input=PAYLOAD % marker)
    proc = balsam_as(run_as, "alice", root, *submit, "--dry-run", check=False,
                     BALSAM_HOME=str(home))
    assert one_error_line(proc) == (
        f"Error: job template 'local.sh': refusing {home}/job-templates/local.sh: owned by bob, "
        f"not alice; it must be yours and writable only by you (chmod go-w)")
    # A symlink planted in alice's own template directory, to a file of hers, is refused too.
    run_as("alice", ["chmod", "700", str(home / "job-templates")])
    run_as("bob", ["rm", "-f", str(home / "job-templates/local.sh")], check=False)
    run_as("alice", ["rm", "-f", str(home / "job-templates/local.sh")])
    run_as("alice", ["ln", "-s", str(templates / ".." / "server-info"),
                     str(home / "job-templates/local.sh")])
    proc = balsam_as(run_as, "alice", root, *submit, "--dry-run", check=False,
                     BALSAM_HOME=str(home))
    assert "local.sh: a symbolic link, which balsam does not follow" in one_error_line(proc)
    # Even a template alice trusts (her own) cannot run code: it renders in a sandbox.
    run_as("alice", ["rm", str(home / "job-templates/local.sh")])
    write_as(run_as, "alice", templates / "local.sh", PAYLOAD % marker)
    proc = balsam_as(run_as, "alice", root, *submit, "--dry-run", check=False)
    assert "is unsafe" in one_error_line(proc)
    assert not marker.exists()


def test_planted_symlinks_are_never_followed(run_as, shared_dir):
    root = project(run_as, shared_dir)
    private = Path(tempfile.mkdtemp(prefix="balsam-alice-"))
    alice = pwd.getpwnam("alice")
    os.chown(private, alice.pw_uid, alice.pw_gid)
    victim = private / "victim.txt"
    try:
        run_as("alice", ["bash", "-c", f'umask 077 && echo precious > "{victim}"'])
        # bob links where alice's tools write: her next job script and its output, the old
        # server log, a task directory perms fix walks.
        for rel in ("qsubmit/qlaunch1.sh", "qsubmit/qlaunch1.out", "log/postgresql.log",
                    "data/link"):
            run_as("bob", ["ln", "-s", str(victim), str(root / rel)])
        proc = balsam_as(run_as, "alice", root, "submit-launch", "-t", "5", "-n", "1",
                         check=False)
        assert one_error_line(proc) == (f"Error: {root}/qsubmit/qlaunch1.out exists and is not "
                                        f"yours: remove it, or ask its owner to")
        balsam_as(run_as, "alice", root, "server", "stop")
        balsam_as(run_as, "alice", root, "server", "start")
        assert "database system is ready" in (root / "balsamdb/server.log").read_text()
        balsam_as(run_as, "alice", root, "perms", "fix")
        assert victim.read_text() == "precious\n"
        assert oct(victim.stat().st_mode & 0o777) == oct(0o600)
    finally:
        subprocess.run(["rm", "-rf", str(private)], check=True)


def test_the_servers_lock_and_log_are_the_owners_alone(run_as, shared_dir):
    root = project(run_as, shared_dir)
    # bob cannot create the old layout's lock, reach the new one, or read the server's log.
    grab = ("import fcntl, os, sys\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)\n"
            "        fcntl.flock(fd, fcntl.LOCK_EX); print('held', path)\n"
            "    except OSError as exc: print(exc.strerror, path)\n")
    proc = run_as("bob", ["python", "-c", grab, str(root / ".server-lock"),
                          str(root / "balsamdb/server.lock"), str(root / "balsamdb/server.log")])
    assert proc.stdout.count("Permission denied") == 3, proc.stdout
    # While root holds a lock on the old lock file, alice's stop and start do not wait for it.
    fd = os.open(root / ".server-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        balsam_as(run_as, "alice", root, "server", "stop")
        balsam_as(run_as, "alice", root, "server", "start")
        assert time.monotonic() - started < 30
    finally:
        os.close(fd)
        os.unlink(root / ".server-lock")


def test_perms_fix_by_a_member_never_touches_the_control_zone(run_as, shared_dir):
    root = project(run_as, shared_dir)
    sh(run_as, "alice", root, 'chmod g+w "$P/job-templates" "$P/server-ca.pem"')
    sh(run_as, "bob", root, 'umask 077 && mkdir "$P/data/bobs"')
    fix = balsam_as(run_as, "bob", root, "perms", "fix", check=False)
    assert fix.returncode == 1
    assert "fixed data/bobs" in fix.stdout
    assert "left  job-templates: mode 2770: writable by the group" in fix.stdout
    assert "only alice can fix the control zone" in fix.stdout
    assert oct((root / "job-templates").stat().st_mode & 0o7777) == oct(0o2770)
    check = balsam_as(run_as, "bob", root, "perms", "check", check=False)
    assert "the control zone's by its owner, alice" in check.stderr
    fix = balsam_as(run_as, "alice", root, "perms", "fix")
    assert "fixed job-templates" in fix.stdout
    assert balsam_as(run_as, "bob", root, "perms", "check").returncode == 0


def test_a_socket_directory_others_can_write_is_refused(run_as, shared_dir):
    """A writable .pgsocket would let bob swap the server's socket for his own."""
    root = project(run_as, shared_dir)
    sh(run_as, "alice", root, 'chmod g+w "$P/.pgsocket"')
    proc = balsam_as(run_as, "carol", root, "ls", check=False)
    assert one_error_line(proc) == (f"Error: refusing {root}/.pgsocket: writable by group "
                                    f"balsamtest; ask the project owner alice to run: balsam "
                                    f"perms fix")
