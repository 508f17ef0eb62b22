"""The embedded server on the network: TCP is TLS only and every client verifies the server
against the project's CA; connections that never authenticate free their slot within the
authentication timeout, and the administrator keeps reserved room; the server keeps its port and
clients follow it when it moves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from balsam.project import Project
from balsam_pgserver.server import free_port
from balsam_testing.launchers import kill_session
from balsam_testing.pg import ACTIVATE, balsam_as, sh, sql_as

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

TCP = {"BALSAM_DB_TRANSPORT": "tcp", "BALSAM_DB_HOST": "127.0.0.1"}
SECONDS_TO_AUTHENTICATE = 5  # authentication_timeout


def project(run_as, shared_dir: Path) -> Path:
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob")
    sh(run_as, "bob", root, ACTIVATE)  # bob's password
    return root


@dataclass
class Background:
    """A process of one user, its output lines collected as they come."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def first_line(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not self.lines:
            assert time.monotonic() < deadline and self.proc.poll() is None
            time.sleep(0.05)
        return self.lines[0]

    def wait_for(self, line: str, after: int = 0, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while line + "\n" not in self.lines[after:]:
            assert time.monotonic() < deadline, (line, self.lines[-3:])
            assert self.proc.poll() is None or line + "\n" in self.lines, self.lines[-3:]
            time.sleep(0.05)


@contextmanager
def background(user: str, code: str, *args: str, **env: str) -> Iterator[Background]:
    """Run Python ``code`` as ``user`` for the block (stdin open until the block ends)."""
    command = ["runuser", "-u", user, "--", "env", f"HOME=/home/{user}",
               *(f"{k}={v}" for k, v in env.items()), sys.executable, "-c", code, *args]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    bg = Background(proc)
    reader = threading.Thread(target=lambda: bg.lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        yield bg
    finally:
        try:
            proc.communicate("\n" if proc.poll() is None else None, timeout=30)
        except (subprocess.TimeoutExpired, BrokenPipeError, ValueError):
            kill_session(proc)  # runuser and the user's process under it
            proc.wait()
        reader.join(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def password_of(user: str, root: Path) -> str:
    uuid = Project.load(root).info.uuid
    return Path(f"/home/{user}/.balsam/credentials/{uuid}").read_text().strip()


# --- TLS ---------------------------------------------------------------------------------------

#: A plain-text login attempt with a correct password (argv: port, password).
PLAIN = """
import sys, psycopg
try:
    psycopg.connect(host="127.0.0.1", port=sys.argv[1], user="bob", dbname="balsam",
                    password=sys.argv[2], sslmode="disable", connect_timeout=5).close()
    print("connected")
except psycopg.OperationalError as exc:
    print(str(exc).strip().splitlines()[-1])
"""

#: A server on the project's port with a certificate of its own CA, made for this host's names
#: (argv: port, directory, log). It answers PostgreSQL's SSLRequest and logs what it receives.
IMPOSTOR = r"""
import datetime, ipaddress, socket, ssl, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
port, directory, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())])
now = datetime.datetime.now(datetime.timezone.utc)
alt = [x509.DNSName(socket.gethostname()), x509.DNSName("localhost"),
       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256()))
open(f"{directory}/impostor.crt", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(f"{directory}/impostor.key", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(f"{directory}/impostor.crt", f"{directory}/impostor.key")
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("", port)); listener.listen()
print("listening", flush=True)
while True:  # killed by the test
    conn, _ = listener.accept()
    with open(log, "a") as out:
        conn.recv(8)
        conn.sendall(b"S")
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            out.write(f"handshake failed: {exc}\n")
            continue
        out.write(f"received after the handshake: {tls.recv(4096)!r}\n")
"""


def test_tcp_is_tls_only_and_the_server_is_verified(run_as, shared_dir):
    root = project(run_as, shared_dir)
    port = Project.load(root).info.port
    # A member's TCP connection works, over TLS.
    tls = "SELECT current_user AS me, ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert sql_as(run_as, "bob", root, tls, **TCP) == [[{"me": "bob", "ssl": True,
                                                         "version": "TLSv1.3"}]]
    # Without TLS, even the right password is refused.
    plain = run_as("bob", ["python", "-c", PLAIN, str(port), password_of("bob", root)])
    assert plain.stdout.strip().endswith(
        'pg_hba.conf rejects connection for host "127.0.0.1", user "bob", database "balsam", '
        'no encryption')
    # The server is down; dave's impostor takes its port. bob's client refuses it before
    # sending anything: no password reaches the impostor.
    balsam_as(run_as, "alice", root, "server", "stop")
    work = Path(run_as("dave", ["mktemp", "-d"]).stdout.strip())
    log = work / "impostor.log"
    with background("dave", IMPOSTOR, str(port), str(work), str(log)) as impostor:
        impostor.wait_for("listening")
        proc = balsam_as(run_as, "bob", root, "ls", check=False, **TCP)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"Error: refusing the server at 127.0.0.1:{port}: it did "
                                      f"not prove it is the project's")
        assert "certificate verify failed" in proc.stderr
        assert proc.stderr.strip().endswith("no password was sent")
        seen = log.read_text()
        assert "handshake failed" in seen and "received after the handshake" not in seen
        impostor.proc.kill()


