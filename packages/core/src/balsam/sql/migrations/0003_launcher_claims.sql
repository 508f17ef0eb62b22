-- Claiming and recovery: each launcher declares how long it may go without a heartbeat before
-- others presume it dead, and the claim queries get indexes in the order they read.

ALTER TABLE launchers
    ADD COLUMN heartbeat_timeout interval NOT NULL DEFAULT interval '60 seconds'
        CHECK (heartbeat_timeout > interval '0');

-- Tasks that need nodes, best first for the default policy (largest, then longest) when no
-- workflow filter narrows the scan (tasks_claimable serves the filtered case).
CREATE INDEX tasks_claim_order ON tasks (num_nodes DESC, wall_time_minutes DESC, id)
    WHERE launcher_id IS NULL
      AND state IN ('READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY');

-- Tasks whose run is over but whose post-processing nobody holds (their launcher stopped).
CREATE INDEX tasks_post_claimable ON tasks (id)
    WHERE launcher_id IS NULL
      AND state IN ('RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT', 'POSTPROCESSED');

-- Releasing children updates tasks, which fires this statement trigger again: stop when the
-- statement finished no task (the nested update only makes tasks READY), instead of recursing
-- until the stack overflows on every update of tasks.
CREATE OR REPLACE FUNCTION balsam_release_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state = 'JOB_FINISHED') THEN
        RETURN NULL;
    END IF;
    UPDATE tasks c SET state = 'READY', state_message = 'all parents finished'
    WHERE c.state = 'AWAITING_PARENTS'
      AND c.id IN (SELECT p.child_id FROM task_parents p JOIN new_rows n ON n.id = p.parent_id
                   WHERE n.state = 'JOB_FINISHED')
      AND NOT EXISTS (SELECT 1 FROM task_parents p2 JOIN tasks t ON t.id = p2.parent_id
                      WHERE p2.child_id = c.id AND t.state <> 'JOB_FINISHED');
    RETURN NULL;
END $$;
