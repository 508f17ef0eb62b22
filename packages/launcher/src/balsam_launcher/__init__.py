"""balsam-launcher."""
