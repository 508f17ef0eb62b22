-- Measurements for bench_launcher.py, all from what the launchers recorded in the database.

-- name: insert_tasks
-- %(count)s tasks of one app, READY; args are the same for all.
INSERT INTO tasks (name, workflow, app_id, args, num_nodes, node_packing_count,
                   wall_time_minutes, state)
SELECT 'task' || i, %(workflow)s, %(app)s, %(args)s, 1, 1, 1, 'READY'
FROM generate_series(1, %(count)s) AS i;

-- name: finished
SELECT count(*) AS n FROM tasks WHERE state = 'JOB_FINISHED';

-- name: throughput
-- Tasks finished per second, from the first claim-side event to the last JOB_FINISHED.
SELECT count(*) FILTER (WHERE to_state = 'JOB_FINISHED') AS finished,
       extract(epoch FROM max(at) FILTER (WHERE to_state = 'JOB_FINISHED')
                          - min(at) FILTER (WHERE to_state = 'STAGED_IN')) AS seconds
FROM task_events;

-- name: utilisation
-- Busy node-seconds (each RUNNING interval of a one-node task) over available node-seconds
-- (each launcher's nodes from its start to its end).
WITH runs AS (
    SELECT e.to_state, e.at,
           lead(e.at) OVER (PARTITION BY e.task_id ORDER BY e.id) AS next_at
    FROM task_events e
    WHERE e.to_state = 'RUNNING' OR e.from_state = 'RUNNING'
)
SELECT (SELECT sum(extract(epoch FROM next_at - at)) FROM runs
        WHERE to_state = 'RUNNING' AND next_at IS NOT NULL) AS busy,
       (SELECT sum(num_nodes * extract(epoch FROM ended_at - started_at)) FROM launchers)
           AS available,
       (SELECT extract(epoch FROM max(ended_at) - min(started_at)) FROM launchers) AS span;

-- name: reset
TRUNCATE tasks, task_events, launchers, apps RESTART IDENTITY CASCADE;
