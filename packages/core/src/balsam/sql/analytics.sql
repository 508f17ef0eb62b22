-- Named queries of balsam.analytics: reports over task_events, launchers and batch_jobs.
-- Busy and available time come from the views task_busy_intervals and launcher_spans
-- (migration 0005_analytics.sql), where they are defined.
-- Parameters shared by the reports: since and until (timestamptz, the window [since, until)),
-- bin_seconds (the width of a time bin) and by ('user', 'workflow', 'batch-job' or NULL).

-- name: activity_span
-- The first and last moment of recorded activity (task events and launcher spans).
SELECT least((SELECT min(at) FROM task_events),
             (SELECT min(started_at) FROM launchers)) AS first_at,
       greatest((SELECT max(at) FROM task_events),
                (SELECT max(ended_at) FROM launcher_spans)) AS last_at,
       now() AS now;

-- name: utilization_series
-- Busy and available node-seconds per time bin and group. Each interval becomes two steps
-- (+nodes at its start, -nodes at its end); a bin's node-seconds are the level reached before the
-- bin times the bin's length, plus each step inside the bin times the time left in the bin:
-- sum(step * (stop - at)) = (stop - since) * sum(step) - sum(step * (at - since)). Busy
-- time is grouped by the launcher's owner (user), the task's workflow or the launcher's batch job;
-- available time by the launcher's owner or batch job (never by workflow: key '').
-- One row per bin and group; a bin without any group has a NULL key.
WITH busy AS (
    SELECT coalesce(CASE %(by)s::text WHEN 'user' THEN i.launcher_owner
                                      WHEN 'workflow' THEN i.workflow
                                      WHEN 'batch-job' THEN i.batch_job_id::text END, '') AS key,
           i.nodes::float8 AS nodes, greatest(i.started_at, %(since)s::timestamptz) AS s,
           least(i.ended_at, %(until)s::timestamptz) AS e
    FROM task_busy_intervals i
    WHERE i.started_at < %(until)s::timestamptz
      AND (i.ended_at IS NULL OR i.ended_at > %(since)s::timestamptz)
),
available AS (
    SELECT coalesce(CASE %(by)s::text WHEN 'user' THEN l.owner
                                      WHEN 'batch-job' THEN l.batch_job_id::text END, '') AS key,
           l.num_nodes::float8 AS nodes, greatest(l.started_at, %(since)s::timestamptz) AS s,
           least(l.ended_at, %(until)s::timestamptz) AS e
    FROM launcher_spans l
    WHERE l.started_at < %(until)s::timestamptz AND l.ended_at > %(since)s::timestamptz
),
steps AS (
    SELECT key, s AS at, nodes AS busy, 0::float8 AS available FROM busy
    UNION ALL SELECT key, e, -nodes, 0 FROM busy
    UNION ALL SELECT key, s, 0, nodes FROM available
    UNION ALL SELECT key, e, 0, -nodes FROM available
),
binned AS (
    SELECT key, date_bin(make_interval(secs => %(bin_seconds)s), at, %(since)s::timestamptz)
               AS start,
           sum(busy) AS busy_step, sum(available) AS available_step,
           sum(busy * date_part('epoch', at - %(since)s::timestamptz)) AS busy_moment,
           sum(available * date_part('epoch', at - %(since)s::timestamptz)) AS available_moment
    FROM steps
    GROUP BY 1, 2
),
bins AS (
    SELECT b AS start,
           least(b + make_interval(secs => %(bin_seconds)s), %(until)s::timestamptz) AS stop
    FROM generate_series(%(since)s::timestamptz, %(until)s::timestamptz,
                         make_interval(secs => %(bin_seconds)s)) AS b
    WHERE b < %(until)s::timestamptz
),
levels AS (
    SELECT k.key, b.start,
           coalesce(sum(d.busy_step) OVER w, 0) * date_part('epoch', b.stop - b.start)
               + coalesce(d.busy_step * date_part('epoch', b.stop - %(since)s::timestamptz)
                          - d.busy_moment, 0) AS busy_node_seconds,
           coalesce(sum(d.available_step) OVER w, 0) * date_part('epoch', b.stop - b.start)
               + coalesce(d.available_step * date_part('epoch', b.stop - %(since)s::timestamptz)
                          - d.available_moment, 0) AS available_node_seconds
    FROM bins b
    CROSS JOIN (SELECT DISTINCT key FROM binned) k
    LEFT JOIN binned d ON d.key = k.key AND d.start = b.start
    WINDOW w AS (PARTITION BY k.key ORDER BY b.start
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT b.start, b.stop, l.key, coalesce(l.busy_node_seconds, 0) AS busy_node_seconds,
       coalesce(l.available_node_seconds, 0) AS available_node_seconds
FROM bins b LEFT JOIN levels l ON l.start = b.start
ORDER BY b.start, l.key;

-- name: event_series
-- Outcome events (task_outcome_events) into the given states per time bin, state and group:
-- tasks finished (JOB_FINISHED) or errors. Grouped by the task's owner (user), its workflow or the
-- batch job of the launcher that ran it. A bin without events has one row with a NULL key.
WITH counted AS (
    SELECT date_bin(make_interval(secs => %(bin_seconds)s), o.at, %(since)s::timestamptz) AS start,
           coalesce(CASE %(by)s::text WHEN 'user' THEN o.owner
                                      WHEN 'workflow' THEN o.workflow
                                      WHEN 'batch-job' THEN o.batch_job_id::text END, '') AS key,
           o.state, count(*) AS n
    FROM task_outcome_events o
    WHERE o.state = ANY (%(states)s::text[])
      AND o.at >= %(since)s::timestamptz AND o.at < %(until)s::timestamptz
    GROUP BY 1, 2, 3
),
bins AS (
    SELECT b AS start,
           least(b + make_interval(secs => %(bin_seconds)s), %(until)s::timestamptz) AS stop
    FROM generate_series(%(since)s::timestamptz, %(until)s::timestamptz,
                         make_interval(secs => %(bin_seconds)s)) AS b
    WHERE b < %(until)s::timestamptz
)
SELECT b.start, b.stop, c.key, c.state, coalesce(c.n, 0)::integer AS count
FROM bins b LEFT JOIN counted c ON c.start = b.start
ORDER BY b.start, c.key, c.state;

-- name: error_groups
-- Events into RUN_ERROR, RUN_TIMEOUT or FAILED in the window, grouped by state, message and
-- group key (as in event_series), most frequent first, with the first few task ids.
SELECT o.state, o.message,
       coalesce(CASE %(by)s::text WHEN 'user' THEN o.owner
                                  WHEN 'workflow' THEN o.workflow
                                  WHEN 'batch-job' THEN o.batch_job_id::text END, '') AS key,
       count(*)::integer AS events, count(DISTINCT o.task_id)::integer AS tasks,
       min(o.at) AS first_at, max(o.at) AS last_at,
       (array_agg(DISTINCT o.task_id ORDER BY o.task_id))[1:%(examples)s] AS task_ids
FROM task_outcome_events o
WHERE o.state IN ('RUN_ERROR', 'RUN_TIMEOUT', 'FAILED')
  AND o.at >= %(since)s::timestamptz AND o.at < %(until)s::timestamptz
GROUP BY 1, 2, 3
ORDER BY events DESC, state, key, message;

-- name: utilization_totals
-- Busy and available node-seconds over the whole window in one pass, per group (by_key) and per
-- batch job (not by_key; batch_job_id NULL for launchers outside batch jobs).
WITH spans AS (
    SELECT coalesce(CASE %(by)s::text WHEN 'user' THEN i.launcher_owner
                                      WHEN 'workflow' THEN i.workflow
                                      WHEN 'batch-job' THEN i.batch_job_id::text END, '') AS key,
           i.batch_job_id,
           i.nodes::float8 * date_part('epoch', least(i.ended_at, %(until)s::timestamptz)
                                                - greatest(i.started_at, %(since)s::timestamptz))
               AS busy,
           0::float8 AS available
    FROM task_busy_intervals i
    WHERE i.started_at < %(until)s::timestamptz
      AND (i.ended_at IS NULL OR i.ended_at > %(since)s::timestamptz)
    UNION ALL
    SELECT coalesce(CASE %(by)s::text WHEN 'user' THEN l.owner
                                      WHEN 'batch-job' THEN l.batch_job_id::text END, ''),
           l.batch_job_id, 0,
           l.num_nodes * date_part('epoch', least(l.ended_at, %(until)s::timestamptz)
                                            - greatest(l.started_at, %(since)s::timestamptz))
    FROM launcher_spans l
    WHERE l.started_at < %(until)s::timestamptz AND l.ended_at > %(since)s::timestamptz
)
SELECT key, batch_job_id, GROUPING(key) = 0 AS by_key, sum(busy) AS busy_node_seconds,
       sum(available) AS available_node_seconds
FROM spans
GROUP BY GROUPING SETS ((key), (batch_job_id))
ORDER BY by_key DESC, key, batch_job_id;

-- name: batch_job_details
-- The batch jobs with the given ids or whose allocation overlaps the window: the allocation
-- (num_nodes from started_at until ended_at or now, clipped to the window) and the tasks their
-- launchers finished in the window.
WITH finished AS (
    SELECT o.batch_job_id, count(*) AS n
    FROM task_outcome_events o
    WHERE o.state = 'JOB_FINISHED' AND o.batch_job_id IS NOT NULL
      AND o.at >= %(since)s::timestamptz AND o.at < %(until)s::timestamptz
    GROUP BY 1
)
SELECT j.id, j.owner, j.scheduler, j.scheduler_id, j.queue, j.project, j.state, j.job_mode,
       j.num_nodes, j.wall_time_minutes, j.started_at, j.ended_at,
       CASE WHEN j.started_at IS NULL THEN 0
            ELSE j.num_nodes * greatest(0, date_part('epoch',
                     least(coalesce(j.ended_at, now()), %(until)s::timestamptz)
                     - greatest(j.started_at, %(since)s::timestamptz)))
       END::float8 AS allocated_node_seconds,
       coalesce(f.n, 0)::integer AS tasks_finished
FROM batch_jobs j
LEFT JOIN finished f ON f.batch_job_id = j.id
WHERE j.id = ANY (%(ids)s::bigint[])
   OR (j.started_at < %(until)s::timestamptz
       AND coalesce(j.ended_at, now()) > %(since)s::timestamptz)
ORDER BY j.id;

-- name: no_jit
-- Report queries are estimated expensive but run fast: JIT compilation would cost more (measured
-- 0.7 s on a million events) than it saves. Lasts until the end of the transaction.
SET LOCAL jit = off;

-- name: task_state_counts
-- How many tasks are in each state now.
SELECT state, count(*)::integer AS tasks FROM tasks GROUP BY state ORDER BY state;

-- name: run_intervals
-- Each run's busy interval (task_busy_intervals), by start; of the given tasks, or of all.
SELECT i.task_id, i.started_at, i.ended_at, i.nodes::float8 AS nodes
FROM task_busy_intervals i
WHERE %(ids)s::bigint[] IS NULL OR i.task_id = ANY(%(ids)s::bigint[])
ORDER BY i.started_at, i.task_id;

-- name: state_times
-- When tasks entered each of the given states, oldest first; of the given tasks, or of all.
SELECT e.to_state AS state, e.at
FROM task_events e
WHERE e.to_state = ANY(%(states)s::text[])
  AND (%(ids)s::bigint[] IS NULL OR e.task_id = ANY(%(ids)s::bigint[]))
ORDER BY e.at, e.id;
