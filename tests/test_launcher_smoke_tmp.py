import subprocess, time
from balsam.db import connect
from balsam_launcher import testing as lt

def test_smoke(project, tmp_path):
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        counts = tmp_path / "counts"
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0 {counts}"} for i in range(20)])
        p = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "4", "--consume-all", output=tmp_path / "out")
        try:
            final = lt.wait_until_final(db, ids, 60, [p])
        finally:
            p.wait(30)
        print((tmp_path / "out").read_text())
        print(sorted(project.log_dir.glob("launcher_*"))[0].read_text()[:3000])
        assert {r["state"] for r in final.values()} == {"JOB_FINISHED"}
        assert lt.executions(counts) == {i: 1 for i in ids}
        assert p.returncode == 0
