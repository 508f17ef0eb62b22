"""The listings the cli package prints: their columns, kinds and default fields (one place, so
the test that renders every listing at 80 columns and piped covers them all)."""

from __future__ import annotations

from balsam.models import App
from balsam.output import Column, Listing


def _cols(*spec: str) -> tuple[Column, ...]:
    """``"key:kind"`` words (kind ``text`` when left out)."""
    return tuple(Column(*w.split(":", 1)) if ":" in w else Column(w) for w in spec)


TASK_COLUMNS = _cols(
    "id:id", "name", "workflow", "app", "state:state", "info", "num_nodes:number",
    "ranks_per_node:number", "threads_per_rank:number", "threads_per_core:number",
    "cpu_affinity", "node_packing_count:number", "gpus_per_rank:number", "mpi_flags",
    "coschedule_num_nodes:number", "wall_time_minutes:number", "args",
    "environ_vars:json", "data:json", "input_files", "post_error_handler:state",
    "post_timeout_handler:state", "auto_timeout_retry:state", "stage_in_url", "stage_out_url",
    "stage_out_files", "user_workdir", "workdir",
    "description", "owner", "launcher_id:id", "attempts:number", "created_at:time",
    "state_changed_at:time", "state_message")
TASKS = Listing(TASK_COLUMNS, ("id", "name", "workflow", "app", "state", "info"),
                extra_env="BALSAM_LS_FIELDS")
TASKS_WIDE = Listing(TASK_COLUMNS, ("id", "name", "workflow", "app", "state", "num_nodes",
                                    "ranks_per_node", "wall_time_minutes", "args", "owner",
                                    "launcher_id", "attempts", "workdir", "stage_in_url",
                                    "stage_out_url", "info"),
                     extra_env="BALSAM_LS_FIELDS")

STATE_COUNTS = Listing(_cols("state:state", "tasks:number"))
WORKFLOWS = Listing(_cols("workflow", "tasks:number", "finished:number", "failed:number",
                          "running:number", "finished_last_hour:number", "eta:duration",
                          "states"))
HISTORY = Listing(_cols("at:time", "from_state:state", "to_state:state", "db_user",
                        "launcher_id:id", "message", "id:id", "task_id:id"),
                  ("at", "from_state", "to_state", "db_user", "launcher_id", "message"))
CHANGES = Listing(_cols("changed_at:time", "field", "old_value", "new_value", "changed_by",
                        "id:id", "entity", "entity_id:id"),
                  ("changed_at", "field", "old_value", "new_value", "changed_by"))
CAUSES = Listing(_cols("count:number", "cause", "latest_at:time", "task_ids"))
LAUNCHERS = Listing(
    _cols("id:id", "owner", "hostname", "pid:id", "batch_job_id:id", "scheduler_id:id",
          "job_mode:state", "wf_filter", "num_nodes:number", "running:number",
          "time_left:duration", "started_at:time", "heartbeat_age:duration", "status:state",
          "alive:state", "suspect", "ended_at:time", "end_reason"),
    ("id", "owner", "hostname", "batch_job_id", "scheduler_id", "num_nodes", "running",
     "time_left", "heartbeat_age", "status", "suspect"))
#: Who last changed what a launcher would execute, once the schema records it.
AUDITED = "changed_by" in App.__dataclass_fields__
APPS = Listing(
    _cols("name", "executable", "description", "tasks:number", "owner", "changed_by",
          "changed_at:time", "id:id", "preprocess", "postprocess", "envscript",
          "created_at:time"),
    ("id", "name", "executable", "description", "tasks", "owner",
     *(("changed_by", "changed_at") if AUDITED else ())))
TRUST = Listing(_cols("truster", "trustee", "granted_at:time"))
PLUGINS = Listing(_cols("name", "distribution", "version:state", "hooks"))
CONFIG = Listing(_cols("key", "value", "source", "env"), ("key", "value", "source"))
