"""Legacy Balsam 0.5's models (balsam.core.models, balsam.launcher.dag) against a real database:
the legacy user guide's snippets that run outside a task, run as written, plus the query subset,
saving, resets and the analytics. Snippets that run inside a task (pre/post-processing scripts,
an app recording its results) run through a real launcher in tests/test_legacy_api.py."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from balsam import api
from balsam.errors import InvalidInput, InvalidTransition, NotFound
from balsam.models import Event
from balsam_testing.launchers import give_back, hold

pytestmark = pytest.mark.pg


@pytest.fixture
def legacy(project, monkeypatch):
    """The legacy modules, in a project with the apps the guide uses, outside any task."""
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID", "BALSAM_LAUNCHER_ID"):
        monkeypatch.delenv(name, raising=False)
    from balsam.core import models
    from balsam.launcher import dag

    for name in dag._LAZY:  # computed once per process: forget the last test's
        monkeypatch.delitem(vars(dag), name, raising=False)

    api.add_app("sayHi", "/bin/echo")
    api.add_app("sim", "/bin/true")
    return models, dag


def events(task: int) -> list[Event]:
    return [e for e in api.history(task) if isinstance(e, Event)]


def finish(*ids: int) -> None:
    hold(api.connection(), ids)
    for state in ("STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED",
                  "JOB_FINISHED"):
        api.set_state(ids, state)
    give_back(api.connection(), ids)


# --- the user guide, as written -----------------------------------------------------------------


def test_user_guide_app_page(legacy):
    """docs/userguide/app.md: an ApplicationDefinition and a BalsamJob from Python."""
    from balsam.core.models import ApplicationDefinition

    myApp = ApplicationDefinition(
        name="myname",
        executable="singularity run /path/to/myImage.sif /bin/app",
        envscript="/path/to/setup-envs.sh",
        postprocess="python /path/to/post.py"
    )
    myApp.save()

    from balsam.launcher.dag import BalsamJob
    job = BalsamJob(
        name = "hello",
        workflow = "hello",
        application = "sayHi",
        args = "world!",
        ranks_per_node = 2,
    )
    job.save()

    app = api.get_app("myname")
    assert (app.executable, app.envscript) == ("singularity run /path/to/myImage.sif /bin/app",
                                               "/path/to/setup-envs.sh")
    task = api.get_task(job.job_id)
    assert (task.name, task.workflow, task.app_name, task.args, task.ranks_per_node) == (
        "hello", "hello", "sayHi", "world!", 2)
    assert isinstance(job.job_id, int) and job.pk == job.job_id and job.state == "READY"


def test_api_tutorial_bootstraps_the_app_and_creates_jobs(legacy):
    """docs/tutorial/api.md: get_or_create with only a name, then the executable; N jobs whose
    data is set after construction."""
    import os

    from balsam.core.models import ApplicationDefinition, BalsamJob
    __file__ = "/path/to/app.py"

    # Bootstrap app if it's not already in the DB
    app, was_created = ApplicationDefinition.objects.get_or_create(
        name = 'square',
    )

    if was_created:
        app.executable = os.path.abspath(__file__)
        app.save()

    def create_jobs(N):
        """Invoked outisde a BalsamJob context: create N tasks to square a number"""
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

    create_jobs(4)
    assert was_created and api.get_app("square").executable == "/path/to/app.py"
    again, created = ApplicationDefinition.objects.get_or_create(name="square")
    assert not created and again.pk == app.pk
    tasks = api.get_tasks(workflow="demo-square")
    assert [(t.name, t.data, t.node_packing_count) for t in tasks] == [
        (f"square{i}", {"x": i}, 64) for i in range(4)]


def test_nwcontainer_job_factory(legacy, tmp_path):
    """docs/tutorial/nwcontainer.md: the job factory and its app (the guide's snippet lacks a
    comma after application='nwchem', a syntax error in legacy too: added here)."""
    import os

    from balsam.core.models import ApplicationDefinition, BalsamJob

    HERE = str(tmp_path)
    IMG = os.path.join(HERE, 'nwchem-681.fedora.sockets_latest.sif')

    def nw_job(path, name, workflow='nwtask', nproc=1):
        job = BalsamJob(
            name=name,
            workflow=workflow,
            application='nwchem',
            num_nodes=1,
            ranks_per_node=1,
            post_error_handler=True,
        )
        inp_dir, inp_filename = os.path.split(path)
        bind_str = f'-B {inp_dir}:/nwinput:ro' # read-only Singularity bind path
        job.args = f'{bind_str} {IMG} mpirun -n {nproc} nwchem /nwinput/{inp_filename}'
        job.save()
        return job

    ApplicationDefinition.objects.get_or_create(
        name="nwchem",
        envscript=os.path.join(HERE, 'envscript.sh'),
        postprocess=os.path.join(HERE, 'post.py'),
        executable="singularity exec",
    )
    job = nw_job("/data/w6.nw", "w6", nproc=4)
    task = api.get_task(job.pk)
    assert task.args == f"-B /data:/nwinput:ro {IMG} mpirun -n 4 nwchem /nwinput/w6.nw"
    assert task.post_error_handler and task.app_name == "nwchem"


def test_faq_queries_kills_deletes_and_resets(legacy):
    """docs/faq/recipes.md: querying, killing, deleting and resetting jobs."""
    models, dag_ = legacy
    for name in ("simulation-a", "simulation-b", "simulation-done", "master-1", "master-2",
                 "task-1", "task-2", "other"):
        dag_.add_job(name=name, workflow="faq", application="sim")
    finish(*api.task_ids(name="simulation-done"))
    finish(*api.task_ids(name="task-2"))

    from balsam.launcher import dag
    BalsamJob = dag.BalsamJob
    pending_simulations = BalsamJob.objects.filter(name__contains="simulation").exclude(state="JOB_FINISHED")  # noqa: E501

    num_pending = pending_simulations.count()
    assert num_pending == 2

    for sim in pending_simulations:
        dag.kill(sim)
    assert {t.name: t.state for t in api.get_tasks(name="simulation")} == {
        "simulation-a": "USER_KILLED", "simulation-b": "USER_KILLED",
        "simulation-done": "JOB_FINISHED"}

    import balsam.launcher.dag as dag

    dag.BalsamJob.objects.filter(name__contains="master").delete()

    for job in dag.BalsamJob.objects.filter(name__startswith="task"):
        job.update_state("CREATED")

    assert api.task_ids(name="master") == []
    assert {t.name: t.state for t in api.get_tasks(name="task")} == {
        "task-1": "READY", "task-2": "READY"}
    history = BalsamJob.objects.get(name="task-2").state_history  # legacy's text and pattern
    found = re.findall(r"^\[(\d+-\d+-\d{4}\s+\d+:\d+:\d+\.\d+)\s+(\w+)\s*\]", history,
                       re.MULTILINE)
    assert [state for _, state in found][-3:] == ["JOB_FINISHED", "CREATED", "READY"]
    assert all(datetime.strptime(when, models.TIME_FMT) for when, _ in found)


def test_faq_poll_until_state(legacy):
    """docs/faq/recipes.md: a job polled with refresh_from_db (here finished by hand)."""
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

    newjob = dag.add_job(name="polled", workflow="faq", application="sim")
    assert not poll_until_state(newjob, "JOB_FINISHED", timeout_sec=0.3, delay=0.1)
    finish(newjob.pk)
    assert poll_until_state(newjob, "JOB_FINISHED", timeout_sec=5, delay=0.1)


# --- objects, fields and saving -----------------------------------------------------------------


def test_fields_are_checked_at_the_door(legacy):
    models, _ = legacy
    job = models.BalsamJob(name="x", application="sim")
    for field, value, error in (
            ("num_nodes", 0, "num_nodes must be between 1 and 100,000, got 0"),
            ("walltime_minutes", 5, "BalsamJob.walltime_minutes is not a field"),
            ("job_id", 3, "BalsamJob.job_id is read-only"),
            ("pk", 3, "BalsamJob.pk is read-only"),
            ("mpi_flags", "-x 'a", "cannot be split into arguments"),
            ("coschedule_num_nodes", -1, "coschedule_num_nodes must be between 0 and"),
            ("stage_out_url", "local:x", "a local URL names an absolute path"),
            ("state", "DONE", "invalid state 'DONE'")):
        with pytest.raises(InvalidInput, match=re.escape(error)):
            setattr(job, field, value)
    job.stage_in_url = "local:/data/in"  # legacy's spelling of a local path
    assert (job.stage_in_url, job.coschedule_num_nodes, job.wait_for_parents) == (
        "local:/data/in", 0, True)
    job.mpi_flags, job.coschedule_num_nodes = "--mca btl self", 2  # legacy fields, now stored
    with pytest.raises(InvalidInput, match="BalsamJob 'y' needs an application"):
        models.BalsamJob(name="y").save()
    with pytest.raises(NotFound, match="unknown app 'nope'"):
        models.BalsamJob(name="z", application="nope").save()
    with pytest.raises(AttributeError):
        _ = job.no_such_field
    assert api.task_ids() == []


def test_save_writes_what_changed_and_the_state_last(legacy):
    models, _ = legacy
    job = models.BalsamJob(name="a", workflow="w", application="sim", environ_vars="A=1:B=2",
                           data={"x": [1]}, wall_time_minutes=5, allow_failed_parents=True)
    job.save()
    task = api.get_task(job.pk)
    assert (task.environ_vars, task.data, task.wall_time_minutes, task.allow_failed_parents) == (
        {"A": "1", "B": "2"}, {"x": [1]}, 5, True)
    assert job.environ_vars == "A=1:B=2" and job.user_workdir == "" and job.state == "READY"
    job.data["x"].append(2)
    job.environ_vars = {"C": "3"}
    job.application = "sayHi"
    job.state = "USER_KILLED"
    job.save()
    task = api.get_task(job.pk)
    assert (task.data, task.environ_vars, task.app_name, task.state) == (
        {"x": [1, 2]}, {"C": "3"}, "sayHi", "USER_KILLED")
    job.state = "JOB_FINISHED"
    with pytest.raises(InvalidTransition, match="USER_KILLED -> JOB_FINISHED"):
        job.save()
    job.refresh_from_db()
    assert job.state == "USER_KILLED" and job.num_ranks == 1 and job.cute_id == f"[a | {job.pk}]"
    assert job.working_directory.endswith(f"data/w/a_{job.pk}")
    with pytest.raises(NotFound, match="out.txt not found in the working directory"):
        job.read_file_in_workdir("out.txt")


def test_update_state_keeps_other_unsaved_changes(legacy):
    models, _ = legacy
    job = models.BalsamJob(name="a", application="sim")
    job.save()
    job.description = "not saved yet"
    job.update_state("USER_KILLED", "stop")
    assert job.state == "USER_KILLED" and job.description == "not saved yet"
    assert events(job.pk)[-1].message == "stop"
    job.update_state("CREATED")  # legacy's reset: it runs again from the start
    assert job.state == "READY"
    job.save()
    assert api.get_task(job.pk).description == "not saved yet"
    with pytest.raises(InvalidInput, match="release=True"):
        job.update_state("READY", release=True)


def test_parents_children_and_dependencies(legacy):
    models, dag = legacy
    a = dag.add_job("a", "w", "sim")
    b = dag.add_job("b", "w", "sim")
    c = models.BalsamJob(name="c", workflow="w", application="sim", parents=[a, b.pk])
    assert c.parents == f"[{a.pk}, {b.pk}]"
    c.save()
    assert c.state == "AWAITING_PARENTS" and c.get_parents_by_id() == [a.pk, b.pk]
    assert [p.name for p in c.get_parents()] == ["a", "b"]
    assert [k.name for k in a.get_children()] == ["c"] and a.get_child_by_name("c") == c
    d = dag.add_job("d", "w", "sim")
    dag.add_dependency(parent=c, child=str(d.pk))
    assert api.parents(d.pk) == [c.pk]
    c.set_parents([b])
    assert api.parents(c.pk) == [b.pk]
    with pytest.raises(InvalidInput, match="not legacy UUIDs"):
        dag.add_dependency("0b3e5d1c-uuid", c)
    dag.kill(b)  # recursive by default, as in legacy
    assert {t.name: t.state for t in api.get_tasks(workflow="w")} == {
        "a": "READY", "b": "USER_KILLED", "c": "USER_KILLED", "d": "USER_KILLED"}


def test_outside_a_task_there_is_no_current_job(legacy):
    _, dag = legacy
    assert (dag.current_job, dag.JOB_ID, dag.parents, dag.children) == (None, "", None, None)
    assert (dag.TIMEOUT, dag.ERROR, dag.LAUNCHER_NODES) == (False, False, 1)
    with pytest.raises(InvalidInput, match="no current job: this runs only inside a balsam task"):
        dag.spawn_child(name="x")
    with pytest.raises(AttributeError):
        _ = dag.nothing_here


# --- queries ------------------------------------------------------------------------------------


@pytest.fixture
def jobs(legacy):
    models, _ = legacy
    made = models.BalsamJob.objects.bulk_create([
        models.BalsamJob(name=f"{kind}{i}", workflow=wf, application="sim", num_nodes=i + 1,
                         data={"i": i})
        for i, (kind, wf) in enumerate([("sim", "a"), ("sim", "b"), ("Simple", "a"),
                                        ("post", "b"), ("post", "c")])])
    assert [j.name for j in made] == ["sim0", "sim1", "Simple2", "post3", "post4"]
    finish(made[3].pk)
    return models.BalsamJob, [j.pk for j in made]


def names(query) -> list[str]:
    return [j.name for j in query]


def test_lookups_against_the_database(jobs):
    Job, ids = jobs
    assert names(Job.objects.filter(name__contains="im")) == ["sim0", "sim1", "Simple2"]
    assert names(Job.objects.filter(name__icontains="SIM")) == ["sim0", "sim1", "Simple2"]
    assert names(Job.objects.filter(name__startswith="post")) == ["post3", "post4"]
    assert names(Job.objects.filter(name__endswith="1")) == ["sim1"]
    assert names(Job.objects.filter(workflow__in=["b", "c"])) == ["sim1", "post3", "post4"]
    assert names(Job.objects.filter(num_nodes__gt=2, num_nodes__lte=4)) == ["Simple2", "post3"]
    assert names(Job.objects.filter(num_nodes__gte=4)) == ["post3", "post4"]
    assert names(Job.objects.filter(num_nodes__lt=2)) == ["sim0"]
    assert names(Job.objects.filter(user_workdir__isnull=True).exclude(workflow="a")) == [
        "sim1", "post3", "post4"]
    assert names(Job.objects.exclude(state="JOB_FINISHED", workflow="b")) == [
        "sim0", "sim1", "Simple2", "post4"]
    assert names(Job.objects.filter(job_id__in=Job.objects.filter(workflow="a"))) == [
        "sim0", "Simple2"]
    assert names(Job.objects.filter(application="sim", state="READY", name__iexact="SIM0")) == [
        "sim0"]
    assert Job.objects.filter(job_id__in=[]).count() == 0
    assert Job.objects.filter(job_id=str(ids[0])).get().name == "sim0"


def test_ordering_slicing_and_values(jobs):
    Job, ids = jobs
    assert names(Job.objects.order_by("-num_nodes")[:2]) == ["post4", "post3"]
    assert names(Job.objects.order_by("workflow", "-name")) == [
        "sim0", "Simple2", "sim1", "post3", "post4"]
    query = Job.objects.all()
    assert names(query[1:3]) == ["sim1", "Simple2"] and names(query[1:3][1:]) == ["Simple2"]
    assert query[4].name == "post4" and len(query) == 5 and bool(query)
    with pytest.raises(IndexError):
        _ = query[5]
    assert Job.objects.first().name == "sim0" and Job.objects.last().name == "post4"
    assert Job.objects.order_by("-name").last().name == "Simple2"
    assert Job.objects.values_list("name", flat=True)[:2] == ["sim0", "sim1"]
    assert Job.objects.filter(workflow="c").values_list("job_id", "data", "application") == [
        (ids[4], {"i": 4}, "sim")]
    assert Job.objects.filter(workflow="c").values("name", "environ_vars") == [
        {"name": "post4", "environ_vars": ""}]
    assert not Job.objects.filter(workflow="zzz")
    with pytest.raises(InvalidInput, match="cannot filter a query once it is sliced"):
        query[:2].filter(name="x")
    with pytest.raises(InvalidInput, match="flat=True"):
        Job.objects.values_list("name", "workflow", flat=True)


def test_get_first_count_and_their_errors(jobs):
    Job, _ = jobs
    assert Job.objects.get(name="post4").workflow == "c"
    with pytest.raises(NotFound, match="no BalsamJob matches name='nothing'"):
        Job.objects.get(name="nothing")
    with pytest.raises(Job.MultipleObjectsReturned, match="more than one BalsamJob matches "
                                                          "workflow='a'"):
        Job.objects.get(workflow="a")
    with pytest.raises(Job.DoesNotExist):
        Job.objects.filter(workflow="zzz").get()
    assert Job.objects.count() == 5 and Job.objects.filter(workflow="zzz").first() is None


def test_deleting_through_queries(jobs, legacy):
    Job, ids = jobs
    models, dag = legacy
    waiting = dag.add_job("waits", "a", "sim", parents=[ids[0]])
    with pytest.raises(InvalidInput, match=f"{waiting.pk} waits for {ids[0]}"):
        Job.objects.filter(name="sim0").delete()
    assert Job.objects.filter(workflow="b").delete() == (2, {"core.BalsamJob": 2})
    assert names(Job.objects.all()) == ["sim0", "Simple2", "post4", "waits"]
    with pytest.raises(InvalidInput, match="is used by"):
        models.ApplicationDefinition.objects.filter(name="sim").delete()
    assert models.ApplicationDefinition.objects.filter(name="sayHi").delete()[0] == 1
    assert [a.name for a in models.ApplicationDefinition.objects.all()] == ["sim"]


def test_apps_as_legacy_models(legacy):
    models, _ = legacy
    App = models.ApplicationDefinition
    assert not App.objects.filter(name="nwchem-water").exists()
    app = App(name="nwchem-water", executable="/bin/nw")
    app.save()
    app.executable = "/bin/nw2"
    app.name = "nwchem"
    app.save()
    assert api.get_app(app.pk).executable == "/bin/nw2" and app.name == "nwchem"
    assert App.objects.get(name__startswith="nw").cute_id == f"[nwchem | {app.pk}]"
    assert App.objects.order_by("-name").values_list("name", flat=True) == [
        "sim", "sayHi", "nwchem"]
    with pytest.raises(InvalidInput, match="ApplicationDefinition.executable must be a string"):
        app.executable = None
    created = App.objects.create(name="other", executable="/bin/x")
    created.delete()
    assert created.pk is None and not App.objects.filter(name="other").exists()


# --- legacy analytics ---------------------------------------------------------------------------


def run(task: int, *outcome: str) -> None:
    hold(api.connection(), [task])
    for state in ("STAGED_IN", "PREPROCESSED", "RUNNING", *outcome):
        api.set_state([task], state)
    give_back(api.connection(), [task])


def test_legacy_reports_from_analytics(legacy):
    models, dag = legacy
    a, b, c = (dag.add_job(n, "w", "sim").pk for n in "abc")
    assert models.utilization_report() == ([], []) and models.error_report() is None
    run(a, "RUN_DONE")
    run(b, "RUN_ERROR")
    run(c, "RUN_DONE")
    times, running = models.utilization_report()
    starts = [e.at for t in (a, b, c) for e in events(t) if e.to_state == "RUNNING"]
    ends = [e.at for t in (a, b, c) for e in events(t) if e.from_state == "RUNNING"]
    assert times == sorted(starts + ends) and running == [1, 0, 1, 0, 1, 0]
    done_times, done = models.throughput_report()
    assert done_times == sorted(ends[0::2]) and done == [1, 2]
    edges, errors = models.error_report()
    assert errors == [1] and edges[0] == ends[1] and len(edges) == 2
    times = models.process_job_times(models.BalsamJob.objects.filter(name="a"))
    assert models.utilization_report(times) == ([starts[0], ends[0]], [1, 0])
    assert models.throughput_report(times) == ([ends[0]], [1])
    assert models.error_report(times) is None
    assert models.END_STATES == ["JOB_FINISHED", "FAILED", "USER_KILLED"]
