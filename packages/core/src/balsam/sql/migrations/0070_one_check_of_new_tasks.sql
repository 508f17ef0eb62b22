-- The four checks of new tasks (an initial state, created now, JSON within bounds, the
-- changed_by/changed_at stamps) read the inserted rows once instead of four times: about a
-- tenth of a bulk insert's server time. One statement trigger finds whether any row is bad;
-- only then are the checks told apart, in the order their triggers fired, with the same
-- messages and error codes. The owner check (pgserver's tasks_owner_insert) now fires after
-- the stamps check instead of before it: a row forging both is refused for its stamps.
DROP TRIGGER tasks_check_initial ON tasks;
DROP TRIGGER tasks_created_now ON tasks;
DROP TRIGGER tasks_json_insert ON tasks;
DROP TRIGGER tasks_stamp_insert ON tasks;
DROP FUNCTION balsam_check_initial();
DROP FUNCTION balsam_check_created();
DROP FUNCTION balsam_check_new_json();

CREATE FUNCTION balsam_check_new_tasks() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    initial constant text[] := ARRAY(SELECT state FROM task_states WHERE initial);
    deep constant jsonpath := balsam_too_deep();
    bad record;
BEGIN
    -- Empty objects (the default) are within bounds: the costly tests run on the others only.
    PERFORM FROM new_rows n
    WHERE n.state <> ALL (initial)
       OR n.created_at IS DISTINCT FROM now() OR n.state_changed_at IS DISTINCT FROM now()
       OR n.changed_by IS DISTINCT FROM session_user OR n.changed_at IS DISTINCT FROM now()
       OR (n.data <> '{}' AND (jsonb_typeof(n.data) <> 'object'
                               OR jsonb_path_exists(n.data, deep)
                               OR octet_length(n.data::text) > 1048576))
       OR (n.environ_vars <> '{}' AND (jsonb_typeof(n.environ_vars) <> 'object'
                                       OR jsonb_path_exists(n.environ_vars, deep)
                                       OR octet_length(n.environ_vars::text) > 1048576))
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT n.state INTO bad FROM new_rows n WHERE n.state <> ALL (initial) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a task cannot be created in state %', bad.state USING ERRCODE = 'BA001';
    END IF;
    SELECT n.created_at, n.state_changed_at INTO bad FROM new_rows n
    WHERE n.created_at IS DISTINCT FROM now() OR n.state_changed_at IS DISTINCT FROM now()
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'permission denied: a task is created now, not at % (created_at and '
            'state_changed_at are set by the database)',
            CASE WHEN bad.created_at IS DISTINCT FROM now() THEN bad.created_at
                 ELSE bad.state_changed_at END
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT problem INTO bad FROM new_rows n,
        LATERAL coalesce(balsam_json_problem(n.data, 'data'),
                         balsam_json_problem(n.environ_vars, 'environ_vars')) AS problem
    WHERE problem IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%', bad.problem USING ERRCODE = 'check_violation';
    END IF;
    SELECT n.changed_by, n.changed_at INTO bad FROM new_rows n
    WHERE n.changed_by IS DISTINCT FROM session_user OR n.changed_at IS DISTINCT FROM now()
    LIMIT 1;
    RAISE EXCEPTION 'permission denied: %.changed_by and changed_at are set by the database '
        '(to %, now), not by the writer (%, %)', TG_TABLE_NAME, session_user,
        bad.changed_by, bad.changed_at USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER tasks_check_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_new_tasks();
