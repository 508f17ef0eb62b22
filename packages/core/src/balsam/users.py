"""Who may use a project: adding and dropping collaborators. Core checks the request, then fires
every plugin's ``on_add_user`` or ``on_drop_user`` (pgserver manages the database roles, perms
checks the project's group)."""

from __future__ import annotations

import pluggy

from balsam.errors import InvalidInput, PermissionDenied
from balsam.models import validate_user_name
from balsam.project import Project, current_user

#: The project roles a collaborator can be given.
ROLES = ("member", "viewer")


def check_role(role: str) -> str:
    if role not in ROLES:
        message = f"invalid role {role!r}: expected one of {', '.join(ROLES)}"
        raise InvalidInput(message)
    return role


def require_manager(project: Project) -> None:
    """Only the project owner adds, drops and lists users."""
    user = current_user()
    if user != project.owner:
        message = f"only the project owner ({project.owner}) can manage users; you are {user}"
        raise PermissionDenied(message)


def check_collaborator(project: Project, username: str, *, dropping: bool = False) -> str:
    """A user name the owner may add or drop: a plain identifier, and not the owner's."""
    validate_user_name(username)
    require_manager(project)
    if username == project.owner:
        message = (f"{username} owns the project and cannot be dropped" if dropping else
                   f"{username} owns the project: their everyday role is a member's, always")
        raise InvalidInput(message)
    return username


def add_user(project: Project, username: str, role: str, pm: pluggy.PluginManager) -> None:
    """Authorise ``username`` as ``role`` (every plugin's ``on_add_user``)."""
    check_role(role)
    check_collaborator(project, username)
    pm.hook.on_add_user(project=project, username=username, role=role)


def drop_user(project: Project, username: str, pm: pluggy.PluginManager) -> None:
    """Withdraw ``username``'s access (every plugin's ``on_drop_user``)."""
    check_collaborator(project, username, dropping=True)
    pm.hook.on_drop_user(project=project, username=username)
