"""balsam-pgserver."""

__version__ = "0.2.2"
