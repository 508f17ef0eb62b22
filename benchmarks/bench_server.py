"""Starting the embedded server: the postmaster started directly and ready when
``postmaster.pid`` says so (what balsam does), against ``pg_ctl start -w`` (what it did before,
through a shell), on the same throwaway cluster; and the server certificate each start issues."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

from balsam_pgserver import server, tls
from balsam_testing.pg import PgServer, throwaway_cluster


def _row(metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"benchmark": "server", "metric": metric, "value": round(value, 3), "unit": unit}


def pg_ctl_start(pg: PgServer) -> None:
    """The old way, kept here only to compare (pg_ctl hands -o to /bin/sh: safe paths only)."""
    settings = ("max_connections=300", *server.FAST_SETTINGS)  # as PgServer.start
    options = " ".join([f"-p {pg.port} -k {pg.sockdir} -c listen_addresses={pg.listen}",
                        *(f"-c {s}" for s in settings)])
    proc = server._run([server.bindir() / "pg_ctl", "-D", pg.datadir, "-l",
                        pg.sockdir / "pg_ctl.log", "-w", "-t", "60", "-o", options, "start"],
                       pg.run_as)
    assert proc.returncode == 0, proc.stderr


def median_start(pg: PgServer, start: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        server.stop(pg.datadir, run_as=pg.run_as)  # a clean stop: no recovery at the start
        began = time.perf_counter()
        start()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 5 if quick else 20
    with throwaway_cluster(prefix="balsam-bench-server-", listen="127.0.0.1") as pg:
        direct = median_start(pg, pg.start, rounds)
        with_pg_ctl = median_start(pg, lambda: pg_ctl_start(pg), rounds)
        server.stop(pg.datadir, run_as=pg.run_as)
        pg.start()
    ca_key, ca_cert = tls.make_ca("bench", datetime.now(UTC))
    names, addresses = tls.host_names(), tls.host_addresses()
    issue = []
    for _ in range(rounds * 4):
        began = time.perf_counter()
        tls.make_server_cert(ca_key, ca_cert, names, addresses, datetime.now(UTC))
        issue.append(time.perf_counter() - began)
    return [_row("start: postmaster directly (median)", 1000 * direct, "ms"),
            _row("start: pg_ctl start -w (median, before)", 1000 * with_pg_ctl, "ms"),
            _row("pg_ctl / direct", with_pg_ctl / direct, "x"),
            _row("issue the server certificate (median)", 1000 * statistics.median(issue), "ms")]


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
