"""balsam-cli."""
