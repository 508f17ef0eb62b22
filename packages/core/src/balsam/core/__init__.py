"""Legacy Balsam 0.5's ``balsam.core``: its models (``balsam.core.models``), over balsam.api."""
