-- Named queries of the Python API (balsam.api): apps, tasks, dependencies, states.
-- Optional filters are "(%(x)s IS NULL OR ...)": each call is planned with its values, so the
-- unused ones fold away and the indexes serve the rest.

-- name: insert_app
INSERT INTO apps (name, executable, description, preprocess, postprocess, envscript)
VALUES (%(name)s, %(executable)s, %(description)s, %(preprocess)s, %(postprocess)s, %(envscript)s)
RETURNING *;

-- name: app_by_name
SELECT * FROM apps WHERE name = %(name)s;

-- name: app_by_id
SELECT * FROM apps WHERE id = %(id)s;

-- name: list_apps
SELECT a.*, (SELECT count(*) FROM tasks t WHERE t.app_id = a.id) AS tasks
FROM apps a ORDER BY a.name;

-- name: update_app
-- {column} is composed with psycopg.sql.Identifier from balsam.models.APP_FIELDS.
UPDATE apps SET {column} = %(value)s WHERE id = %(id)s RETURNING *;

-- name: delete_app
DELETE FROM apps WHERE id = %(id)s;

-- name: app_task_ids
SELECT id FROM tasks WHERE app_id = %(app_id)s ORDER BY id;

-- name: insert_task
INSERT INTO tasks (name, workflow, app_id, args, data, user_workdir, description,
    wall_time_minutes, num_nodes, ranks_per_node, threads_per_rank, threads_per_core,
    cpu_affinity, node_packing_count, gpus_per_rank, mpi_flags, coschedule_num_nodes,
    environ_vars, input_files, post_error_handler, post_timeout_handler, auto_timeout_retry,
    allow_failed_parents, stage_in_url, stage_out_url, stage_out_files, state)
VALUES (%(name)s, %(workflow)s, %(app_id)s, %(args)s, %(data)s, %(user_workdir)s,
    %(description)s, %(wall_time_minutes)s, %(num_nodes)s, %(ranks_per_node)s,
    %(threads_per_rank)s, %(threads_per_core)s, %(cpu_affinity)s, %(node_packing_count)s,
    %(gpus_per_rank)s, %(mpi_flags)s, %(coschedule_num_nodes)s,
    %(environ_vars)s, %(input_files)s, %(post_error_handler)s, %(post_timeout_handler)s,
    %(auto_timeout_retry)s, %(allow_failed_parents)s, %(stage_in_url)s, %(stage_out_url)s,
    %(stage_out_files)s, %(state)s)
RETURNING id;

-- name: new_task_ids
-- Ids for the next block of a bulk insert (COPY then writes them).
SELECT array_agg(nextval('tasks_id_seq')) AS ids FROM generate_series(1, %(count)s::int);

-- name: copy_tasks
-- A bulk insert's block, ids included (COPY writes an identity column's given values); the
-- statement triggers fire once for the block as for an INSERT.
COPY tasks (id, name, workflow, app_id, args, data, user_workdir, description,
    wall_time_minutes, num_nodes, ranks_per_node, threads_per_rank, threads_per_core,
    cpu_affinity, node_packing_count, gpus_per_rank, mpi_flags, coschedule_num_nodes,
    environ_vars, input_files, post_error_handler, post_timeout_handler, auto_timeout_retry,
    allow_failed_parents, stage_in_url, stage_out_url, stage_out_files, state) FROM STDIN;

-- name: insert_edges
-- Dependencies as two parallel arrays; an edge that already exists is kept as it is.
INSERT INTO task_parents (parent_id, child_id)
SELECT * FROM unnest(%(parents)s::bigint[], %(children)s::bigint[])
ON CONFLICT DO NOTHING;

-- name: delete_edge
DELETE FROM task_parents WHERE parent_id = %(parent)s AND child_id = %(child)s;

-- name: existing_ids
SELECT id FROM tasks WHERE id = ANY(%(ids)s::bigint[]);

-- name: task_by_id
SELECT t.*, a.name AS app_name FROM tasks t JOIN apps a ON a.id = t.app_id WHERE t.id = %(id)s;

-- name: lock_task
SELECT t.*, a.name AS app_name FROM tasks t JOIN apps a ON a.id = t.app_id
WHERE t.id = %(id)s FOR UPDATE OF t;

