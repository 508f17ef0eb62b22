"""Legacy Balsam 0.5's Python API inside running tasks, through real launcher processes: the
legacy user guide's scripts (the NWChem tutorial's pre/post/plot scripts, the Python API
tutorial's app, the container tutorial's error handler, the dag module's own example, the FAQ's
polling recipe), written out as the guide prints them, with the substitutions listed next to
each (site paths, and a smaller scale for a 2-core machine); and legacy's ``mkchild`` and
``make_dummies`` commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balsam import api
from balsam.db import connect
from balsam.models import Event
from balsam_testing import launchers as lt

pytestmark = [pytest.mark.pg, pytest.mark.slow]

VENV_BIN = str(Path(sys.executable).parent)
PATH = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"}


def write(directory: Path, name: str, text: str, *, executable: bool = True) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755 if executable else 0o644)
    return path


def run_launcher(project, db, *args: str, output: Path, timeout: float = 240) -> None:
    """A real launcher process consuming all work; fails the test with its log if it does not
    end with every task final."""
    proc = lt.start_launcher(project.root, "--consume-all", "--poll-interval", "0.2",
                             "--nodes", "2", *args, env=PATH, output=output)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            lt.kill_session(proc)
        unfinished = {i: r["state"] for i, r in lt.states(db).items()
                      if r["state"] not in ("JOB_FINISHED", "FAILED", "USER_KILLED")}
        assert proc.returncode == 0 and not unfinished, (unfinished, output.read_text()[-3000:])
    finally:
        if proc.poll() is None:
            lt.kill_session(proc)


def history(task_id: int) -> list[tuple[str, str]]:
    return [(e.to_state, e.message) for e in api.history(task_id) if isinstance(e, Event)]


# --- docs/tutorial/balsam_demo/2-python/app.py (docs/tutorial/api.md) ---------------------------

APP_PY = '''#!/usr/bin/env python
import os
import sys
from balsam.core.models import BalsamJob, ApplicationDefinition
from balsam.launcher.dag import current_job

# Bootstrap app if it's not already in the DB
ApplicationDefinition.objects.get_or_create(
    name = 'square',
    executable = os.path.abspath(__file__),
)

def run(job):
    """If we're inside a Balsam task, do the calculation"""
    x = job.data['x']
    y = x**2
    job.data['y'] = y
    job.save()

def create_jobs(N):
    """If we're on a command line, create N tasks to square a number"""
    for i in range(N):
        job = BalsamJob(
            name = f"square{i}",
            workflow = "demo-square",
            application = "square",
            node_packing_count=64, # Run up to 64 per node
        )
        job.data["x"] = i
        job.save()
    print(f"Created {N} jobs")

if __name__ == "__main__":
    if current_job:
        run(current_job)
    else:
        N = int(sys.argv[1])
        create_jobs(N)
'''

# --- docs/tutorial/nwcontainer.md: the error handler -------------------------------------------

NW_POST_PY = '''#!/usr/bin/env python
from balsam.launcher.dag import current_job

if current_job.state == "RUN_ERROR":
    stdout = open(current_job.name+'.out').read() # read output from current workdir
    if 'unknown userid' in stdout:
        current_job.update_state("RESTART_READY", "detected getpwuid error; retrying...")
'''

#: Fails once the way Singularity on Theta did, then works.
FLAKY_SH = '''#!/bin/sh
if [ ! -e tried ]; then touch tried; echo "FATAL: unknown userid 1234"; exit 1; fi
echo "energy computed"
'''

# --- balsam/launcher/dag.py's docstring: a post-processing script -------------------------------
# Substitutions: the docstring's `walltime_minutes` (not a field, in legacy either) is
# `wall_time_minutes`; `expected_output` comes from the app below.

DAG_POST_PY = '''#!/usr/bin/env python
import balsam.launcher.dag as dag

output = open('expected_output').read() # in job workdir

if 'CONVERGED' not in output:
    # Kill subtree of this job
    for child in dag.children:
        dag.kill(child, recursive=True)

    # Create a child clone job with increased walltime and new input
    with open("input_rescue.dat", 'w') as fp:
        fp.write("# a new input file here")

    dag.spawn_child(clone=True,
        wall_time_minutes=dag.current_job.wall_time_minutes + 10,
        input_files = 'input_rescue.dat')
'''

#: Converges only with the rescue input its parent leaves it.
CONVERGE_SH = '''#!/bin/sh
if [ -e input_rescue.dat ]; then echo CONVERGED; else echo NO; fi > expected_output
'''

# --- docs/userguide/app.md: a pre/post script reading the task's state -------------------------

GUIDE_POST_PY = '''#!/usr/bin/env python
from balsam.launcher.dag import current_job

