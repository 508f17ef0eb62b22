"""Data staging: the URLs of ``stage_in_url`` and ``stage_out_url`` and the transfer methods
that carry them out (the ``register_transfer_methods`` hook).

A launcher stages a task in before its preprocess step and out after its postprocess step, as
legacy Balsam did. It never hands a method the task's working directory: a method fetches into,
or sends from, a private directory of the launcher's (mode 0700, made for that one transfer),
and the launcher moves files between it and the working directory itself, without following a
symlink it did not make. So a method deals with plain local paths and its URL, nothing else.

URLs: ``SCHEME://[USER@]HOST[:PORT]/PATH`` (``rsync://``, ``scp://``, a site's ``gsiftp://``),
``file:///PATH`` or ``file:PATH``, ``local:PATH`` (legacy) or a bare absolute path (local).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from balsam.errors import BalsamError, InvalidInput

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)
_HOST = re.compile(r"^(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(\d+))?$")
_BAD = re.compile(r"[\x00-\x1f\x7f]")
#: Schemes that name a file on the launcher's host.
LOCAL_SCHEMES = ("file", "local")


class TransferFailed(BalsamError):
    """A stage-in or stage-out transfer failed (the message says which and why)."""


@dataclass(frozen=True)
class Url:
    """A parsed transfer URL. ``host`` is empty for local ones; ``path`` is absolute."""

    scheme: str
    path: str
    host: str = ""
    user: str = ""
    port: int | None = None
    text: str = ""

    @property
    def remote(self) -> str:
        """``[USER@]HOST`` (for ssh, scp and rsync)."""
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_url(text: str, *, what: str = "url") -> Url:
    """Parse a transfer URL; InvalidInput (naming ``what``) for anything malformed. Whether a
    method handles its scheme is the launcher's question (installed plugins decide)."""
    shown = text if len(text) <= 80 else f"{text[:76]}..."
    if _BAD.search(text):
        message = f"{what} {shown!r} may not contain control characters"
        raise InvalidInput(message)
    if text.startswith("/"):
        return Url("file", text, text=text)
    match = _SCHEME.fullmatch(text)
    if not match:
        message = (f"{what} {shown!r} is not a URL: expected SCHEME://HOST/PATH (rsync, scp, ...), "
                   "file:///PATH or an absolute path")
        raise InvalidInput(message)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in LOCAL_SCHEMES:
        path = rest[2:] if rest.startswith("//") else rest
        if path.startswith("//") or not path.startswith("/"):
            form = "file:///PATH" if scheme == "file" else "local:/PATH"
            message = f"{what} {shown!r}: a {scheme} URL names an absolute path ({form})"
            raise InvalidInput(message)
        return Url("file", path, text=text)
    if not rest.startswith("//"):
        message = f"{what} {shown!r}: expected {scheme}://HOST/PATH"
        raise InvalidInput(message)
    authority, slash, path = rest[2:].partition("/")
    host = _HOST.fullmatch(authority)
    if not host or not slash or not path:
        message = f"{what} {shown!r}: expected {scheme}://[USER@]HOST[:PORT]/PATH"
        raise InvalidInput(message)
    user, name, port = host.groups()
    if name.startswith("-") or (user or "").startswith("-"):
        message = f"{what} {shown!r}: a host or user may not start with '-'"
        raise InvalidInput(message)
    return Url(scheme, "/" + path, host=name, user=user or "",
               port=int(port) if port else None, text=text)


class TransferMethod(Protocol):
    """How a site moves data for one URL scheme (the ``register_transfer_methods`` hook).

    Both calls block until the transfer ended (the launcher runs them in worker threads) and
    raise :class:`TransferFailed` with a one-line reason when it did not complete; a method
    should give up after ``timeout`` seconds.
    """

    def stage_in(self, url: Url, directory: Path, *, timeout: float) -> None:
        """Fetch what ``url`` names into ``directory``, an empty private directory on the
        launcher's host: a file or a directory under its own name, or, when the path ends with
        ``/``, the directory's contents (as rsync reads a trailing slash)."""

    def stage_out(self, directory: Path, names: Sequence[str], url: Url, *,
                  timeout: float) -> None:
        """Send ``names`` (files and directories in ``directory``, a private directory on the
        launcher's host) into the directory ``url`` names, creating it if needed."""


def transfer_methods(pm: Any) -> dict[str, TransferMethod]:
    """Every installed method by scheme; the implementation called first wins a scheme (the
    launcher's own are ``trylast``)."""
    methods: dict[str, TransferMethod] = {}
    for result in reversed(pm.hook.register_transfer_methods()):
        methods.update(_checked(result))
    return methods


def _checked(result: Mapping[str, Any] | None) -> dict[str, TransferMethod]:
    found = {}
    for scheme, method in (result or {}).items():
        if not callable(getattr(method, "stage_in", None)) or \
                not callable(getattr(method, "stage_out", None)):
            message = f"transfer method for {scheme!r} has no stage_in/stage_out: {method!r}"
            raise BalsamError(message)
        found[scheme.lower()] = method
    return found


def method_for(methods: Mapping[str, TransferMethod], url: Url) -> TransferMethod:
    """The method of ``url``'s scheme; TransferFailed naming the installed ones if none."""
    try:
        return methods[url.scheme]
    except KeyError:
        known = ", ".join(sorted(methods)) or "none"
        message = (f"no transfer method for {url.scheme}:// URLs (installed: {known}); a site "
                   "plugin adds one with register_transfer_methods")
        raise TransferFailed(message) from None
