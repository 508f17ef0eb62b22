-- Measurements for bench_cluster.py, from what the launchers recorded in the project's database.

-- name: runs
-- Each run of a task of a workflow: its launcher, when it started (into RUNNING) and ended.
WITH ev AS (
    SELECT e.task_id, e.to_state, e.at, e.launcher_id,
           lead(e.at) OVER (PARTITION BY e.task_id ORDER BY e.id) AS next_at
    FROM task_events e JOIN tasks t ON t.id = e.task_id
    WHERE t.workflow = %s AND (e.to_state = 'RUNNING' OR e.from_state = 'RUNNING')
)
SELECT launcher_id, extract(epoch FROM at) AS started, extract(epoch FROM next_at) AS ended
FROM ev WHERE to_state = 'RUNNING' AND next_at IS NOT NULL;

-- name: launchers
-- The launchers of some batch jobs: their nodes and lives.
SELECT id, batch_job_id, num_nodes, extract(epoch FROM started_at) AS started,
       extract(epoch FROM ended_at) AS ended
FROM launchers WHERE batch_job_id = ANY(%s) ORDER BY id;

-- name: throughput
-- Tasks of a workflow finished per second, from the first stage-in to the last JOB_FINISHED.
SELECT count(*) FILTER (WHERE e.to_state = 'JOB_FINISHED') AS finished,
       extract(epoch FROM max(e.at) FILTER (WHERE e.to_state = 'JOB_FINISHED')
                          - min(e.at) FILTER (WHERE e.to_state = 'STAGED_IN')) AS seconds
FROM task_events e JOIN tasks t ON t.id = e.task_id
WHERE t.workflow = %s;
