-- Claims and the DAG's lock.
--
-- A RUNNING task is always held by a launcher: the one that runs it, or none once its run is
-- over. A task released while RUNNING would never be recovered (the reaper recovers the claims
-- of dead launchers) and would hold its place in reports for ever. Such tasks are first
-- recovered as the reaper would recover them (RESTART_READY when the task retries timeouts
-- without a handler, else RUN_TIMEOUT; claim.sql's recover_claims), then refused.

UPDATE tasks
SET state = CASE WHEN auto_timeout_retry AND NOT post_timeout_handler THEN 'RESTART_READY'
                 ELSE 'RUN_TIMEOUT' END,
    state_message = 'released while RUNNING: recovered by migration 0011'
WHERE state = 'RUNNING' AND launcher_id IS NULL;

ALTER TABLE tasks ADD CONSTRAINT tasks_running_claimed
    CHECK (state <> 'RUNNING' OR launcher_id IS NOT NULL);

-- DAG edits were serialised by an advisory lock, which any session may take, a viewer's too:
-- a viewer holding it hung every `balsam dep`. Now they lock the one row of balsam_dag_lock
-- through balsam_lock_dag(), which only members and the owner may execute (the table itself
-- is read only for them: no LOCK TABLE either), and wait at most 30 seconds (the session's
-- balsam.dag_lock_timeout, if set), then fail naming whoever holds it (SQLSTATE 55P03).
CREATE TABLE balsam_dag_lock (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
);
INSERT INTO balsam_dag_lock DEFAULT VALUES;

CREATE FUNCTION balsam_lock_dag() RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET lock_timeout = '30s' AS $$
DECLARE
    holders text;
BEGIN
    PERFORM 1 FROM balsam_dag_lock FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        RETURN;  -- free (or already ours): no subtransaction on the common path
    END IF;
    PERFORM set_config('lock_timeout', coalesce(
        nullif(current_setting('balsam.dag_lock_timeout', true), ''), '30s'), true);
    BEGIN
        PERFORM 1 FROM balsam_dag_lock FOR UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        -- Holders have the table in RowShareLock (FOR UPDATE) and wait for nothing themselves.
        SELECT string_agg(DISTINCT format('%s (pid %s)', a.usename, a.pid), ', ') INTO holders
        FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
        WHERE k.locktype = 'relation' AND k.relation = 'balsam_dag_lock'::regclass
          AND k.granted AND k.mode <> 'AccessShareLock' AND k.pid <> pg_backend_pid()
          AND NOT EXISTS (SELECT 1 FROM pg_locks w WHERE w.pid = k.pid AND NOT w.granted);
        RAISE EXCEPTION 'dependencies are being changed by % and have been for over %: try '
            'again later, or ask them to finish', coalesce(holders, 'another session'),
            current_setting('lock_timeout') USING ERRCODE = 'lock_not_available';
    END;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'balsam_dag_lock has lost its row: the owner must restore it';
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION balsam_lock_dag() FROM PUBLIC;

-- 0002's cycle check, serialised by balsam_lock_dag instead of the advisory lock.
CREATE OR REPLACE FUNCTION balsam_check_cycles() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
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
    PERFORM balsam_lock_dag();
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