def timeout_handler():
    """Run this code before restarting a job that ran out of time"""
    pass

if current_job.state == "RUN_TIMEOUT":
    timeout_handle()
'''

#: Makes a child of the task it runs in, with legacy's command line.
MKCHILD_SH = '''#!/bin/sh
balsam mkchild --name kid --application plain --args "made by $BALSAM_JOB_ID" --yes
'''


def test_legacy_scripts_inside_tasks_through_a_serial_launcher(project, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", PATH["PATH"])
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    app_py = write(tmp_path, "app.py", APP_PY)
    # "python app.py 16" from a login shell (here 6 tasks): the app and its jobs.
    made = subprocess.run([sys.executable, str(app_py), "6"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert made.returncode == 0 and made.stdout == "Created 6 jobs\n", made.stderr

    api.add_app("flaky", str(write(tmp_path, "flaky.sh", FLAKY_SH)),
                postprocess=str(write(tmp_path, "nw_post.py", NW_POST_PY)))
    flaky = api.add_task("flaky", name="w6", workflow="nw", post_error_handler=True)
    api.add_app("converge", str(write(tmp_path, "converge.sh", CONVERGE_SH)),
                postprocess=str(write(tmp_path, "dag_post.py", DAG_POST_PY)))
    api.add_app("plain", "/bin/echo", postprocess=str(write(tmp_path, "guide.py", GUIDE_POST_PY)))
    first = api.add_task("converge", name="scf", workflow="dag", wall_time_minutes=5)
    doomed = api.add_task("plain", name="analysis", workflow="dag", parents=[first.id])
    api.add_app("maker", str(write(tmp_path, "mkchild.sh", MKCHILD_SH)))
    maker = api.add_task("maker", name="maker", workflow="mk")

    with connect(project) as db:
        run_launcher(project, db, "--job-mode", "serial", output=tmp_path / "serial.log")

    # the app recorded its results from inside each task (RUNNING, held by the launcher)
    squares = api.get_tasks(workflow="demo-square")
    assert [(t.state, t.data) for t in squares] == [
        ("JOB_FINISHED", {"x": i, "y": i * i}) for i in range(6)]
    # the error handler asked for another run, which worked
    assert [s for s, _ in history(flaky.id)][3:] == [
        "RUNNING", "RUN_ERROR", "RESTART_READY", "RUNNING", "RUN_DONE", "POSTPROCESSED",
        "JOB_FINISHED"]
    assert ("RESTART_READY", "detected getpwuid error; retrying...") in history(flaky.id)
    # the dag example killed the planned analysis and spawned a converging clone
    clone = api.get_task(max(api.children(first.id)))
    assert api.get_task(doomed.id).state == "USER_KILLED"
    assert (clone.name, clone.workflow, clone.wall_time_minutes, clone.input_files) == (
        "scf", "dag", 15, "input_rescue.dat")
    assert clone.state == "JOB_FINISHED" and api.get_task(first.id).state == "JOB_FINISHED"
    assert (api.workdir(clone) / "expected_output").read_text() == "CONVERGED\n"
    # mkchild inside a task: a child of that task, in its workflow
    [kid] = api.children(maker.id)
    kid_task = api.get_task(kid)
    assert (kid_task.name, kid_task.workflow, kid_task.args, kid_task.state) == (
        "kid", "mk", f"made by {maker.id}", "JOB_FINISHED")
    assert (api.workdir(kid_task) / "kid.out").read_text() == f"made by {maker.id}\n"


def test_a_task_holds_only_its_own_results(project, tmp_path, monkeypatch):
    """Inside a task, saving a field the launcher runs with is refused (the task fails with the
    message), and so is saving another held task's data."""
    monkeypatch.setenv("PATH", PATH["PATH"])
    bad = write(tmp_path, "bad.py", '''#!/usr/bin/env python
import sys
from balsam.launcher.dag import current_job
current_job.data["before"] = 1
current_job.save()
current_job.args = "--more"
try:
    current_job.save()
except Exception as exc:
    print("refused:", exc)
    sys.exit(3)
