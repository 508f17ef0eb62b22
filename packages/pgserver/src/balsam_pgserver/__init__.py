"""balsam-pgserver."""

__version__ = "0.1.1"
