-- Tasks and their DAG, made safe under concurrency and for every client (Python, psql, others):
--   * a task created or reset to READY while a parent is unfinished waits in AWAITING_PARENTS,
--     and a task put in AWAITING_PARENTS with no unfinished parent is released;
--   * new parents are refused for a child that has started; a READY child goes back to waiting;
--   * releasing children locks them first, so two parents finishing at once cannot both miss
--     the last one (0001's trigger could leave a child waiting for ever);
--   * the cycle check runs once per statement and walks each task once;
--   * removing a dependency (or a parent task) releases a child whose other parents finished;
--   * an event's message is the one given with that change, never a stale one from the row;
--   * killing a task notifies `balsam_kill` (payload: the task id) so its launcher stops it.
-- Lock order, everywhere: parents before children. Whoever makes a child wait locks its parents
-- FOR SHARE; whoever finishes a parent holds its row lock and then locks the children.

-- State checks. The row trigger now checks updates only (and drops a message left on the row by
-- an earlier change); inserts are checked once per statement, one query for a whole bulk COPY.
DROP TRIGGER tasks_check_transition ON tasks;

CREATE OR REPLACE FUNCTION balsam_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM task_transitions
                   WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'task %: % -> % is not an allowed transition', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'BA001';
    END IF;
    NEW.state_changed_at := clock_timestamp();
    IF NEW.state_message IS NOT DISTINCT FROM OLD.state_message THEN
        NEW.state_message := '';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_check_transition BEFORE UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION balsam_check_transition();

CREATE FUNCTION balsam_check_initial() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.state INTO bad FROM new_rows n JOIN task_states s ON s.state = n.state
    WHERE NOT s.initial LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a task cannot be created in state %', bad.state USING ERRCODE = 'BA001';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_check_initial AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_initial();

-- Cycle check, once per statement (0001 checked each row, walking every path: exponential on a
-- lattice, and quadratic for a bulk insert once its cached plan went stale). The new edges are
-- in the table already: a cycle exists if a new edge's parent is reachable from its child. The
-- walk visits each (new edge, task) pair once; only on failure is a path rebuilt for the message.
-- Edits are serialised by an advisory lock so two concurrent transactions cannot each add half
-- of a cycle (READ COMMITTED: each statement below sees the other's committed edges).
DROP TRIGGER task_parents_no_cycle ON task_parents;
DROP FUNCTION balsam_check_cycle();

CREATE FUNCTION balsam_check_cycles() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parents bigint[];
    kids bigint[];
    bad record;
    between_ bigint[];
    nodes bigint[];
    preds bigint[];
    frontier bigint[];
    found_nodes bigint[];
    found_preds bigint[];
    path bigint[];
    cur bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('balsam_task_parents'));
    SELECT array_agg(parent_id), array_agg(child_id) INTO parents, kids FROM new_edges;
    EXECUTE $q$
        WITH RECURSIVE walk (parent_id, child_id, id) AS (
            SELECT e.parent_id, e.child_id, e.child_id FROM unnest($1::bigint[], $2::bigint[])
                AS e (parent_id, child_id)
            UNION
            SELECT w.parent_id, w.child_id, p.child_id
            FROM walk w JOIN task_parents p ON p.parent_id = w.id
        )
        SELECT parent_id, child_id FROM walk WHERE id = parent_id LIMIT 1$q$
        INTO bad USING parents, kids;
    IF bad.parent_id IS NULL THEN
        RETURN NULL;
    END IF;
    -- For the message, a shortest path child -> ... -> parent: breadth first through the tasks
    -- that lie on such a path (below the child and above the parent), each visited once.
    EXECUTE $q$
        WITH RECURSIVE down (id) AS (
            SELECT $1::bigint
            UNION
            SELECT e.child_id FROM task_parents e JOIN down d ON e.parent_id = d.id
        ), up (id) AS (
            SELECT $2::bigint
            UNION
            SELECT e.parent_id FROM task_parents e JOIN up u ON e.child_id = u.id
        )
        SELECT array_agg(id) FROM down WHERE id IN (SELECT id FROM up)$q$
        INTO between_ USING bad.child_id, bad.parent_id;
    nodes := ARRAY[bad.child_id];
    preds := ARRAY[NULL::bigint];
    frontier := nodes;
    WHILE NOT bad.parent_id = ANY (nodes) AND cardinality(between_) <= 10000 LOOP
        EXECUTE $q$
            SELECT array_agg(child_id), array_agg(parent_id) FROM (
                SELECT DISTINCT ON (e.child_id) e.child_id, e.parent_id
                FROM task_parents e
                WHERE e.parent_id = ANY ($1) AND e.child_id = ANY ($2)
                  AND NOT e.child_id = ANY ($3)
                ORDER BY e.child_id, e.parent_id) s$q$
            INTO found_nodes, found_preds USING frontier, between_, nodes;
        EXIT WHEN found_nodes IS NULL;
        nodes := nodes || found_nodes;
        preds := preds || found_preds;
        frontier := found_nodes;
    END LOOP;
    IF bad.parent_id = ANY (nodes) THEN
        path := ARRAY[bad.parent_id];
        cur := bad.parent_id;
        WHILE cur <> bad.child_id LOOP
            cur := preds[array_position(nodes, cur)];
            path := cur || path;
        END LOOP;
        RAISE EXCEPTION 'dependency % -> % would create a cycle: %', bad.parent_id,
            bad.child_id, array_to_string(bad.parent_id || path, ' -> ') USING ERRCODE = 'BA002';
    END IF;
    RAISE EXCEPTION 'dependency % -> % would create a cycle: % already leads to %',
        bad.parent_id, bad.child_id, bad.child_id, bad.parent_id USING ERRCODE = 'BA002';
END $$;

CREATE TRIGGER task_parents_no_cycle AFTER INSERT ON task_parents
    REFERENCING NEW TABLE AS new_edges
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_cycles();

-- Plans. A static query in a trigger function is planned once per session and its plan kept:
-- planned for a small statement, it stays a nested loop when a later statement brings 100k rows.
-- So the triggers below read the transition tables alone (one plan shape) or through EXECUTE,
-- and touch tasks only through EXECUTE ... USING arrays of ids: planned for each statement with
-- the actual ids, even for a bulk insert whose rows the statistics do not know yet.

-- New edges (after the cycle check: triggers fire in name order): lock the parents, refuse
-- children that have started, then each child waits if one of its parents is unfinished, or
-- becomes READY if all of them have finished.
CREATE FUNCTION balsam_parents_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parents bigint[];
    kids bigint[];
    waiting bigint[];
    started record;
BEGIN
    SELECT array_agg(DISTINCT parent_id), array_agg(DISTINCT child_id) INTO parents, kids
    FROM new_edges;
    IF kids IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE $q$SELECT 1 FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE$q$ USING parents;
    EXECUTE $q$SELECT 1 FROM tasks WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE$q$ USING kids;
    EXECUTE $q$
        SELECT c.id, c.state, c.launcher_id FROM tasks c JOIN task_states s ON s.state = c.state
        WHERE c.id = ANY($1) AND (NOT s.initial OR c.launcher_id IS NOT NULL)
        ORDER BY c.id LIMIT 1$q$ INTO started USING kids;
    IF started.id IS NOT NULL THEN
        RAISE EXCEPTION 'task % has already started (%): it cannot get new parents', started.id,
            CASE WHEN started.launcher_id IS NULL THEN started.state
                 ELSE started.state || ', claimed by launcher ' || started.launcher_id END
            USING ERRCODE = 'BA001';
    END IF;
    EXECUTE $q$
        SELECT array_agg(DISTINCT e.child_id)
        FROM unnest($1::bigint[]) AS p_id JOIN tasks p ON p.id = p_id
        JOIN task_parents e ON e.parent_id = p.id
        WHERE p.state <> 'JOB_FINISHED' AND e.child_id = ANY($2)$q$ INTO waiting USING parents, kids;
    EXECUTE $q$
        UPDATE tasks SET state = 'AWAITING_PARENTS', state_message = 'waiting for parents'
        WHERE id = ANY($1) AND state IN ('CREATED', 'READY')$q$ USING waiting;
    EXECUTE $q$
        UPDATE tasks c SET state = 'READY', state_message = 'all parents finished'
        WHERE c.id = ANY($1) AND c.state IN ('CREATED', 'AWAITING_PARENTS')
          AND NOT EXISTS (SELECT 1 FROM task_parents e JOIN tasks p ON p.id = e.parent_id
                          WHERE e.child_id = c.id AND p.state <> 'JOB_FINISHED')$q$ USING kids;
    RETURN NULL;
END $$;

CREATE TRIGGER task_parents_wait AFTER INSERT ON task_parents
    REFERENCING NEW TABLE AS new_edges
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_parents_added();

-- Waiting children become READY once none of their parents is unfinished. They are locked first,
-- so that of two parents finishing at once the second one sees the first one finished.
CREATE FUNCTION balsam_release(kids bigint[], message text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF kids IS NULL THEN
        RETURN;
    END IF;
    EXECUTE $q$
        SELECT 1 FROM tasks WHERE id = ANY($1) AND state = 'AWAITING_PARENTS'
        ORDER BY id FOR NO KEY UPDATE$q$ USING kids;
    EXECUTE $q$
        UPDATE tasks c SET state = 'READY', state_message = $2
        WHERE c.id = ANY($1) AND c.state = 'AWAITING_PARENTS'
          AND NOT EXISTS (SELECT 1 FROM task_parents e JOIN tasks p ON p.id = e.parent_id
                          WHERE e.child_id = c.id AND p.state <> 'JOB_FINISHED')$q$
        USING kids, message;
END $$;

-- A trigger function of its own (0001's balsam_release_children is no longer called), so a
-- later migration replacing that one cannot bring the race back.
CREATE FUNCTION balsam_release_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    finished bigint[];
    kids bigint[];
BEGIN
    SELECT array_agg(id) INTO finished FROM new_rows WHERE state = 'JOB_FINISHED';
    IF finished IS NULL THEN
        RETURN NULL;  -- also ends the recursion: the nested update finishes no task
    END IF;
    EXECUTE $q$SELECT array_agg(DISTINCT child_id) FROM task_parents WHERE parent_id = ANY($1)$q$
        INTO kids USING finished;
    PERFORM balsam_release(kids, 'all parents finished');
    RETURN NULL;
END $$;

DROP TRIGGER tasks_release_children ON tasks;
CREATE TRIGGER tasks_release_children AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_release_finished();

-- Removed edges (a dependency dropped, or a parent task deleted) release children left with only
-- finished parents.
CREATE FUNCTION balsam_parents_removed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kids bigint[];
BEGIN
    SELECT array_agg(DISTINCT child_id) INTO kids FROM old_edges;
    PERFORM balsam_release(kids, 'no unfinished parents left');
    RETURN NULL;
END $$;

CREATE TRIGGER task_parents_removed AFTER DELETE ON task_parents
    REFERENCING OLD TABLE AS old_edges
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_parents_removed();

-- A task moved to READY by hand (from FAILED, USER_KILLED, AWAITING_PARENTS...) while one of its
-- parents is unfinished goes back to waiting; one moved to AWAITING_PARENTS with nothing left
-- to wait for is released. Either way its parents are locked first (see the lock order above).
CREATE FUNCTION balsam_sync_with_parents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved bigint[];
    readied bigint[];
    waiting bigint[];
BEGIN
    EXECUTE $q$
        SELECT array_agg(n.id), array_agg(n.id) FILTER (WHERE n.state = 'READY'),
               array_agg(n.id) FILTER (WHERE n.state = 'AWAITING_PARENTS')
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.state IN ('READY', 'AWAITING_PARENTS') AND n.state <> o.state$q$
        INTO moved, readied, waiting;
    IF moved IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE $q$
        SELECT 1 FROM tasks
        WHERE id IN (SELECT parent_id FROM task_parents WHERE child_id = ANY($1))
        ORDER BY id FOR SHARE$q$ USING moved;
    PERFORM balsam_release(waiting, 'no unfinished parents');
    IF readied IS NOT NULL THEN
        EXECUTE $q$
            UPDATE tasks c SET state = 'AWAITING_PARENTS', state_message = 'waiting for parents'
            WHERE c.id = ANY($1) AND c.state = 'READY'
              AND EXISTS (SELECT 1 FROM task_parents e JOIN tasks p ON p.id = e.parent_id
                          WHERE e.child_id = c.id AND p.state <> 'JOB_FINISHED')$q$
            USING readied;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_sync_with_parents AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_sync_with_parents();

-- Kills wake the launcher running the task (LISTEN balsam_kill; payload: the task id).
CREATE FUNCTION balsam_notify_kill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        SELECT count(pg_notify('balsam_kill', n.id::text))
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.state = 'USER_KILLED' AND o.state <> 'USER_KILLED'$q$;
    RETURN NULL;
END $$;

-- 0001's event recorder, planned for each statement: a static query keeps the plan it got for
-- the first small update of the session (a nested loop over both transition tables), which is
-- quadratic once a statement changes many tasks.
CREATE OR REPLACE FUNCTION balsam_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        INSERT INTO task_events (task_id, from_state, to_state, launcher_id, message)
        SELECT n.id, o.state, n.state, n.launcher_id, n.state_message
        FROM new_rows n LEFT JOIN old_rows o ON o.id = n.id
        WHERE o.id IS NULL OR o.state IS DISTINCT FROM n.state$q$;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_notify_kill AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_notify_kill();

-- ls lists tasks in id order, filtered by workflow or state, a page at a time: with the id in
-- the index the first page of a million tasks is a short range scan, not a sort or a long walk
-- They replace 0001's (state), a prefix of (state, id), and (workflow, name): no query looks a
-- task up by exact name (ls matches a substring), so that index only slowed inserts down.
DROP INDEX tasks_state;
DROP INDEX tasks_workflow_name;
CREATE INDEX tasks_state_id ON tasks (state, id);
CREATE INDEX tasks_workflow_id ON tasks (workflow, id);