''')
    api.add_app("bad", str(bad))
    task = api.add_task("bad", name="bad", workflow="w", auto_timeout_retry=False)
    with connect(project) as db:
        run_launcher(project, db, "--job-mode", "serial", output=tmp_path / "bad.log")
    found = api.get_task(task.id)
    assert found.state == "FAILED" and found.data == {"before": 1} and found.args == ""
    out = (api.workdir(found) / "bad.out").read_text()
    assert f"refused: task {task.id} is held by launcher" in out
    assert "only the task itself may change its data and description" in out


def test_faq_polling_and_make_dummies_with_a_launcher_running(project, tmp_path, monkeypatch):
    """docs/faq/recipes.md's polling recipe, while a launcher runs the job; and legacy's
    ``balsam make_dummies N``."""
    monkeypatch.setenv("PATH", PATH["PATH"])
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    made = subprocess.run([str(Path(VENV_BIN) / "balsam"), "make_dummies", "3"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and "Added 3 dummy tasks" in made.stdout, made.stderr
    writer = write(tmp_path, "writer.sh", "#!/bin/sh\necho 'result 42' > output.dat\n")
    api.add_app("writer", str(writer))
    proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                             "--poll-interval", "0.2", env=PATH, output=tmp_path / "l.log")
    try:
        import time

        from balsam.launcher import dag

        def poll_until_state(job, state, timeout_sec=60.0, delay=5.0):
            start = time.time()
            while time.time() - start < timeout_sec:
                time.sleep(delay)
                job.refresh_from_db()
                if job.state == state:
                    return True
            return False

        newjob = dag.add_job(name="newjob", workflow="faq", application="writer")
        success = poll_until_state(newjob, 'JOB_FINISHED', timeout_sec=120, delay=0.5)

        if success:
            output = newjob.read_file_in_workdir('output.dat') # contents of file in a string
        assert success and output == "result 42\n"
        with connect(project) as db:
            lt.wait_until_final(db, api.task_ids(workflow="dummy"), timeout=120, procs=[proc])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    dummies = api.get_tasks(workflow="dummy")
    assert [(t.name, t.state, t.app_name) for t in dummies] == [
        (f"dummy{i}", "JOB_FINISHED", "dummy") for i in range(3)]
    assert (api.workdir(dummies[0]) / "dummy0.out").read_text() == "hello\n"


# --- docs/tutorial/balsam_demo/3-nwchem (docs/tutorial/nwchem.md) -------------------------------

NW_APPS_PY = '''#!/usr/bin/env python
# apps.py
\'\'\'Register the two Applications\'\'\'
import os
from balsam.core.models import ApplicationDefinition as App

if not App.objects.filter(name="nwchem-water").exists():
    nwchem = App(
        name = 'nwchem-water',
        executable = '/soft/applications/nwchem/6.8/bin/nwchem',
        preprocess = os.path.abspath('pre.py'),
        postprocess = os.path.abspath('post.py'),
        envscript = os.path.abspath('envs.sh'),
    )
    nwchem.save()

if not App.objects.filter(name="plot-pes").exists():
    plotter = App(
        name = 'plot-pes',
        executable = os.path.abspath('plot.py')
    )
    plotter.save()
'''

NW_POPULATE_PY = '''#!/usr/bin/env python
# populate.py
\'\'\'Add Water potential energy scan tasks to DB\'\'\'

from balsam.launcher.dag import BalsamJob, add_dependency
import numpy as np

r_grid = np.linspace(0.8, 1.3)

water_scan = []
for i, r in enumerate(r_grid):
    job = BalsamJob(
        name=f"task{i}",
        workflow="demo",
        description=f"r = {r:.3f}",
        application = "nwchem-water",
        args = "input.nw",
        num_nodes = 1,
        ranks_per_node = 64,
        cpu_affinity = "depth",
        data = {'r':r, 'theta': 104.5},
    )
    water_scan.append(job)
    job.save()

plotjob = BalsamJob(
    name="plot",
    application="plot-pes",
    workflow="demo",
    input_files="",
)
plotjob.save()
for job in water_scan:
    add_dependency(parent=job, child=plotjob)
'''

NW_PRE_PY = '''#!/usr/bin/env python
# pre.py
\'\'\'Generate input file for NWChem\'\'\'

import numpy as np
from balsam.launcher.dag import current_job

def water_cartesian(r, theta):
    cost = np.cos(np.radians(theta))
    sint = np.sin(np.radians(theta))
    O = ['O', 0.0, 0.0, 0.0]
    H1 = ['H', r, 0.0, 0.0]
    H2 = ['H', r*cost, r*sint, 0.0]
    return (O,H1,H2)

def input_deck(cartesian_coords):
    coords = [' '.join(map(str, c)) for c in cartesian_coords]
    return f\'\'\'
    start h2o
    title "Water in 6-31g basis"

    geometry
    {coords[0]}
    {coords[1]}
    {coords[2]}
    end
    basis
    * library 6-31g
    end
    task scf
    \'\'\'

data = current_job.data
r, theta = data['r'], data['theta']
coords = water_cartesian(r, theta)
with open('input.nw', 'w') as fp:
    fp.write(input_deck(coords))
