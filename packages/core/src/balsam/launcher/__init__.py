"""Legacy Balsam 0.5's ``balsam.launcher``: only its ``dag`` module, the API scripts and tasks
use (the launcher itself is the ``balsam launcher`` command, from the balsam-launcher plugin)."""
