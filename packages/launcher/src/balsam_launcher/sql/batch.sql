-- Named queries of balsam-launcher for batch jobs (submit-launch, queue, service).

-- name: batch_create
-- A new batch job, pending until the scheduler accepts it.
INSERT INTO batch_jobs (scheduler, project, queue, num_nodes, wall_time_minutes, job_mode,
                        wf_filter, state)
VALUES (%(scheduler)s, %(project)s, %(queue)s, %(num_nodes)s, %(wall_time_minutes)s,
        %(job_mode)s, %(wf_filter)s, 'pending')
RETURNING *;

-- name: batch_set_script
UPDATE batch_jobs SET script_path = %(script_path)s WHERE id = %(id)s;

-- name: batch_delete_pending
-- Undo a submission the scheduler refused.
DELETE FROM batch_jobs WHERE id = %(id)s AND state = 'pending';

-- name: batch_mark_submitted
-- The scheduler accepted the job (a job cancelled meanwhile stays cancelled).
UPDATE batch_jobs
SET scheduler_id = %(scheduler_id)s, submitted_at = now(),
    state = CASE WHEN state = 'pending' THEN 'submitted' ELSE state END
WHERE id = %(id)s
RETURNING *;

-- name: batch_get
SELECT * FROM batch_jobs WHERE id = %(id)s;

-- name: batch_list
-- Batch jobs, newest last; only unfinished ones unless all.
SELECT * FROM batch_jobs
WHERE %(all)s OR state IN ('pending', 'submitted', 'queued', 'running')
   OR (state = 'cancelled' AND ended_at IS NULL)
ORDER BY id;

-- name: batch_to_sync
-- Jobs whose state may still change, and cancelled jobs whose end is not yet known.
SELECT * FROM batch_jobs
WHERE state IN ('pending', 'submitted', 'queued', 'running')
   OR (state = 'cancelled' AND ended_at IS NULL)
ORDER BY id;

-- name: batch_launchers
-- What the launchers of the given batch jobs say: how many, how many still alive, first start
-- and last end.
SELECT batch_job_id, count(*) AS launchers,
       count(*) FILTER (WHERE ended_at IS NULL
                          AND heartbeat_at > now() - heartbeat_timeout) AS alive,
       min(started_at) AS first_start, max(ended_at) AS last_end
FROM launchers
WHERE batch_job_id = ANY (%(ids)s)
GROUP BY batch_job_id;

-- name: batch_update_state
-- Apply a sync result, unless someone else changed the state since it was read.
UPDATE batch_jobs
SET state = %(state)s, state_message = %(message)s,
    started_at = COALESCE(started_at, %(started_at)s),
    ended_at = COALESCE(ended_at, %(ended_at)s)
WHERE id = %(id)s AND state = %(old_state)s
RETURNING *;

-- name: batch_cancel
UPDATE batch_jobs SET state = 'cancelled', state_message = %(message)s
WHERE id = %(id)s AND state IN ('pending', 'submitted', 'queued', 'running')
RETURNING *;

-- name: batch_waiting
-- Jobs of one queue and filter whose launcher has not started claiming yet (queued, or running
-- but with no launcher registered): the service's "queued" count.
SELECT count(*) AS jobs, COALESCE(sum(num_nodes), 0) AS nodes
FROM batch_jobs b
WHERE (b.state IN ('pending', 'submitted', 'queued')
       OR (b.state = 'running'
           AND NOT EXISTS (SELECT 1 FROM launchers l WHERE l.batch_job_id = b.id)))
  AND b.scheduler = %(scheduler)s AND b.queue = %(queue)s AND b.wf_filter = %(wf_filter)s;

-- name: service_lock
-- One service per project, queue and filter: a session lock held while the service runs.
SELECT pg_try_advisory_lock(hashtext(%(key)s)) AS locked;

-- name: batch_whoami
-- The database user (who owns the rows this session creates).
SELECT current_user AS user;
