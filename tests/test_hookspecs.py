"""Meta-tests: every hook is specified, documented with its exact arguments, and tested."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy

from balsam import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def _specs() -> dict[str, list[str]]:
    pm = pluggy.PluginManager("balsam")
    pm.add_hookspecs(hookspecs)
    return {name: list(getattr(pm.hook, name).spec.argnames) for name in dir(pm.hook)
            if not name.startswith("_") and getattr(pm.hook, name).spec is not None}


def test_every_hook_has_a_docstring():
    for name in _specs():
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name


def test_every_hook_is_documented_with_its_arguments():
    doc = (ROOT / "docs" / "hooks.md").read_text()
    for name, args in _specs().items():
        assert f"`{name}({', '.join(args)})`" in doc, f"docs/hooks.md lacks {name}({args})"


def test_every_hook_has_a_test():
    sources = "\n".join(p.read_text() for p in ROOT.glob("**/tests/**/test_*.py")
                        if "site-packages" not in str(p))
    for name in _specs():
        assert re.search(rf"def test_hook_{name}\b", sources), f"no test_hook_{name}"
