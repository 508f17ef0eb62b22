-- Named queries of balsam_testing.launchers: apps and tasks for tests and benchmarks, in bulk.

-- name: testing_add_app
INSERT INTO apps (name, executable, preprocess, postprocess, envscript)
VALUES (%(name)s, %(executable)s, %(preprocess)s, %(postprocess)s, %(envscript)s)
RETURNING id;

-- name: testing_add_tasks
-- One task per element of a JSON array of objects; missing keys take the column defaults.
INSERT INTO tasks (app_id, name, workflow, args, num_nodes, ranks_per_node, wall_time_minutes,
                   node_packing_count, input_files, environ_vars, post_error_handler,
                   post_timeout_handler, auto_timeout_retry, state)
SELECT %(app_id)s, coalesce(e.doc->>'name', ''), coalesce(e.doc->>'workflow', ''),
       coalesce(e.doc->>'args', ''), coalesce((e.doc->>'num_nodes')::int, 1),
       coalesce((e.doc->>'ranks_per_node')::int, 1),
       coalesce((e.doc->>'wall_time_minutes')::int, 1),
       coalesce((e.doc->>'node_packing_count')::int, 1), coalesce(e.doc->>'input_files', ''),
       coalesce(e.doc->'environ_vars', '{}'), coalesce((e.doc->>'post_error_handler')::bool, false),
       coalesce((e.doc->>'post_timeout_handler')::bool, false),
       coalesce((e.doc->>'auto_timeout_retry')::bool, true), coalesce(e.doc->>'state', 'READY')
FROM jsonb_array_elements(%(tasks)s::jsonb) WITH ORDINALITY AS e (doc, n)
ORDER BY e.n
RETURNING id;

-- name: testing_add_edges
INSERT INTO task_parents (parent_id, child_id)
SELECT * FROM unnest(%(parents)s::bigint[], %(children)s::bigint[]);

-- name: testing_states
SELECT id, state, attempts, launcher_id, state_message FROM tasks ORDER BY id;

-- name: testing_events
SELECT task_id, from_state, to_state, launcher_id, message, at FROM task_events ORDER BY id;

-- name: testing_inject_rollbacks
-- Fault injection: the first three statements that change task states fail as a deadlock would (a
-- sequence counts them: nextval survives the rollback).
CREATE SEQUENCE balsam_testing_faults;
CREATE FUNCTION balsam_testing_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('balsam_testing_faults') <= 3 THEN
        RAISE EXCEPTION 'injected deadlock' USING ERRCODE = 'deadlock_detected';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER balsam_testing_fault AFTER UPDATE OF state ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_testing_fault();

-- name: testing_hold
-- Hold tasks by a new stand-in launcher, as a claim would (a RUNNING task always has one).
WITH stand_in AS (
    INSERT INTO launchers (hostname, pid, job_mode, num_nodes)
    VALUES ('stand-in', 1, 'mpi', 1) RETURNING id
)
UPDATE tasks SET launcher_id = (SELECT id FROM stand_in) WHERE id = ANY(%(ids)s::bigint[]);

-- name: testing_give_back
-- Give the tasks back and end their stand-ins now (a launcher's span bounds its busy time).
WITH ended AS (
    UPDATE launchers SET ended_at = clock_timestamp()
    WHERE id IN (SELECT launcher_id FROM tasks WHERE id = ANY(%(ids)s::bigint[]))
)
UPDATE tasks SET launcher_id = NULL WHERE id = ANY(%(ids)s::bigint[]);
