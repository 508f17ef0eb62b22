"""The permission policy on real directories: the two zones, check, fix, what is skipped, and
the CLI's umask.

As root (CI) the tests use the real group balsamtest, so a wrong group can be detected and fixed.
"""

from __future__ import annotations

import grp
import os
import stat
from dataclasses import replace
from pathlib import Path, PurePosixPath

import click
import pluggy
import pytest
from click.testing import CliRunner

from balsam import hookimpl, hookspecs
from balsam.contracts import InitOptions
from balsam.errors import InvalidInput
from balsam.plugins import get_plugin_manager
from balsam.project import Project, new_info
from balsam_cli.main import build_cli
from balsam_perms import plugin as perms_plugin
from balsam_perms import policy

pytestmark = pytest.mark.multiuser


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def group(unix_users) -> grp.struct_group:
    return grp.getgrnam(unix_users.group)


@pytest.fixture
def tree(tmp_path, group, monkeypatch) -> Project:
    """A project-shaped directory (no database) that follows the policy, made active."""
    root = tmp_path / "proj"
    for sub in ("data/wf/task_1", "log", "qsubmit", "balsamdb/base", ".pgsocket"):
        (root / sub).mkdir(parents=True)
    (root / "data/wf/task_1/out.txt").write_text("result")
    (root / "data/wf/task_1/run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "data/wf/task_1/run.sh", 0o700)
    (root / "balsamdb/PG_VERSION").write_text("15\n")
    project = Project(root, new_info("root", group=group.gr_name))
    project.save_info()
    fixed, left = policy.apply(root, group.gr_gid)
    assert fixed and not left
    os.chmod(root / "balsamdb", 0o700)
    os.chmod(root / ".pgsocket", 0o2750)
    monkeypatch.setenv("BALSAM_DB_PATH", str(root))
    return project


@pytest.mark.parametrize("rel, kind, mode, forbidden, control", [
    (".", "dir", 0o2750, 0o022, True),
    ("server-info", "file", 0o640, 0o022, True),
    ("job-templates", "dir", 0o2750, 0o022, True),
    ("job-templates/slurm.sh", "file", 0o640, 0o022, True),
    (".pgsocket", "dir", 0o2750, 0o022, True),
    ("balsamdb", "dir", 0o700, 0, True),
    ("data", "dir", 0o3770, 0, False),
    ("qsubmit", "dir", 0o3770, 0, False),
    ("data/wf", "dir", 0o2770, 0, False),
    ("data/wf/out.txt", "file", 0o660, 0, False),
    ("data/wf/run.sh", "exec", 0o770, 0, False),
])
def test_rules_of_the_two_zones(rel, kind, mode, forbidden, control):
    r = policy.rule(PurePosixPath(rel), kind)
    assert (r.mode, r.forbidden, r.control) == (mode, forbidden, control)
    assert r.exact == (rel == "balsamdb")


def test_symlinks_are_the_owners_business_in_the_control_zone_only():
    assert policy.rule(PurePosixPath("job-templates/x.sh"), "link").control
    assert policy.rule(PurePosixPath("data/wf/link"), "link") is None


def test_a_project_that_follows_the_policy_passes(tree, group):
    assert policy.check(tree) == []
    root = tree.root
    # Made under umask 022: the fix adds what the group needs and takes nothing away, except
    # group write in the control zone.
    assert mode(root) == 0o2755
    assert mode(root / "data") == 0o3775 and mode(root / "data/wf/task_1") == 0o2775
    assert mode(root / "data/wf/task_1/out.txt") == 0o664
    assert mode(root / "data/wf/task_1/run.sh") == 0o770
    assert (root / "log").stat().st_gid == group.gr_gid


def test_check_names_every_wrong_path_and_fix_repairs_them(tree, group):
    root = tree.root
    os.chmod(root / "data/wf", 0o755)
    os.chmod(root / "data/wf/task_1/out.txt", 0o644)
    os.chmod(root / "data/wf/task_1/run.sh", 0o744)
    os.chown(root / "log", -1, 0)
    os.chmod(root / "balsamdb", 0o770)
    problems = {p.path.relative_to(root).as_posix(): p.reasons for p in policy.check(tree)}
    assert problems == {
        "data/wf": ["mode 0755, needs 2770 (group rwx, setgid)"],
        "data/wf/task_1/out.txt": ["mode 0644, needs 0660 (group rw)"],
        "data/wf/task_1/run.sh": ["mode 0744, needs 0770 (group rwx)"],
        "log": [f"group root, not {group.gr_name}"],
        "balsamdb": ["mode 0770, must be 0700 (PostgreSQL refuses to start otherwise)"],
    }
    fixed, left = policy.fix(tree)
    assert len(fixed) == 5 and left == []
    assert policy.check(tree) == []
    assert mode(root / "balsamdb") == 0o700 and mode(root / "data/wf") == 0o2775
    assert policy.fix(tree) == ([], []), "a second fix has nothing to do"


def test_server_directories_are_left_to_postgres(tree):
    root = tree.root
    os.chmod(root / "balsamdb/PG_VERSION", 0o600)
    os.chmod(root / "balsamdb/base", 0o700)
    (root / ".pgsocket/.s.PGSQL.5432.lock").write_text("x")
    os.chmod(root / ".pgsocket/.s.PGSQL.5432.lock", 0o600)
    assert policy.check(tree) == []
    os.chmod(root / ".pgsocket", 0o2700)
    [problem] = policy.check(tree)
    assert problem.path == root / ".pgsocket" and "group rx, setgid" in problem.reasons[0]
    os.chmod(root / ".pgsocket", 0o2770)
    [problem] = policy.check(tree)
    assert problem.reasons == ["mode 2770: writable by the group (control zone: only its owner "
                               "writes it)"]


def test_symlinks_are_not_followed(tree, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the project's")
    os.chmod(outside, 0o600)
    (tree.root / "data/link").symlink_to(outside)
    (tree.root / "data/dirlink").symlink_to(tmp_path)
    assert policy.check(tree) == []
    policy.fix(tree)
    assert mode(outside) == 0o600


def test_project_umask_that_locks_the_group_out_is_reported_and_fixed(tree):
    tree.info = replace(tree.info, umask=0o077)
    tree.save_info()
    assert "denies the group" in policy.umask_problem(tree)
    policy.fix(tree)
    assert Project.load(tree.root).umask == 0o007


def test_resolve_group(tmp_path, group):
    os.chown(tmp_path, -1, group.gr_gid)
    assert policy.resolve_group(tmp_path, None).gr_gid == group.gr_gid
    assert policy.resolve_group(tmp_path, "root").gr_name == "root"
    with pytest.raises(InvalidInput, match="no such group 'nosuchgroup'"):
        policy.resolve_group(tmp_path, "nosuchgroup")


def test_user_in_group(group, unix_users):
    assert policy.user_in_group("bob", group) is True
    assert policy.user_in_group(unix_users.outsider, group) is False
    assert policy.user_in_group("nosuchuser", group) is None


# --- the CLI ---------------------------------------------------------------------------------


def test_perms_check_and_fix_commands(tree):
    cli = build_cli(get_plugin_manager())
    os.chmod(tree.root / "qsubmit", 0o700)
    result = CliRunner().invoke(cli, ["perms", "check"])
    assert result.exit_code == 1
    assert ("qsubmit: mode 0700, needs 3770 (group rwx, setgid, sticky) (owner root)"
            in result.output)
    assert "umask in force:" in result.output
    assert "Error: 1 path(s) break the policy of group balsamtest" in result.output
    result = CliRunner().invoke(cli, ["perms", "fix"])
    assert result.exit_code == 0, result.output
    assert "fixed qsubmit" in result.output
    result = CliRunner().invoke(cli, ["perms", "check"])
    assert result.exit_code == 0, result.output
    assert "shared with group balsamtest" in result.output


class _WritesFiles:
    """A site plugin's command that creates a directory and a file (to see the umask used)."""

    @hookimpl
    def register_commands(self, register):
        @click.command("make-output")
        @click.argument("where", type=click.Path(path_type=Path))
        def make_output(where: Path) -> None:
            """Create WHERE/out.txt."""
            where.mkdir()
            (where / "out.txt").write_text("x")

        register(make_output)


def test_cli_applies_the_project_umask_whatever_the_shell_had(tree):
    pm = get_plugin_manager()
    pm.register(_WritesFiles(), name="writes-files")
    previous = os.umask(0o077)
    try:
        result = CliRunner().invoke(build_cli(pm), ["make-output", str(tree.root / "data/new")])
        checked = CliRunner().invoke(build_cli(pm), ["perms", "check"])
        assert os.umask(0o077) == 0o077, "the shell's umask is restored afterwards"
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert mode(tree.root / "data/new") == 0o2770
    assert mode(tree.root / "data/new/out.txt") == 0o660
    assert checked.exit_code == 0, checked.output
    assert "umask in force: 0077 in your shell; balsam applies the project's 0007" in checked.output


# --- hooks -----------------------------------------------------------------------------------


def _perms_only() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("balsam")
    pm.add_hookspecs(hookspecs)
    pm.register(perms_plugin, name="perms")
    return pm


class _MakesFiles:
    """Another plugin's on_init, creating files with a careless mode."""

    seen_gid: int | None = None

    @hookimpl
    def on_init(self, project, options):
        _MakesFiles.seen_gid = project.root.stat().st_gid
        (project.root / "extra").mkdir(mode=0o700)
        (project.root / "extra/config.txt").write_text("x")
        os.chmod(project.root / "extra/config.txt", 0o600)


def test_hook_on_init(tmp_path, group):
    pm = _perms_only()
    pm.register(_MakesFiles(), name="makes-files")
    root = tmp_path / "new"
    root.mkdir()
    project = Project(root, new_info("root"))
    project.save_info()
    pm.hook.on_init(project=project, options=InitOptions(group=group.gr_name))
    assert _MakesFiles.seen_gid == group.gr_gid, "the group is taken before other plugins run"
    # extra/ is in the control zone: the group reads it, only the owner writes it.
    assert mode(root / "extra") == 0o2750 and mode(root / "extra/config.txt") == 0o640
    info = Project.load(root).info
    assert info.group == group.gr_name and info.umask == 0o007
    assert policy.check(Project.load(root)) == []
    with pytest.raises(InvalidInput, match="no such group"):
        pm.hook.on_init(project=project, options=InitOptions(group="nosuchgroup"))


def test_hook_on_activate(tree, capsys):
    pm = _perms_only()
    assert pm.hook.on_activate(project=tree, user="root") == []
    assert capsys.readouterr().err == ""
    os.chmod(tree.root / "log", 0o700)
    os.chmod(tree.root / "data/wf", 0o700)  # deeper than activation looks: left to perms check
    assert pm.hook.on_activate(project=tree, user="root") == []
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: log: mode 0700, needs 3770 (group rwx, setgid, sticky) (owner root)",
                   "warning: collaborators may get 'Permission denied': run balsam perms check, "
                   "then fix"]


def test_owners_activation_undoes_a_group_write_recipe_where_it_is_safe(tree, capsys):
    """``chmod -R g+rw`` on a project (the legacy page's recipe): the owner's activation takes
    group write from the control directories and publishes server-info again from the private
    copy; a control file others could have edited (a template) waits for ``perms fix``."""
    root = tree.root
    (root / "job-templates").mkdir(mode=0o2750)
    (root / "job-templates/local.sh").write_text("#!/bin/bash\n")
    for path in (root, root / ".pgsocket", root / "job-templates"):
        os.chmod(path, mode(path) | 0o020)
    for path in (root / "server-info", root / "job-templates/local.sh"):
        os.chmod(path, 0o660)
    _perms_only().hook.on_activate(project=tree, user="root")
    err = capsys.readouterr().err
    assert "warning: fixed .: mode 2775: writable by the group" in err
    assert mode(root) == 0o2755 and mode(root / ".pgsocket") == 0o2750
    assert mode(root / "job-templates") == 0o2750 and mode(root / "server-info") == 0o640
    assert mode(root / "job-templates/local.sh") == 0o660
    [left] = policy.check(tree)
    assert left.path == root / "job-templates/local.sh"
    # A member's activation repairs nothing.
    os.chmod(root, 0o2775)
    _perms_only().hook.on_activate(project=tree, user="bob")
    assert mode(root) == 0o2775
