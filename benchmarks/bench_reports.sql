-- Synthetic history for bench_reports.py: batch jobs, launchers, tasks and their events.
-- Parameters: base (timestamptz), span_seconds, launchers, nodes, tasks.

-- name: durable_commits
-- The throwaway cluster commits asynchronously (fast settings), and hint bits, hence the
-- visibility map VACUUM sets for index-only scans, wait for the commit to reach the WAL: commit
-- synchronously, as a real project does, so that the history is in its steady state.
SET synchronous_commit = on;

-- name: analyze
-- As autovacuum would: statistics for the planner, and the visibility map for index-only scans.
VACUUM ANALYZE;

-- name: count_events
SELECT count(*) AS n FROM task_events;

-- name: insert_app
INSERT INTO apps (name, executable) VALUES ('bench', '/bin/true') RETURNING id;

-- name: insert_batch_jobs
-- One batch job and one launcher per job, all running for the whole span plus an hour.
INSERT INTO batch_jobs (owner, scheduler, scheduler_id, num_nodes, wall_time_minutes, state,
                        submitted_at, started_at, ended_at)
SELECT (ARRAY['alice', 'bob', 'carol'])[1 + j %% 3], 'slurm', (1000 + j)::text, %(nodes)s,
       (%(span_seconds)s / 60 + 60)::integer, 'finished', %(base)s::timestamptz,
       %(base)s::timestamptz, %(base)s::timestamptz + make_interval(secs => %(span_seconds)s + 3600)
FROM generate_series(1, %(launchers)s) AS j;

-- name: insert_launchers
INSERT INTO launchers (batch_job_id, owner, hostname, pid, job_mode, num_nodes, started_at,
                       heartbeat_at, ended_at)
SELECT b.id, b.owner, 'nid' || b.id, 1000 + b.id, 'mpi', b.num_nodes, b.started_at, b.ended_at,
       b.ended_at
FROM batch_jobs b;

-- name: insert_tasks
INSERT INTO tasks (name, workflow, app_id, owner, num_nodes, state)
SELECT 'task' || i, 'wf' || (i %% 10), %(app)s, (ARRAY['alice', 'bob', 'carol'])[1 + i %% 3], 1,
       'READY'
FROM generate_series(1, %(tasks)s) AS i;

-- name: clear_events
-- The insert trigger recorded one event per task at the current time: replace the history.
TRUNCATE task_events;

-- name: insert_events
-- Every task's life, spread evenly over the span: created, staged in, preprocessed, RUNNING for
-- 33 to 50 minutes on launcher (id mod launchers), then finished; one task in 20 fails instead.
WITH steps (failed, step, from_state, to_state, offset_s, message) AS (
    VALUES (false, 0, NULL, 'CREATED', -60, ''), (false, 1, 'CREATED', 'READY', -50, ''),
           (false, 2, 'READY', 'STAGED_IN', -40, ''),
           (false, 3, 'STAGED_IN', 'PREPROCESSED', -30, ''),
           (false, 4, 'PREPROCESSED', 'RUNNING', 0, ''),
           (false, 5, 'RUNNING', 'RUN_DONE', NULL, ''),
           (false, 6, 'RUN_DONE', 'POSTPROCESSED', 5, ''),
           (false, 7, 'POSTPROCESSED', 'JOB_FINISHED', 10, ''),
           (true, 0, NULL, 'CREATED', -60, ''), (true, 1, 'CREATED', 'READY', -50, ''),
           (true, 2, 'READY', 'STAGED_IN', -40, ''),
           (true, 3, 'STAGED_IN', 'PREPROCESSED', -30, ''),
           (true, 4, 'PREPROCESSED', 'RUNNING', 0, ''),
           (true, 5, 'RUNNING', 'RUN_ERROR', NULL, 'exit status 1'),
           (true, 6, 'RUN_ERROR', 'FAILED', 5, 'no post_error_handler')
),
lives AS (
    SELECT t.id, t.id %% 20 = 0 AS failed, 1 + t.id %% %(launchers)s AS launcher,
           %(base)s::timestamptz + make_interval(secs => %(span_seconds)s * t.id / %(tasks)s)
               AS started,
           2000 + (t.id * 7919) %% 1000 AS run_s
    FROM tasks t
)
INSERT INTO task_events (task_id, from_state, to_state, at, launcher_id, message)
SELECT l.id, s.from_state, s.to_state,
       l.started + make_interval(secs => CASE WHEN s.step < 5 THEN s.offset_s
                                              WHEN s.step = 5 THEN l.run_s
                                              ELSE l.run_s + s.offset_s END),
       CASE WHEN s.step >= 4 THEN l.launcher END, s.message
FROM lives l JOIN steps s ON s.failed = l.failed
ORDER BY l.started, s.step;
