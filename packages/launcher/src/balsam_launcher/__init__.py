"""balsam-launcher."""

__version__ = "0.2.0"