'''

NW_POST_DEMO_PY = '''#!/usr/bin/env python
# post.py
\'\'\'Parse Energy from NWChem output\'\'\'

from balsam.launcher.dag import current_job

outfile = current_job.name + ".out"
energy = None

with open(outfile) as fp:
    for line in fp:
        if 'Total SCF energy' in line:
            energy = float(line.split()[-1])
            break

current_job.data['energy'] = energy
current_job.save()
'''

NW_PLOT_PY = '''#!/usr/bin/env python
# plot.py

\'\'\'Summarize results in plottable text format\'\'\'
from balsam.launcher.dag import current_job

results = [
    (task.data['r'], task.data['energy'])
    for task in current_job.get_parents()
]

results = sorted(results, key=lambda pair: pair[0])
print("%18s %18s" % ("O-H length / Ang", "Energy / a.u."))
for r,e in results:
    print("%18.3f %18.6f" % (r,e))
'''

#: Stands in for NWChem: an energy from the first H's distance in input.nw (each rank prints,
#: in one write: the ranks share the output file).
FAKE_NWCHEM = '''#!/usr/bin/env python
import os, sys
words = [ln.split() for ln in open(sys.argv[1]) if ln.split()[:1] == ["H"]]
r = float(words[0][1])
rank, env = os.environ.get("OMPI_COMM_WORLD_RANK"), os.environ.get("FROM_ENVS")
energy = -76.0 + (r - 0.96) ** 2
os.write(1, f"rank {rank} env {env}\\n         Total SCF energy = {energy:.8f}\\n".encode())
'''


def test_nwchem_tutorial_through_an_mpi_launcher(project, tmp_path, monkeypatch):
    """The NWChem tutorial's scripts, run as its example.sh runs them (chmod +x *.py; python
    apps.py; python populate.py; then a launcher in mpi mode). Substitutions: NWChem's path is a
    stand-in's; the scan has 3 points, not 50, of 2 ranks, not 64."""
    import shutil

    if shutil.which("mpirun") is None:
        pytest.skip("needs mpirun")
    monkeypatch.setenv("PATH", PATH["PATH"])
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    nwchem = write(tmp_path, "nwchem", FAKE_NWCHEM)
    write(tmp_path, "envs.sh", "export FROM_ENVS=sourced\n", executable=False)
    write(tmp_path, "apps.py", NW_APPS_PY.replace("/soft/applications/nwchem/6.8/bin/nwchem",
                                                  str(nwchem)))
    write(tmp_path, "populate.py", NW_POPULATE_PY.replace(
        "np.linspace(0.8, 1.3)", "np.linspace(0.8, 1.3, 3)").replace(
        "ranks_per_node = 64", "ranks_per_node = 2"))
    for name, text in (("pre.py", NW_PRE_PY), ("post.py", NW_POST_DEMO_PY),
                       ("plot.py", NW_PLOT_PY)):
        write(tmp_path, name, text)
    for script in ("apps.py", "populate.py"):
        done = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    with connect(project) as db:
        run_launcher(project, db, "--job-mode", "mpi", output=tmp_path / "mpi.log")
    scan = api.get_tasks(workflow="demo", name="task")
    assert len(scan) == 3 and {t.state for t in scan} == {"JOB_FINISHED"}, scan[0].state_message
    for t in scan:
        assert t.data["energy"] == pytest.approx(-76.0 + (t.data["r"] - 0.96) ** 2, abs=1e-7)
        out = (api.workdir(t) / f"{t.name}.out").read_text()
        assert "rank 0 env sourced" in out and "rank 1 env sourced" in out
    [plot] = api.get_tasks(workflow="demo", name="plot")
    table = (api.workdir(plot) / "plot.out").read_text().splitlines()
    assert table[0].split() == ["O-H", "length", "/", "Ang", "Energy", "/", "a.u."]
    rows = [tuple(map(float, line.split())) for line in table[1:]]
    assert rows == sorted(rows) and [r for r, _ in rows] == [0.8, 1.05, 1.3]
    assert [e for _, e in rows] == [round(t.data["energy"], 6) for t in scan]

    # docs/tutorial/nwcontainer.md: throughput over time, plotted (MPLBACKEND=Agg, no screen)
    snippet = '''from matplotlib import pyplot as plt
from balsam.core import models

timestamps, num_done = models.throughput_report()
plt.step(timestamps, num_done, where="post")
plt.show()
print(list(num_done))
'''
    shown = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})
    assert shown.returncode == 0 and shown.stdout.splitlines()[-1] == "[1, 2, 3, 4]", shown.stderr
