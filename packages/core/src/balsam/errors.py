"""The one exception hierarchy: the CLI turns any BalsamError into a one-line message."""

from __future__ import annotations


class BalsamError(Exception):
    """Balsam failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class PluginLoadError(BalsamError):
    """A balsam plugin could not be loaded."""


class ProjectNotFound(BalsamError):
    """No Balsam project there."""


class ServerDown(BalsamError):
    """The project's database server is not running."""


class PermissionDenied(BalsamError):
    """You are not allowed to do that."""


class NotFound(BalsamError):
    """No such object."""


class AlreadyExists(BalsamError):
    """That object already exists."""


class InvalidInput(BalsamError):
    """Invalid input."""


class InvalidTransition(BalsamError):
    """That state change is not allowed."""


class CycleError(BalsamError):
    """That dependency would create a cycle."""


class Busy(BalsamError):
    """Someone else holds what this needs: try again later."""


class SchedulerError(BalsamError):
    """The batch scheduler failed."""


class ClaimLost(BalsamError):
    """The launcher no longer holds the claim on this task."""


class UnsafeFile(PermissionDenied):
    """A file that steers balsam could have been written by someone other than its owner."""
