"""balsam-cli's own hook implementations: the project-level commands, registered by name and
imported only when they run."""

from __future__ import annotations

from collections.abc import Callable

from balsam import hookimpl

#: name -> (module:attribute, one-line help)
COMMANDS = {
    "init": ("balsam_cli.project_commands:init",
             "Create a project directory with its own PostgreSQL cluster."),
    "activate": ("balsam_cli.project_commands:activate",
                 "Start (owner) or check the server and print the environment."),
    "which": ("balsam_cli.project_commands:which", "Show the active project and its server."),
    "plugins": ("balsam_cli.project_commands:plugins",
                "List installed plugins, their versions and hooks."),
    "config": ("balsam_cli.config_commands:config",
               "Show the site configuration and where each value comes from."),
    "report": ("balsam_cli.report_commands:report",
               "Utilisation, throughput and errors of the project over time."),
    "app": ("balsam_cli.task_commands:app", "Add, list, modify or remove apps."),
    "job": ("balsam_cli.job_commands:job",
            "Add a task, or many (--from FILE, --sweep VAR=VALUES)."),
    "dep": ("balsam_cli.task_commands:dep", "Make a task wait until another has finished."),
    "ls": ("balsam_cli.ls_commands:ls",
           "List tasks, apps, workflows or launchers; say why tasks wait."),
    "modify": ("balsam_cli.task_commands:modify", "Set a field of a task."),
    "rm": ("balsam_cli.task_commands:rm", "Remove tasks (or apps); their history stays."),
    "kill": ("balsam_cli.task_commands:kill", "Mark tasks USER_KILLED."),
    "retry": ("balsam_cli.task_commands:retry",
              "Run failed, errored and timed-out tasks again."),
    "trust": ("balsam_cli.trust_commands:trust",
              "Whose tasks your launchers run: you, balsam_admin and the users you trust."),
    "mkchild": ("balsam_cli.legacy_commands:mkchild",
                "Add a task that waits for the task this runs in (legacy)."),
    "make_dummies": ("balsam_cli.legacy_commands:make_dummies",
                     "Add N no-op tasks, to try launchers with (legacy)."),
    "killjob": ("balsam_cli.legacy_commands:killjob", "Legacy name of 'balsam kill' (--id ID)."),
}


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    for name, (target, text) in COMMANDS.items():
        register(name, target, help=text)
