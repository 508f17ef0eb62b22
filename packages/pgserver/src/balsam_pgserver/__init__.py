"""balsam-pgserver."""