-- name: select_tasks
-- Tasks matching the filters in id order (a NULL limit means all).
SELECT t.*, a.name AS app_name
FROM tasks t JOIN apps a ON a.id = t.app_id
WHERE (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
  AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
  AND (%(states)s::text[] IS NULL OR t.state = ANY(%(states)s::text[]))
  AND (%(name)s::text IS NULL OR strpos(t.name, %(name)s::text) > 0)
  AND (%(app_id)s::bigint IS NULL OR t.app_id = %(app_id)s::bigint)
ORDER BY t.id
LIMIT %(limit)s;

-- name: select_task_ids
SELECT t.id
FROM tasks t
WHERE (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
  AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
  AND (%(states)s::text[] IS NULL OR t.state = ANY(%(states)s::text[]))
  AND (%(name)s::text IS NULL OR strpos(t.name, %(name)s::text) > 0)
  AND (%(app_id)s::bigint IS NULL OR t.app_id = %(app_id)s::bigint)
ORDER BY t.id;

-- name: count_by_state
SELECT t.state, count(*) AS count
FROM tasks t
WHERE (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
  AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
  AND (%(states)s::text[] IS NULL OR t.state = ANY(%(states)s::text[]))
  AND (%(name)s::text IS NULL OR strpos(t.name, %(name)s::text) > 0)
  AND (%(app_id)s::bigint IS NULL OR t.app_id = %(app_id)s::bigint)
GROUP BY t.state;

-- name: count_by_workflow
SELECT t.workflow, t.state, count(*) AS count
FROM tasks t GROUP BY t.workflow, t.state ORDER BY t.workflow, t.state;

-- name: update_task
-- {column} is composed with psycopg.sql.Identifier from balsam.models.TASK_FIELDS.
UPDATE tasks SET {column} = %(value)s WHERE id = %(id)s;

-- name: pin_workdir
UPDATE tasks SET user_workdir = %(workdir)s WHERE id = %(id)s;

-- name: set_app
UPDATE tasks SET app_id = %(app_id)s WHERE id = %(id)s;

-- name: set_state
UPDATE tasks SET state = %(state)s, state_message = %(message)s
WHERE id = ANY(%(ids)s::bigint[]) AND state <> %(state)s
RETURNING id;

-- name: kill_tasks
-- USER_KILLED from any non-final state; the trigger notifies balsam_kill for each task.
UPDATE tasks t SET state = 'USER_KILLED', state_message = %(message)s
FROM task_states s
WHERE s.state = t.state AND NOT s.final AND t.id = ANY(%(ids)s::bigint[])
RETURNING t.id;

-- name: delete_tasks
DELETE FROM tasks WHERE id = ANY(%(ids)s::bigint[]);

-- name: descendants
-- The tasks below the given ones in the DAG (each once), not including them.
WITH RECURSIVE down (id) AS (
    SELECT child_id FROM task_parents WHERE parent_id = ANY(%(ids)s::bigint[])
    UNION
    SELECT p.child_id FROM task_parents p JOIN down d ON p.parent_id = d.id
)
SELECT id FROM down ORDER BY id;

-- name: waiting_children_outside
-- Children waiting for one of the given tasks that are not themselves among them.
SELECT e.child_id, e.parent_id
FROM task_parents e JOIN tasks c ON c.id = e.child_id
WHERE e.parent_id = ANY(%(ids)s::bigint[]) AND NOT e.child_id = ANY(%(ids)s::bigint[])
  AND c.state = 'AWAITING_PARENTS'
ORDER BY e.child_id, e.parent_id
LIMIT 5;

-- name: unfinished_parents
-- For each given child, the parents that keep it waiting (why it waits; see task_blockers).
SELECT b.child_id, b.parent_id AS id, b.parent_state AS state
FROM task_blockers b
WHERE b.child_id = ANY(%(ids)s::bigint[])
ORDER BY b.child_id, b.parent_id;

-- name: parent_ids
SELECT parent_id AS id FROM task_parents WHERE child_id = %(id)s ORDER BY parent_id;

-- name: child_ids
SELECT child_id AS id FROM task_parents WHERE parent_id = %(id)s ORDER BY child_id;

-- name: edges_among
-- Dependencies touching the given tasks (for ls --tree).
SELECT parent_id, child_id FROM task_parents
WHERE parent_id = ANY(%(ids)s::bigint[]) OR child_id = ANY(%(ids)s::bigint[])
ORDER BY parent_id, child_id;

-- name: task_history
SELECT * FROM task_events WHERE task_id = %(id)s ORDER BY id;

-- name: app_ids
-- Every app's name and id (a bulk insert resolves app names from it).
SELECT id, name FROM apps;

-- name: entity_changes
-- Changes of one app or task (their removal included), oldest first.
SELECT * FROM changes WHERE entity = %(entity)s AND entity_id = %(id)s ORDER BY id;