# --- connection exhaustion --------------------------------------------------------------------

#: Hold up to N connections stalled in authentication (argv: port, user, N): each does the TLS
#: handshake, sends a startup packet and never answers the SCRAM challenge. Refills what the
#: server drops until a line comes on stdin; then holds what it has, silent, and reports when
#: the server has closed every one of them.
STALLER = r"""
import select, socket, ssl, struct, sys, threading, time
port, user, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
def stall():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(struct.pack("!ii", 8, 80877103))
    assert s.recv(1) == b"S"
    t = context.wrap_socket(s)
    params = b"user\0" + user.encode() + b"\0database\0balsam\0\0"
    t.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    return t if t.recv(1) == b"R" else t.close()
held = []
def prune():
    global held
    gone = set(select.select(held, [], [], 0)[0]) if held else set()
    for t in gone: t.close()
    held = [t for t in held if t not in gone]
while not stop.is_set():
    prune()
    while len(held) < want:
        t = stall()
        if t is None: break
        held.append(t)
    print("held", len(held), flush=True)
    time.sleep(0.1)
stopped = time.monotonic()
while held:
    time.sleep(0.05); prune()
print("all closed after", round(time.monotonic() - stopped, 2), flush=True)
"""


#: One login over the project's socket; print the refusal, if any.
TRY_LOGIN = """
import psycopg
from balsam.project import Project
try:
    psycopg.connect(Project.from_env().conninfo()).close()
    print("connected")
except psycopg.OperationalError as exc:
    print(str(exc).strip())
"""


