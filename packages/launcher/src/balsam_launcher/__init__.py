"""balsam-launcher."""

__version__ = "0.1.3"
