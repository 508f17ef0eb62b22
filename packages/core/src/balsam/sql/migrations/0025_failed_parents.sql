-- The DAG when something fails. A child of a FAILED or USER_KILLED parent no longer waits for
-- ever: it fails too, its message naming the parent ("parent 12 is FAILED"), and so does every
-- waiting task below it. A task with allow_failed_parents (FireWorks' allow-fizzled-parents)
-- runs instead once each parent has ended, finished or not. Resets, as legacy allowed them:
--   * a task moved to CREATED (from a final, RUN_ERROR, RUN_TIMEOUT, READY or waiting state)
--     starts afresh at once: READY with no attempts counted, or waiting if a parent blocks it;
--     refused while a launcher holds it;
--   * a task reset from FAILED or USER_KILLED wakes the tasks that failed only because of it
--     (their last move was AWAITING_PARENTS -> FAILED): they wait for it again;
--   * a task reset from a final state sends its unclaimed READY children back to waiting.
-- So, after every statement: a waiting task has a parent that blocks it, and a waiting task that
-- does not allow failed parents has none that failed; an unclaimed READY task has no parent that
-- blocks it. A parent blocks a child until it finishes, or until it ends at all if the child
-- allows failed parents (the view task_blockers, the one definition every trigger reads).
-- Lock order as in 0002: parents before children, children in id order.

ALTER TABLE tasks ADD COLUMN allow_failed_parents boolean NOT NULL DEFAULT false;

CREATE VIEW task_blockers AS
SELECT e.child_id, e.parent_id, p.state AS parent_state
FROM task_parents e
JOIN tasks p ON p.id = e.parent_id
JOIN tasks c ON c.id = e.child_id
WHERE p.state <> 'JOB_FINISHED'
  AND NOT (c.allow_failed_parents AND p.state IN ('FAILED', 'USER_KILLED'));

-- Settle waiting children: fail those a failed parent dooms (and the waiting tasks below them,
-- in one statement however deep the DAG), then release those nothing blocks any more. Each step
-- of a walk looks up the children of the tasks it reached (LATERAL ... OFFSET 0) and each child
-- by its key, so that a plan made with stale statistics (right after a bulk insert) cannot turn
-- every step into a scan of all waiting or failed tasks.
-- The same stale estimates make walks look expensive enough for JIT compilation, which costs
-- far more than the walk: it is off.
CREATE OR REPLACE FUNCTION balsam_release(kids bigint[], message text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp SET jit = off AS $$
DECLARE
    -- doomed (id, via, why): a task to fail, and one parent (via) that failed (why) or will.
    doom CONSTANT text := $c$
        WITH RECURSIVE doomed (id, via, why) AS (
            SELECT c.id, p.id, p.state
            FROM tasks c JOIN task_parents e ON e.child_id = c.id JOIN tasks p ON p.id = e.parent_id
            WHERE c.id = ANY($1) AND c.state = 'AWAITING_PARENTS' AND NOT c.allow_failed_parents
              AND p.state IN ('FAILED', 'USER_KILLED')
            UNION
            SELECT x.child_id, d.id, 'FAILED' FROM doomed d, LATERAL (
                SELECT e.child_id FROM task_parents e WHERE e.parent_id = d.id OFFSET 0) x
            WHERE (SELECT c.state = 'AWAITING_PARENTS' AND NOT c.allow_failed_parents
                   FROM tasks c WHERE c.id = x.child_id)
        )$c$;
    doomed bigint[];
BEGIN
    IF kids IS NULL THEN
        RETURN;
    END IF;
    EXECUTE $q$
        SELECT 1 FROM tasks WHERE id = ANY($1) AND state = 'AWAITING_PARENTS'
        ORDER BY id FOR NO KEY UPDATE$q$ USING kids;
    EXECUTE doom || ' SELECT array_agg(DISTINCT id) FROM doomed' INTO doomed USING kids;
    IF doomed IS NOT NULL THEN
        -- Lock what the walk found below the kids, then walk again: this statement sees every
        -- change committed while it waited, and touches only rows it has locked.
        EXECUTE $q$SELECT 1 FROM tasks WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE$q$
            USING doomed;
        EXECUTE doom || $q$
            UPDATE tasks c SET state = 'FAILED', state_message = format('parent %s is %s', d.via,
                                                                        d.why)
            FROM (SELECT DISTINCT ON (id) id, via, why FROM doomed ORDER BY id, via) d
            WHERE c.id = d.id AND c.id IN (SELECT unnest($2::bigint[]))$q$ USING kids, doomed;
    END IF;
    EXECUTE $q$
        UPDATE tasks c SET state = 'READY',
            state_message = CASE WHEN c.allow_failed_parents AND EXISTS (
                                      SELECT 1 FROM task_parents e JOIN tasks p ON p.id = e.parent_id
                                      WHERE e.child_id = c.id AND p.state <> 'JOB_FINISHED')
                                 THEN 'all parents ended, not all finished' ELSE $2 END
        WHERE c.id = ANY($1) AND c.state = 'AWAITING_PARENTS'
          AND NOT EXISTS (SELECT 1 FROM task_blockers b WHERE b.child_id = c.id)$q$
        USING kids, message;
END $$;

-- A parent that ends, finished or not, settles its waiting children.
CREATE OR REPLACE FUNCTION balsam_release_finished() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    ended bigint[];
    kids bigint[];
BEGIN
    SELECT array_agg(id) INTO ended FROM new_rows
    WHERE state IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED');
    IF ended IS NULL THEN
        RETURN NULL;  -- also ends the recursion: the nested updates end no task
    END IF;
    EXECUTE $q$SELECT array_agg(DISTINCT child_id) FROM task_parents WHERE parent_id = ANY($1)$q$
        INTO kids USING ended;
    PERFORM balsam_release(kids, 'all parents finished');
    RETURN NULL;
END $$;

-- New edges: as in 0002, with "unfinished" read as "blocking". Children sent to waiting are
-- settled by the nested update's trigger; children already waiting are settled here when one of
-- the new parents has failed.
CREATE OR REPLACE FUNCTION balsam_parents_added() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    parents bigint[];
    kids bigint[];
    waiting bigint[];
    failed bigint[];
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
        SELECT array_agg(DISTINCT b.child_id) FROM task_blockers b
        WHERE b.parent_id = ANY($1) AND b.child_id = ANY($2)$q$ INTO waiting USING parents, kids;
    EXECUTE $q$
        UPDATE tasks SET state = 'AWAITING_PARENTS', state_message = 'waiting for parents'
        WHERE id = ANY($1) AND state IN ('CREATED', 'READY')$q$ USING waiting;
    EXECUTE $q$
        UPDATE tasks c SET state = 'READY',
            state_message = CASE WHEN c.allow_failed_parents AND EXISTS (
                                      SELECT 1 FROM task_parents e JOIN tasks p ON p.id = e.parent_id
                                      WHERE e.child_id = c.id AND p.state <> 'JOB_FINISHED')
                                 THEN 'all parents ended, not all finished'
                                 ELSE 'all parents finished' END
        WHERE c.id = ANY($1) AND c.state IN ('CREATED', 'AWAITING_PARENTS')
          AND NOT EXISTS (SELECT 1 FROM task_blockers b WHERE b.child_id = c.id)$q$ USING kids;
    EXECUTE $q$SELECT array_agg(id) FROM tasks WHERE id = ANY($1)
               AND state IN ('FAILED', 'USER_KILLED')$q$ INTO failed USING parents;
    IF failed IS NOT NULL THEN
        PERFORM balsam_release(waiting, 'all parents finished');
    END IF;
    RETURN NULL;
END $$;

-- Tasks moved by hand, and what that means for them and for their children.
CREATE OR REPLACE FUNCTION balsam_sync_with_parents() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp SET jit = off AS $$
DECLARE
    created bigint[];
    moved bigint[];
    readied bigint[];
    waiting bigint[];
    reset bigint[];
    woken bigint[];
    held record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state IN ('READY', 'AWAITING_PARENTS', 'CREATED'))
       AND NOT EXISTS (SELECT 1 FROM old_rows
                       WHERE state IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED')) THEN
        RETURN NULL;
    END IF;
    EXECUTE $q$
        SELECT array_agg(n.id) FILTER (WHERE n.state = 'CREATED' AND o.state <> 'CREATED'),
               array_agg(n.id) FILTER (WHERE n.state IN ('READY', 'AWAITING_PARENTS')),
               array_agg(n.id) FILTER (WHERE n.state = 'READY'),
               array_agg(n.id) FILTER (WHERE n.state = 'AWAITING_PARENTS'),
               array_agg(n.id) FILTER (WHERE o.state IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED')
                   AND n.state NOT IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED')),
               array_agg(n.id) FILTER (WHERE o.state IN ('FAILED', 'USER_KILLED')
                   AND n.state NOT IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED'))
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.state <> o.state OR n.allow_failed_parents <> o.allow_failed_parents)$q$
        INTO created, moved, readied, waiting, reset, woken;
    IF created IS NOT NULL THEN
        EXECUTE $q$SELECT id, launcher_id FROM tasks WHERE id = ANY($1)
                   AND launcher_id IS NOT NULL ORDER BY id LIMIT 1$q$ INTO held USING created;
        IF held.id IS NOT NULL THEN
            RAISE EXCEPTION 'task % is held by launcher %: it cannot be reset to CREATED (kill it '
                'or wait until it is released)', held.id, held.launcher_id USING ERRCODE = 'BA001';
        END IF;
        EXECUTE $q$
            UPDATE tasks SET state = 'READY', attempts = 0,
                             state_message = 'reset: runs again from the start'
            WHERE id = ANY($1) AND state = 'CREATED'$q$ USING created;
    END IF;
    IF moved IS NOT NULL THEN
        EXECUTE $q$
            SELECT 1 FROM tasks
            WHERE id IN (SELECT parent_id FROM task_parents WHERE child_id = ANY($1))
            ORDER BY id FOR SHARE$q$ USING moved;
        PERFORM balsam_release(waiting, 'no unfinished parents');
        EXECUTE $q$
            UPDATE tasks c SET state = 'AWAITING_PARENTS', state_message = 'waiting for parents'
            WHERE c.id = ANY($1) AND c.state = 'READY' AND c.launcher_id IS NULL
              AND EXISTS (SELECT 1 FROM task_blockers b WHERE b.child_id = c.id)$q$
            USING readied;
    END IF;
    IF reset IS NOT NULL THEN
        -- Children of reset tasks: those failed only because of them (and so on below) wait
        -- again; unclaimed READY ones that a reset parent now blocks go back to waiting.
        EXECUTE $q$
            WITH RECURSIVE wake (id) AS (
                SELECT unnest($1::bigint[])
                UNION
                SELECT x.child_id FROM wake w, LATERAL (
                    SELECT e.child_id FROM task_parents e WHERE e.parent_id = w.id OFFSET 0) x
                WHERE (SELECT c.state = 'FAILED' FROM tasks c WHERE c.id = x.child_id)
                  AND (SELECT v.from_state FROM task_events v WHERE v.task_id = x.child_id
                       ORDER BY v.id DESC LIMIT 1) = 'AWAITING_PARENTS'
            )
            SELECT array_agg(id ORDER BY id) FROM wake WHERE NOT id = ANY($1)$q$
            INTO woken USING woken;
        EXECUTE $q$
            SELECT 1 FROM tasks
            WHERE id IN (SELECT child_id FROM task_parents WHERE parent_id = ANY($1)
                         UNION ALL SELECT unnest($2::bigint[]))
            ORDER BY id FOR NO KEY UPDATE$q$ USING reset, woken;
        EXECUTE $q$
            UPDATE tasks SET state = 'AWAITING_PARENTS', state_message = 'a parent was reset'
            WHERE id = ANY($1) AND state = 'FAILED'$q$ USING woken;
        EXECUTE $q$
            UPDATE tasks c SET state = 'AWAITING_PARENTS', state_message = 'a parent was reset'
            WHERE c.id IN (SELECT child_id FROM task_parents WHERE parent_id = ANY($1))
              AND c.state = 'READY' AND c.launcher_id IS NULL
              AND EXISTS (SELECT 1 FROM task_blockers b WHERE b.child_id = c.id)$q$ USING reset;
    END IF;
    RETURN NULL;
END $$;

-- Children already waiting for a failed parent when this migration runs fail now. Their
-- transition is added here for the update (the state table is synced after the migrations).
INSERT INTO task_transitions (from_state, to_state)
SELECT 'AWAITING_PARENTS', 'FAILED' WHERE EXISTS (SELECT 1 FROM task_states WHERE state = 'FAILED')
ON CONFLICT DO NOTHING;
SELECT balsam_release(array_agg(id), 'all parents finished') FROM tasks
WHERE state = 'AWAITING_PARENTS';
