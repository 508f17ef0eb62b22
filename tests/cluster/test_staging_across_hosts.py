"""Data staging across hosts: a task in a real Slurm batch job on a compute node fetches its
input from the login node's private /tmp (which the compute nodes cannot see) with rsync, and
sends its result back there, the launcher running rsync with its own argument list.

The cluster has no sshd, so the remote shell (``BALSAM_TRANSFER_SSH``) is a small rsh over TCP:
a server started as alice on the login node runs each command it is sent, its standard input
and output being the connection; the client takes ssh's arguments. The bytes cross hosts."""

from __future__ import annotations

import sys
import time

import pytest

from balsam_testing.launchers import SSH_ARGS

pytestmark = [pytest.mark.cluster, pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

PORT = 7022
#: ``rsh-server PORT PIDFILE``: runs ``sh -c LINE`` for the first line of each connection, with the
#: connection as its standard input and output.
SERVER = """
import os, signal, socket, sys
signal.alarm(600)  # never outlives the test by long
listener = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
with open(sys.argv[2], "w") as pidfile:
    pidfile.write(str(os.getpid()))
while True:
    conn, _ = listener.accept()
    if os.fork() == 0:
        listener.close()
        line = b""
        while not line.endswith(b"\\n"):
            line += conn.recv(1)
        fd = conn.detach()
        os.dup2(fd, 0)
        os.dup2(fd, 1)
        os.execv("/bin/sh", ["sh", "-c", line.decode().rstrip("\\n")])
    conn.close()
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break
"""
#: ``rsh [ssh options] HOST COMMAND...``: ssh's command line, over the server above.
CLIENT = SSH_ARGS + """
import socket, threading
command = "exec /usr/lib/openssh/sftp-server" if subsystem else " ".join(words)
conn = socket.create_connection((host, int(os.environ["BALSAM_TEST_RSH_PORT"])))
conn.sendall(command.encode() + b"\\n")

def send():
    while data := os.read(0, 65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)

threading.Thread(target=send, daemon=True).start()
while data := conn.recv(65536):
    os.write(1, data)
"""
UPPER = """#!/bin/sh
tr a-z A-Z < input.txt > result.txt
hostname > host.txt
"""


def test_rsync_stage_in_and_out_between_login_and_a_compute_node(project):
    cluster = project.cluster
    tools = project.root / "data" / "rsh"
    cluster.run("login", ["mkdir", "-p", str(tools)], user="alice")
    server = project.write("alice", tools / "server.py", SERVER, "0750")
    client = project.write("alice", tools / "client.py", f"#!{sys.executable}\n{CLIENT}", "0750")
    cluster.run("login", ["sh", "-c", "rm -rf /tmp/staging && mkdir -p /tmp/staging/in && "
                          "echo 'from the login node' > /tmp/staging/in/input.txt"], user="alice")
    assert cluster.run("node1", ["test", "-e", "/tmp/staging/in"], check=False).returncode != 0
    pidfile = tools / "server.pid"
    rsh = cluster.start("login", [sys.executable, str(server), str(PORT), str(pidfile)],
                        user="alice")
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        app = project.script("alice", "upper", UPPER)
        project.sh("alice", 'balsam app --name upper --executable "$1" >/dev/null', app)
        out = project.sh("alice", "balsam job --name up --workflow staging --app upper "
                                  "--url-in rsync://login/tmp/staging/in/ "
                                  "--url-out rsync://alice@login/tmp/staging/out "
                                  "--stage-out-files 'result.txt host.txt'").stdout
        task = int(out.split()[2])
        env = {"BALSAM_TRANSFER_SSH": str(client), "BALSAM_TEST_RSH_PORT": str(PORT)}
        job = project.submit("alice", "-n", "1", "-t", "5", "--job-mode", "serial",
                             "--wf-filter", "staging", env=env)
        project.wait(job)
    finally:
        if pidfile.exists():
            cluster.run("login", ["kill", pidfile.read_text()], user="alice", check=False)
        rsh.wait(timeout=30)
    [row] = project.sql("SELECT state, state_message FROM tasks WHERE id = %s", task)
    assert row["state"] == "JOB_FINISHED", row["state_message"]
    moves = project.sql("SELECT to_state, message FROM task_events WHERE task_id = %s "
                        "ORDER BY id", task)
    assert ("STAGED_IN", "1 item(s) staged in from rsync://login/tmp/staging/in/") in [
        (m["to_state"], m["message"]) for m in moves]
    result = cluster.run("login", ["cat", "/tmp/staging/out/result.txt",
                                   "/tmp/staging/out/host.txt"], user="alice").stdout
    text, host = result.splitlines()
    assert text == "FROM THE LOGIN NODE" and host in cluster.compute
