-- Named queries of balsam web: the pages' own reads (balsam.monitor has the shared ones).
-- Optional filters are "(%(x)s IS NULL OR ...)", as in balsam's tasks.sql: each call is planned
-- with its values, so unused filters fold away and the indexes serve the rest.

-- name: task_filter
-- The task list's filters, composed into the two queries below as {filter} (psycopg.sql).
(%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
  AND (%(state)s::text IS NULL OR t.state = %(state)s::text)
  AND (%(app)s::text IS NULL OR a.name = %(app)s::text)
  AND (%(owner)s::text IS NULL OR t.owner = %(owner)s::text)
  AND (%(name)s::text IS NULL OR strpos(t.name, %(name)s::text) > 0)

-- name: task_page
-- One page of tasks matching {filter}, by id in the direction {direction} (ASC or DESC),
-- strictly between after and before. limit + 1 rows tell whether there is another page.
SELECT t.id, t.name, t.workflow, a.name AS app_name, t.state, t.state_message, t.owner,
       t.num_nodes, t.attempts, t.launcher_id, t.state_changed_at
FROM tasks t
JOIN apps a ON a.id = t.app_id
WHERE {filter}
  AND (%(after)s::bigint IS NULL OR t.id > %(after)s::bigint)
  AND (%(before)s::bigint IS NULL OR t.id < %(before)s::bigint)
ORDER BY t.id {direction}
LIMIT %(limit)s + 1;

-- name: task_count_capped
-- How many tasks match {filter}, counting no further than cap.
SELECT count(*)::integer AS n FROM (
    SELECT 1 FROM tasks t JOIN apps a ON a.id = t.app_id WHERE {filter} LIMIT %(cap)s
) matching;

-- name: workflow_names
-- Distinct workflows, skipping through the (workflow, state) index one name at a time.
WITH RECURSIVE names (workflow) AS (
    (SELECT workflow FROM tasks ORDER BY workflow LIMIT 1)
    UNION ALL
    SELECT (SELECT t.workflow FROM tasks t WHERE t.workflow > n.workflow
            ORDER BY t.workflow LIMIT 1)
    FROM names n
    WHERE n.workflow IS NOT NULL
)
SELECT workflow FROM names WHERE workflow IS NOT NULL LIMIT %(limit)s;

-- name: app_names
SELECT name FROM apps ORDER BY name;

-- name: known_users
-- Users who have recorded something (apps, launchers, batch jobs): suggestions for the owner
-- filter, not a list of who may use the project.
SELECT owner FROM apps UNION SELECT owner FROM launchers UNION SELECT owner FROM batch_jobs
ORDER BY 1;

-- name: running_tasks
-- Tasks running now, longest running first.
SELECT t.id, t.name, t.workflow, t.owner, t.num_nodes, t.launcher_id, t.state_changed_at
FROM tasks t
WHERE t.state = 'RUNNING'
ORDER BY t.state_changed_at, t.id
LIMIT %(limit)s;

-- name: task_parents
-- Up to `limit` parents of a task, with how many it has in all.
SELECT t.id, t.name, t.state, count(*) OVER ()::integer AS total
FROM task_parents e JOIN tasks t ON t.id = e.parent_id
WHERE e.child_id = %(id)s
ORDER BY t.id
LIMIT %(limit)s;

-- name: task_children
SELECT t.id, t.name, t.state, count(*) OVER ()::integer AS total
FROM task_parents e JOIN tasks t ON t.id = e.child_id
WHERE e.parent_id = %(id)s
ORDER BY t.id
LIMIT %(limit)s;

-- name: batch_job_rows
-- The most recent batch jobs, with how many launchers ran in each.
SELECT j.id, j.owner, j.scheduler, j.scheduler_id, j.project, j.queue, j.num_nodes,
       j.wall_time_minutes, j.job_mode, j.wf_filter, j.state, j.state_message, j.submitted_at,
       j.started_at, j.ended_at,
       (SELECT count(*) FROM launchers l WHERE l.batch_job_id = j.id)::integer AS launchers
FROM batch_jobs j
ORDER BY j.id DESC
LIMIT %(limit)s;

-- name: whoami
SELECT session_user AS name, now() AS now;