def test_unauthenticated_connections_never_lock_the_administrator_out_for_long(run_as,
                                                                              shared_dir):
    root = project(run_as, shared_dir)
    # A small server (the owner's choice in server-info) makes the slots countable.
    resize = ("import dataclasses; from balsam.project import Project; p = Project.from_env(); "
              "p.info = dataclasses.replace(p.info, max_connections=20); p.save_info()")
    sh(run_as, "alice", root, 'balsam server stop && python -c "$CODE" && balsam server start',
       CODE=resize, BALSAM_DB_PATH=str(root))
    admin = ("server", "--list-users")
    # 1. A hostile member opens every session the server gives him: 17, three short of 20.
    #    balsam_admin still gets in; bob's next session is refused.
    hog = ("import psycopg\nfrom balsam.project import Project\n"
           "p = Project.from_env(); held = []\n"
           "try:\n"
           "    while True: held.append(psycopg.connect(p.conninfo()))\n"
           "except psycopg.OperationalError as exc:\n"
           "    print(len(held), str(exc).strip(), flush=True)\n"
           "input()\n")
    with background("bob", hog, BALSAM_DB_PATH=str(root)) as hogger:
        count, refusal = hogger.first_line().split(" ", 1)
        assert count == "17"
        assert "remaining connection slots are reserved for non-replication superuser" in refusal
        assert "bob" in balsam_as(run_as, "alice", root, *admin).stdout
    # 2. dave, who has no role at all, holds as many connections in authentication as the
    #    server has slots outside the reserve: balsam_admin still gets in.
    port = str(Project.load(root).info.port)
    with background("dave", STALLER, port, "bob", "17") as staller:
        staller.wait_for("held 17")
        # The slots outside the reserve are taken (a stalled one expires and is refilled now and
        # then, hence three tries): bob is refused, balsam_admin gets in.
        tries = [run_as("bob", ["python", "-c", TRY_LOGIN], env={"BALSAM_DB_PATH": str(root)})
                 .stdout for _ in range(3)]
        assert any("remaining connection slots are reserved" in t for t in tries), tries
        assert "bob" in balsam_as(run_as, "alice", root, *admin).stdout
        # dave stops refilling but keeps every socket open: the server drops each one when its
        # authentication time is up, and bob is back.
        staller.tell("stop")
        stopped = time.monotonic()
        staller.proc.wait(timeout=SECONDS_TO_AUTHENTICATE + 20)
        deadline = time.monotonic() + 10  # its last words may still be on their way
        while not (staller.lines and staller.lines[-1].startswith("all closed")):
            assert time.monotonic() < deadline, staller.lines[-3:]
            time.sleep(0.02)
        last = staller.lines[-1].split()
        assert last[:3] == ["all", "closed", "after"]
        assert float(last[3]) <= SECONDS_TO_AUTHENTICATE + 1
    assert sql_as(run_as, "bob", root, "SELECT 1 AS one", **TCP) == [[{"one": 1}]]
    assert time.monotonic() - stopped < SECONDS_TO_AUTHENTICATE + 15


# --- the port --------------------------------------------------------------------------------

#: bob's long-lived API client: a query every 0.2 s through balsam.api.connection(), printing
#: the port it reached (or the error), until stdin closes.
CLIENT = r"""
import sys, threading, time
from balsam import api
from balsam.errors import BalsamError
from balsam.db import wrap_db_errors
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.is_set():
    try:
        with wrap_db_errors():
            conn = api.connection()
            conn.execute("SELECT 1")
            print("ok", conn.info.port, flush=True)
    except BalsamError as exc:
        print("error", str(exc)[:60], flush=True)
    time.sleep(0.2)
"""


def test_the_port_is_kept_and_clients_follow_a_move(run_as, shared_dir):
    root = project(run_as, shared_dir)
    port = Project.load(root).info.port
    with background("bob", CLIENT, BALSAM_DB_PATH=str(root), **TCP) as client:
        client.wait_for(f"ok {port}")
        # A crash and a restart: the same port, and the client carries on.
        pid = int((root / "balsamdb/postmaster.pid").read_text().split()[0])
        subprocess.run(["kill", "-9", str(pid)], check=True)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists():  # reaped: PostgreSQL's own lock check agrees
            assert time.monotonic() < deadline
            time.sleep(0.05)
        mark = len(client.lines)
        balsam_as(run_as, "alice", root, "server", "start")
        assert Project.load(root).info.port == port
        client.wait_for(f"ok {port}", after=mark)
        # Someone else takes the port while the server is down: the start says so in one line
        # and how to pick another; the new port is recorded and the client follows it.
        balsam_as(run_as, "alice", root, "server", "stop")
        with socket.socket() as squatter:
            # the server's side of the client's closed connections may linger in TIME_WAIT
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("", port))
            squatter.listen()
            taken = balsam_as(run_as, "alice", root, "server", "start", check=False)
            assert taken.returncode == 1
            assert taken.stderr.strip() == (
                f"Error: port {port} on {socket.gethostname()} is taken by another program; the "
                f"server keeps its port so that clients find it: pick another with balsam server "
                f"start --port N")
            new = free_port()
            mark = len(client.lines)
            balsam_as(run_as, "alice", root, "server", "start", "--port", str(new))
        assert json.loads((root / "server-info").read_text())["port"] == new
        client.wait_for(f"ok {new}", after=mark)
