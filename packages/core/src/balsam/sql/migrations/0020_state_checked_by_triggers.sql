-- A task's state is checked by the state-machine triggers alone: on insert against the initial
-- states (once per statement), on update against task_transitions (each changed row). The
-- foreign key to task_states checked every inserted and every moved row a second time, one
-- lookup per row (about a fifth of a bulk insert's time); it goes.
ALTER TABLE tasks DROP CONSTRAINT tasks_state_fkey;

-- Now the only guard on insert, this check also refuses a state task_states does not know.
CREATE OR REPLACE FUNCTION balsam_check_initial() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.state INTO bad FROM new_rows n LEFT JOIN task_states s ON s.state = n.state
    WHERE s.state IS NULL OR NOT s.initial LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a task cannot be created in state %', bad.state USING ERRCODE = 'BA001';
    END IF;
    RETURN NULL;
END $$;
