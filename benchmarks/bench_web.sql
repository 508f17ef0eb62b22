-- A campaign in full swing for bench_web.py: tasks in every stage, their histories over the last
-- day, live launchers in batch jobs. Written with triggers off (session_replication_role):
-- the rows are what the triggers would have written, generated in bulk.
-- Parameters: tasks, launchers, nodes.

-- name: triggers_off
SET session_replication_role = replica;

-- name: triggers_on
SET session_replication_role = DEFAULT;

-- name: durable_commits
SET synchronous_commit = on;

-- name: analyze
VACUUM ANALYZE;

-- name: insert_app
INSERT INTO apps (name, executable) VALUES ('sim', '/bin/true') RETURNING id;

-- name: insert_batch_jobs
INSERT INTO batch_jobs (owner, scheduler, scheduler_id, num_nodes, wall_time_minutes, state,
                        submitted_at, started_at)
SELECT (ARRAY['alice', 'bob', 'carol'])[1 + j %% 3], 'slurm', (9000 + j)::text, %(nodes)s, 1560,
       'running', now() - interval '25 hours', now() - interval '25 hours'
FROM generate_series(1, %(launchers)s) AS j;

-- name: insert_launchers
INSERT INTO launchers (batch_job_id, owner, hostname, pid, job_mode, num_nodes, started_at,
                       heartbeat_at)
SELECT b.id, b.owner, 'nid' || b.id, 1000 + b.id, 'serial', b.num_nodes, b.started_at, now()
FROM batch_jobs b;

-- name: insert_tasks
-- Per hundred tasks: 62 finished, 3 failed, 2 running, 33 ready (about 4.9 events per task). Task i started its run at
-- `started` (spread over the day before the last hour) and ran 30 to 50 minutes; running ones
-- started within the last 10 minutes.
INSERT INTO tasks (name, workflow, app_id, owner, state, state_message, launcher_id, attempts,
                   created_at, state_changed_at)
SELECT 'task' || i, 'wf' || (i %% 10), %(app)s, (ARRAY['alice', 'bob', 'carol'])[1 + i %% 3],
       k.state, CASE k.state WHEN 'FAILED' THEN 'the run failed' ELSE '' END,
       CASE k.state WHEN 'RUNNING' THEN 1 + i %% %(launchers)s END,
       CASE WHEN k.state IN ('READY') THEN 0 ELSE 1 END,
       now() - interval '26 hours',
       CASE k.state WHEN 'READY' THEN now() - interval '26 hours'
                    WHEN 'RUNNING' THEN now() - make_interval(secs => i %% 600)
                    ELSE now() - interval '25 hours' + make_interval(secs => 86400.0 * i / %(tasks)s
                                                                     + 1800 + i %% 1200) END
FROM generate_series(1, %(tasks)s) AS i,
     LATERAL (SELECT CASE WHEN i %% 100 < 62 THEN 'JOB_FINISHED' WHEN i %% 100 < 65 THEN 'FAILED'
                          WHEN i %% 100 < 67 THEN 'RUNNING' ELSE 'READY' END AS state) k;

-- name: insert_events
-- Each task's history, as the triggers and launchers record it.
WITH steps (state, step, from_state, to_state, message) AS (
    VALUES ('JOB_FINISHED', 1, NULL, 'READY', ''), ('JOB_FINISHED', 2, 'READY', 'STAGED_IN', ''),
           ('JOB_FINISHED', 3, 'STAGED_IN', 'PREPROCESSED', ''),
           ('JOB_FINISHED', 4, 'PREPROCESSED', 'RUNNING', ''),
           ('JOB_FINISHED', 5, 'RUNNING', 'RUN_DONE', 'exit 0'),
           ('JOB_FINISHED', 6, 'RUN_DONE', 'POSTPROCESSED', ''),
           ('JOB_FINISHED', 7, 'POSTPROCESSED', 'JOB_FINISHED', ''),
           ('FAILED', 1, NULL, 'READY', ''), ('FAILED', 2, 'READY', 'STAGED_IN', ''),
           ('FAILED', 3, 'STAGED_IN', 'PREPROCESSED', ''),
           ('FAILED', 4, 'PREPROCESSED', 'RUNNING', ''),
           ('FAILED', 5, 'RUNNING', 'RUN_ERROR', 'exit 139: loading mesh | Segmentation fault'),
           ('FAILED', 6, 'RUN_ERROR', 'FAILED', 'the run failed and the task has no error handler'),
           ('RUNNING', 1, NULL, 'READY', ''), ('RUNNING', 2, 'READY', 'STAGED_IN', ''),
           ('RUNNING', 3, 'STAGED_IN', 'PREPROCESSED', ''),
           ('RUNNING', 4, 'PREPROCESSED', 'RUNNING', ''),
           ('READY', 1, NULL, 'READY', '')
)
INSERT INTO task_events (task_id, from_state, to_state, at, db_user, launcher_id, message)
SELECT t.id, s.from_state, s.to_state,
       CASE WHEN s.step = 1 THEN t.created_at
            WHEN s.step < 4 THEN t.state_changed_at - make_interval(secs => 1800 + 60 - s.step)
            WHEN s.step = 4 AND t.state = 'RUNNING' THEN t.state_changed_at
            WHEN s.step = 4 THEN t.state_changed_at - interval '1800 seconds'
            ELSE t.state_changed_at - make_interval(secs => 7 - s.step) END,
       t.owner, CASE WHEN s.step >= 4 THEN 1 + t.id %% %(launchers)s END,
       CASE WHEN s.step = 5 AND t.state = 'FAILED' AND t.id %% 3 = 0
            THEN 'exit 2: reading input | FileNotFoundError: mesh.dat' ELSE s.message END
FROM tasks t JOIN steps s ON s.state = t.state
ORDER BY t.id, s.step;

-- name: counts
SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM task_events) AS events;

-- name: a_ready_task
SELECT id FROM tasks WHERE state = 'READY' AND workflow = 'wf3' ORDER BY id DESC LIMIT 1;

-- name: kill_task
UPDATE tasks SET state = 'USER_KILLED', state_message = 'bench' WHERE id = %(id)s;

-- name: killed
SELECT count(*) AS n FROM tasks WHERE state = 'USER_KILLED';
