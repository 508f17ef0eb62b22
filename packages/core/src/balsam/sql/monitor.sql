-- Named queries of balsam.monitor: what runs now, what failed and how far each workflow is.
-- Read-only, shared by the CLI and the web page.

-- name: launcher_rows
-- Every launcher (or only those whose row says they run), newest first, with its batch job's
-- scheduler id and state (batch_over: its end confirmed), how many of its tasks are RUNNING and
-- whose tasks it runs (its owner, balsam_admin, whom its owner trusts now, its --trust). Ages
-- and minutes_left (till it stops; NULL: no limit known) are from the server's clock
-- (server_uptime: see balsam.liveness).
SELECT l.id, l.owner, l.hostname, l.pid, l.batch_job_id, b.scheduler_id, b.state AS batch_state,
       b.ended_at IS NOT NULL AS batch_over, coalesce(b.state_message, '') AS batch_message,
       date_part('epoch', now() - pg_postmaster_start_time())::float8 AS server_uptime,
       l.job_mode, l.num_nodes, l.started_at, l.ended_at IS NOT NULL AS ended, l.wf_filter,
       l.ended_at, l.end_reason,
       ARRAY[l.owner, 'balsam_admin']
           || ARRAY(SELECT tr.trustee FROM trust tr WHERE tr.truster = l.owner) || l.trust
           AS trusted,
       date_part('epoch', now() - l.heartbeat_at)::float8 AS heartbeat_age,
       date_part('epoch', l.heartbeat_timeout)::float8 AS heartbeat_timeout,
       CASE WHEN l.stops_at IS NOT NULL  -- greatest() would turn NULL into 0
            THEN greatest(0, date_part('epoch', l.stops_at - now()))::float8 / 60
       END AS minutes_left,
       (SELECT count(*) FROM tasks t
        WHERE t.launcher_id = l.id AND t.state = 'RUNNING')::integer AS running
FROM launchers l
LEFT JOIN batch_jobs b ON b.id = l.batch_job_id
WHERE NOT %(running_only)s OR l.ended_at IS NULL
ORDER BY l.id DESC;

-- name: failures_by_cause
-- Failures since a time (NULL: ever), optionally of one workflow, grouped by cause. A failure is
-- an event into RUN_ERROR or RUN_TIMEOUT (a run that failed), or into FAILED from any other state
-- (FAILED after RUN_ERROR is the same failure, counted once). The cause is what the message says,
-- read by balsam_failure_cause (migration 0021): "exit 3: last line of output".
WITH failures AS (
    SELECT e.task_id, e.at, btrim(e.message) AS message
    FROM task_events e
    WHERE (e.to_state IN ('RUN_ERROR', 'RUN_TIMEOUT')
           OR (e.to_state = 'FAILED'
               AND e.from_state IS DISTINCT FROM 'RUN_ERROR'
               AND e.from_state IS DISTINCT FROM 'RUN_TIMEOUT'))
      AND (%(since)s::timestamptz IS NULL OR e.at >= %(since)s::timestamptz)
      AND (%(workflow)s::text IS NULL
           OR EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id
                      AND t.workflow = %(workflow)s::text))
),
causes AS (
    SELECT f.task_id, f.at, balsam_failure_cause(f.message) AS cause FROM failures f
)
SELECT cause, count(*)::integer AS count, max(at) AS latest_at,
       (array_agg(DISTINCT task_id ORDER BY task_id DESC))[1:%(sample)s] AS task_ids
FROM causes
GROUP BY cause
ORDER BY count DESC, latest_at DESC, cause;

-- name: workflow_state_counts
-- How many tasks of each workflow are in each state.
SELECT workflow, state, count(*)::integer AS tasks
FROM tasks
GROUP BY workflow, state;

-- name: workflow_finished_recently
-- Tasks of each workflow that finished (events into JOB_FINISHED) in the last `seconds`, by the
-- server's clock. Each event's task is looked up by its key: a hash join would read every task.
SELECT f.workflow, count(*)::integer AS finished
FROM (SELECT (SELECT t.workflow FROM tasks t WHERE t.id = e.task_id) AS workflow
      FROM task_events e
      WHERE e.to_state = 'JOB_FINISHED'
        AND e.at >= now() - make_interval(secs => %(seconds)s)) f
WHERE f.workflow IS NOT NULL
GROUP BY f.workflow;

-- name: monitor_tasks
-- The rows of 'balsam ls', in id order, read through a server-side cursor (a NULL limit: all).
-- {columns} names columns of `listing` (balsam.monitor.tasks): the planner flattens it and
-- computes only the columns named. JSON columns come as text: a listing that does not show
-- them does not parse them. `cause` is a failed or errored task's cause: that of its last run,
-- else its own message.
SELECT {columns}
FROM (SELECT t.id, t.name, t.workflow, a.name AS app, t.state, t.state_message AS info,
             t.state_message, t.num_nodes, t.ranks_per_node, t.threads_per_rank,
             t.threads_per_core, t.cpu_affinity, t.node_packing_count, t.gpus_per_rank,
             t.mpi_flags, t.coschedule_num_nodes, t.wall_time_minutes, t.args,
             t.environ_vars::text AS environ_vars, t.data::text AS data, t.input_files,
             t.post_error_handler, t.post_timeout_handler, t.auto_timeout_retry,
             t.user_workdir, t.stage_in_url, t.stage_out_url, t.stage_out_files,
             coalesce(t.user_workdir, 'data/' || coalesce(nullif(t.workflow, ''), '_') || '/'
                      || coalesce(nullif(t.name, ''), 'task') || '_' || t.id) AS workdir,
             t.description, t.owner, t.launcher_id, t.changed_by,
             a.changed_by AS app_changed_by, t.attempts, t.created_at, t.state_changed_at,
             CASE WHEN t.state IN ('FAILED', 'RUN_ERROR', 'RUN_TIMEOUT') THEN
                 balsam_failure_cause(coalesce(
                     (SELECT e.message FROM task_events e
                      WHERE e.task_id = t.id AND e.to_state IN ('RUN_ERROR', 'RUN_TIMEOUT')
                      ORDER BY e.id DESC LIMIT 1),
                     t.state_message)) END AS cause,
             t.app_id
      FROM tasks t JOIN apps a ON a.id = t.app_id) AS listing
WHERE (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(name)s::text IS NULL OR strpos(name, %(name)s::text) > 0)
  AND (%(app_id)s::bigint IS NULL OR app_id = %(app_id)s::bigint)
ORDER BY id
LIMIT %(limit)s;
