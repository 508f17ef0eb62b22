"""balsam-perms."""
