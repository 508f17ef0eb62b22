-- Measurements for bench_launcher.py, all from what the launchers recorded in the database.

-- name: insert_tasks
-- %(count)s tasks of one app, READY; args are the same for all.
INSERT INTO tasks (name, workflow, app_id, args, num_nodes, node_packing_count,
                   wall_time_minutes, state)
SELECT 'task' || i, %(workflow)s, %(app)s, %(args)s, 1, 1, 1, 'READY'
FROM generate_series(1, %(count)s) AS i;

-- name: replica_role
-- Triggers off for the rest of the transaction (a superuser's setup of others' rows).
SET LOCAL session_replication_role = replica;

-- name: insert_untrusted_tasks
-- %(count)s READY tasks owned and last changed by a user nobody trusts, first in claim order
-- (a longer wall time).
INSERT INTO tasks (name, workflow, app_id, args, num_nodes, node_packing_count,
                   wall_time_minutes, state, owner, changed_by)
SELECT 'stranger' || i, 'claim', %(app)s, '', 1, 1, 2, 'READY', 'stranger', 'stranger'
FROM generate_series(1, %(count)s) AS i;

-- name: finished
SELECT count(*) AS n FROM tasks WHERE state = 'JOB_FINISHED';

-- name: throughput
-- Tasks finished per second, from the first claim-side event to the last JOB_FINISHED.
SELECT count(*) FILTER (WHERE to_state = 'JOB_FINISHED') AS finished,
       extract(epoch FROM max(at) FILTER (WHERE to_state = 'JOB_FINISHED')
                          - min(at) FILTER (WHERE to_state = 'STAGED_IN')) AS seconds
FROM task_events;

-- name: run_intervals
-- Each run of a task: its launcher, when it started (into RUNNING) and ended (out of RUNNING).
WITH ev AS (
    SELECT e.task_id, e.to_state, e.at, e.launcher_id,
           lead(e.at) OVER (PARTITION BY e.task_id ORDER BY e.id) AS next_at
    FROM task_events e
    WHERE e.to_state = 'RUNNING' OR e.from_state = 'RUNNING'
)
SELECT launcher_id, extract(epoch FROM at) AS started, extract(epoch FROM next_at) AS ended
FROM ev WHERE to_state = 'RUNNING' AND next_at IS NOT NULL;

-- name: launcher_spans
SELECT id, num_nodes, extract(epoch FROM started_at) AS started,
       extract(epoch FROM ended_at) AS ended
FROM launchers ORDER BY id;

-- name: backend_pid
SELECT pg_backend_pid() AS pid;

-- name: analyze
VACUUM ANALYZE tasks;

-- name: reset
TRUNCATE tasks, task_events, launchers, apps RESTART IDENTITY CASCADE;
