"""Test support for Balsam's packages, installed in the test environment only (the dev group):
``balsam_testing.pg`` (a PostgreSQL cluster per session, a migrated database per test, helpers of
multi-user tests; a pytest plugin), ``balsam_testing.launchers`` (apps and tasks in bulk,
launcher processes, fault injection) and ``balsam_testing.machine`` (one session at a time
uses this machine's Slurm)."""
