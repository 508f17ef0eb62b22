-- Event times say when a change happened, not when it was written. A launcher writes the start and
-- the end of a run in batches, a round trip or more after the fact (and after an outage, much
-- later); stamped with the time of writing, busy intervals drift and utilisation reports lie. A
-- writer may now say when a change happened by setting state_changed_at, to a new value, with the
-- state; the time is kept within [the task's previous change, now], so a skewed or forged clock
-- cannot reorder a task's history or date it in the future. Without one (state_changed_at left
-- as it was), the database's clock is used, as before. Each event takes its time from the row.

CREATE OR REPLACE FUNCTION balsam_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM task_transitions
                   WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'task %: % -> % is not an allowed transition', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'BA001';
    END IF;
    IF NEW.state_changed_at IS DISTINCT FROM OLD.state_changed_at THEN
        NEW.state_changed_at := least(greatest(NEW.state_changed_at, OLD.state_changed_at),
                                      clock_timestamp());
    ELSE
        NEW.state_changed_at := clock_timestamp();
    END IF;
    IF NEW.state_message IS NOT DISTINCT FROM OLD.state_message THEN
        NEW.state_message := '';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION balsam_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        INSERT INTO task_events (task_id, from_state, to_state, at, launcher_id, message)
        SELECT n.id, o.state, n.state, n.state_changed_at, n.launcher_id, n.state_message
        FROM new_rows n LEFT JOIN old_rows o ON o.id = n.id
        WHERE o.id IS NULL OR o.state IS DISTINCT FROM n.state$q$;
    RETURN NULL;
END $$;
