-- Statement triggers that rarely have work return before their dynamic SQL. A launcher's moves
-- (STAGED_IN, RUNNING, JOB_FINISHED...) never ready, park or kill a task, yet each one paid for
-- planning these triggers' EXECUTE statements. A static check of the transition table alone (one
-- plan shape, whatever the statement's size: see 0002) now decides whether there is work.

CREATE OR REPLACE FUNCTION balsam_sync_with_parents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved bigint[];
    readied bigint[];
    waiting bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state IN ('READY', 'AWAITING_PARENTS')) THEN
        RETURN NULL;
    END IF;
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

CREATE OR REPLACE FUNCTION balsam_notify_kill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state = 'USER_KILLED') THEN
        RETURN NULL;
    END IF;
    EXECUTE $q$
        SELECT count(pg_notify('balsam_kill', n.id::text))
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.state = 'USER_KILLED' AND o.state <> 'USER_KILLED'$q$;
    RETURN NULL;
END $$;
