"""Fixtures shared by every package's tests and the cross-package tests."""

pytest_plugins = ["balsam_pgserver.testing"]
