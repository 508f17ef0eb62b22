-- Analytics: the definitions every report rests on (available capacity, busy time, outcomes) as
-- views, and the indexes that keep a report over a million events under a second (see
-- balsam.analytics and benchmarks/bench_reports.py).

-- Available capacity. A launcher offers num_nodes nodes from started_at until ended_at or, while
-- it has not ended, until its last heartbeat: the last moment it is known to have been alive.
CREATE VIEW launcher_spans AS
SELECT id AS launcher_id, batch_job_id, owner, job_mode, num_nodes, started_at,
       greatest(started_at, coalesce(ended_at, heartbeat_at)) AS ended_at
FROM launchers;

-- Busy time. A task is busy from each event into RUNNING until its next event out of RUNNING
-- (RUN_DONE, RUN_ERROR, RUN_TIMEOUT, RESTART_READY, USER_KILLED), on the launcher named by the
-- event into RUNNING, clipped to that launcher's span (a task cannot keep nodes busy after its
-- launcher died, even if the reaper marks it later). While no exit is recorded, the interval ends
-- with the launcher's span, or stays open (ended_at NULL) if the launcher is unknown.
-- A task occupies num_nodes nodes, except a single-node task packed by a serial-mode launcher
-- (or an unknown one), which occupies 1/node_packing_count of a node.
CREATE VIEW task_busy_intervals AS
SELECT i.* FROM (
    SELECT r.task_id, t.owner, t.workflow, r.launcher_id, l.owner AS launcher_owner,
           l.batch_job_id,
           CASE WHEN t.num_nodes = 1 AND coalesce(l.job_mode, 'serial') = 'serial'
                THEN 1.0 / t.node_packing_count
                ELSE t.num_nodes::numeric END AS nodes,
           greatest(r.at, l.started_at) AS started_at,
           least(r.next_at, l.ended_at) AS ended_at
    FROM (
        SELECT e.task_id, e.to_state, e.at, e.launcher_id,
               lead(e.at) OVER (PARTITION BY e.task_id ORDER BY e.at, e.id) AS next_at
        FROM task_events e
        WHERE e.to_state = 'RUNNING' OR e.from_state = 'RUNNING'
    ) r
    JOIN tasks t ON t.id = r.task_id
    LEFT JOIN launcher_spans l ON l.launcher_id = r.launcher_id
    WHERE r.to_state = 'RUNNING'
) i
WHERE i.ended_at IS NULL OR i.started_at < i.ended_at;

-- Outcomes: events into JOB_FINISHED, RUN_ERROR, RUN_TIMEOUT or FAILED, with the task's owner and
-- workflow and the batch job of the launcher that recorded the event (NULL if none). Every event
-- has its task (a foreign key); the left joins let the planner skip a table no column needs.
CREATE VIEW task_outcome_events AS
SELECT e.id, e.task_id, e.to_state AS state, e.at, e.message, t.owner, t.workflow, e.launcher_id,
       l.batch_job_id
FROM task_events e
LEFT JOIN tasks t ON t.id = e.task_id
LEFT JOIN launchers l ON l.id = e.launcher_id
WHERE e.to_state IN ('JOB_FINISHED', 'RUN_ERROR', 'RUN_TIMEOUT', 'FAILED');

-- Runs in task order, already sorted for the window above (an index-only scan, no sort).
CREATE INDEX task_events_running ON task_events (task_id, at, id) INCLUDE (to_state, launcher_id)
    WHERE to_state = 'RUNNING' OR from_state = 'RUNNING';

-- Outcomes (throughput and error reports) by state and time.
CREATE INDEX task_events_outcomes ON task_events (to_state, at) INCLUDE (task_id, launcher_id)
    WHERE to_state IN ('JOB_FINISHED', 'RUN_ERROR', 'RUN_TIMEOUT', 'FAILED');
