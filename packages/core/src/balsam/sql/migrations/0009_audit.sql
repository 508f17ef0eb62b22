-- Who changed what, written by the database alone. A launcher runs what apps and tasks say; once
-- launchers run only the tasks of users their user trusts (0010), it must know who last changed
-- what it would execute, and that record must be one no collaborator can forge or erase:
--   * task_events is written by triggers only (collaborators lose INSERT on it in
--     balsam_pgserver's 0010_audit_privileges.sql), as session_user: the login that made the
--     change, whatever role it SET and whichever function it went through;
--   * apps.changed_by/changed_at and tasks.changed_by/changed_at: who last changed what a
--     launcher would execute and when (apps: executable, preprocess, postprocess, envscript;
--     tasks: args, environ_vars, user_workdir, app_id, input_files). Set on insert and on any
--     change of those fields, never by the writer: setting them directly is refused;
--   * changes: one row per change of those fields and per deleted task or app;
--   * removing a task keeps its events and changes (they no longer cascade);
--   * a task is created now: its times cannot be set on insert (to date its history back).
-- The functions writing task_events and changes are SECURITY DEFINER (collaborators cannot
-- write those tables themselves) and not executable by PUBLIC: otherwise a collaborator could
-- attach them to a temporary table of their own and write whatever rows it holds.

-- --- task_events: written by triggers, attributed to session_user, kept after a removal -------

ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey;
ALTER TABLE task_events ALTER COLUMN db_user SET DEFAULT session_user;

CREATE OR REPLACE FUNCTION balsam_record_event() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    EXECUTE $q$
        INSERT INTO task_events (task_id, from_state, to_state, at, db_user, launcher_id, message)
        SELECT n.id, o.state, n.state, n.state_changed_at, session_user, n.launcher_id,
               n.state_message
        FROM new_rows n LEFT JOIN old_rows o ON o.id = n.id
        WHERE o.id IS NULL OR o.state IS DISTINCT FROM n.state$q$;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION balsam_record_insert_event() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO task_events (task_id, from_state, to_state, db_user, launcher_id, message)
    SELECT n.id, NULL, n.state, session_user, n.launcher_id, n.state_message FROM new_rows n;
    RETURN NULL;
END $$;

-- A task is created now. 0006 lets a writer date a state change within (the task's previous
-- change, now]; a task inserted with an old state_changed_at would let its whole history be
-- dated back at will. Checked once per statement.
CREATE FUNCTION balsam_check_created() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad record;
BEGIN
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
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_created_now AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_created();

-- Reports count the tasks that exist, as before: the events of a removed task stay in its
-- history but leave the figures (as its busy time leaves task_busy_intervals, which joins tasks).
CREATE OR REPLACE VIEW task_outcome_events AS
SELECT e.id, e.task_id, e.to_state AS state, e.at, e.message, t.owner, t.workflow, e.launcher_id,
       l.batch_job_id
FROM task_events e
JOIN tasks t ON t.id = e.task_id
LEFT JOIN launchers l ON l.id = e.launcher_id
WHERE e.to_state IN ('JOB_FINISHED', 'RUN_ERROR', 'RUN_TIMEOUT', 'FAILED');

-- --- changed_by, changed_at --------------------------------------------------------------------

-- Rows from before this migration were last changed, as far as anyone knows, by their owner.
ALTER TABLE apps ADD COLUMN changed_by text, ADD COLUMN changed_at timestamptz;
UPDATE apps SET changed_by = owner, changed_at = created_at;
ALTER TABLE apps
    ALTER COLUMN changed_by SET NOT NULL, ALTER COLUMN changed_by SET DEFAULT session_user,
    ALTER COLUMN changed_at SET NOT NULL, ALTER COLUMN changed_at SET DEFAULT now();

ALTER TABLE tasks ADD COLUMN changed_by text, ADD COLUMN changed_at timestamptz;
UPDATE tasks SET changed_by = owner, changed_at = created_at;
ALTER TABLE tasks
    ALTER COLUMN changed_by SET NOT NULL, ALTER COLUMN changed_by SET DEFAULT session_user,
    ALTER COLUMN changed_at SET NOT NULL, ALTER COLUMN changed_at SET DEFAULT now();

-- New rows: the defaults, checked once per statement (a row trigger would slow bulk COPY down).
CREATE FUNCTION balsam_check_stamps() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    forged record;
BEGIN
    SELECT changed_by, changed_at INTO forged FROM new_rows
    WHERE changed_by IS DISTINCT FROM session_user OR changed_at IS DISTINCT FROM now() LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'permission denied: %.changed_by and changed_at are set by the database '
            '(to %, now), not by the writer (%, %)', TG_TABLE_NAME, session_user,
            forged.changed_by, forged.changed_at USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;

-- A change of a field a launcher would execute: the current login, now.
CREATE FUNCTION balsam_stamp_change() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.changed_by := session_user;
    NEW.changed_at := clock_timestamp();
    RETURN NEW;
END $$;

-- An update setting changed_by or changed_at without changing any of those fields.
CREATE FUNCTION balsam_refuse_stamp() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'permission denied: %.changed_by and changed_at are set by the database, '
        'not by the writer', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;

-- --- changes -----------------------------------------------------------------------------------

-- entity: 'app' or 'task' (entity_id: its id) or 'trust' (entity_id NULL, field: the truster,
-- new_value: the user trusted, or old_value: the user no longer trusted; see 0010_trust.sql).
-- field: the column changed, or 'deleted' (old_value: the removed row's main fields as JSON).
-- Values are text (JSON for environ_vars); NULL where the column was NULL.
CREATE TABLE changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity text NOT NULL CHECK (entity IN ('app', 'task', 'trust')),
    entity_id bigint,
    field text NOT NULL,
    old_value text,
    new_value text,
    changed_by text NOT NULL DEFAULT session_user,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX changes_entity ON changes (entity, entity_id, id);

-- One row per field that changed. Arguments: the entity, then the fields.
CREATE FUNCTION balsam_record_change() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb := to_jsonb(NEW);
BEGIN
    INSERT INTO changes (entity, entity_id, field, old_value, new_value, changed_by, changed_at)
    SELECT TG_ARGV[0], NEW.id, f, old_row ->> f, new_row ->> f, NEW.changed_by, NEW.changed_at
    FROM unnest(TG_ARGV[1:]) AS f
    WHERE old_row -> f IS DISTINCT FROM new_row -> f;
    RETURN NULL;
END $$;

-- One row per removed task or app, once per statement. Arguments: the entity, then the fields
-- kept in old_value (named in the statement: to_jsonb of whole rows costs 3 times as much).
CREATE FUNCTION balsam_record_deletion() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    EXECUTE format($q$
        INSERT INTO changes (entity, entity_id, field, old_value, changed_by, changed_at)
        SELECT $1, o.id, 'deleted', jsonb_build_object(%s)::text, session_user, clock_timestamp()
        FROM old_rows o ORDER BY o.id$q$,
        (SELECT string_agg(format('%L, o.%I', f, f), ', ') FROM unnest(TG_ARGV[1:]) AS f))
        USING TG_ARGV[0];
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION balsam_record_event(), balsam_record_insert_event(),
    balsam_record_change(), balsam_record_deletion() FROM PUBLIC;

-- --- the triggers ------------------------------------------------------------------------------
-- BEFORE triggers fire in name order: *_stamp_change sets the stamps when a field changed, so
-- *_stamp_forged (an update of the stamps alone) never sees one it set.

CREATE TRIGGER apps_stamp_insert AFTER INSERT ON apps
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_stamps();
CREATE TRIGGER apps_stamp_change
    BEFORE UPDATE OF executable, preprocess, postprocess, envscript, changed_by, changed_at ON apps
    FOR EACH ROW
    WHEN ((OLD.executable, OLD.preprocess, OLD.postprocess, OLD.envscript)
          IS DISTINCT FROM (NEW.executable, NEW.preprocess, NEW.postprocess, NEW.envscript))
    EXECUTE FUNCTION balsam_stamp_change();
CREATE TRIGGER apps_stamp_forged BEFORE UPDATE OF changed_by, changed_at ON apps
    FOR EACH ROW
    WHEN ((OLD.executable, OLD.preprocess, OLD.postprocess, OLD.envscript)
          IS NOT DISTINCT FROM (NEW.executable, NEW.preprocess, NEW.postprocess, NEW.envscript)
          AND (OLD.changed_by, OLD.changed_at) IS DISTINCT FROM (NEW.changed_by, NEW.changed_at))
    EXECUTE FUNCTION balsam_refuse_stamp();
CREATE TRIGGER apps_record_change
    AFTER UPDATE OF executable, preprocess, postprocess, envscript ON apps
    FOR EACH ROW
    WHEN ((OLD.executable, OLD.preprocess, OLD.postprocess, OLD.envscript)
          IS DISTINCT FROM (NEW.executable, NEW.preprocess, NEW.postprocess, NEW.envscript))
    EXECUTE FUNCTION balsam_record_change('app', 'executable', 'preprocess', 'postprocess',
                                          'envscript');
CREATE TRIGGER apps_record_deletion AFTER DELETE ON apps
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_record_deletion(
        'app', 'name', 'executable', 'preprocess', 'postprocess', 'envscript', 'owner',
        'changed_by', 'changed_at');

CREATE TRIGGER tasks_stamp_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_stamps();
CREATE TRIGGER tasks_stamp_change
    BEFORE UPDATE OF args, environ_vars, user_workdir, app_id, input_files, changed_by, changed_at
    ON tasks
    FOR EACH ROW
    WHEN ((OLD.args, OLD.environ_vars, OLD.user_workdir, OLD.app_id, OLD.input_files)
          IS DISTINCT FROM (NEW.args, NEW.environ_vars, NEW.user_workdir, NEW.app_id,
                            NEW.input_files))
    EXECUTE FUNCTION balsam_stamp_change();
CREATE TRIGGER tasks_stamp_forged BEFORE UPDATE OF changed_by, changed_at ON tasks
    FOR EACH ROW
    WHEN ((OLD.args, OLD.environ_vars, OLD.user_workdir, OLD.app_id, OLD.input_files)
          IS NOT DISTINCT FROM (NEW.args, NEW.environ_vars, NEW.user_workdir, NEW.app_id,
                                NEW.input_files)
          AND (OLD.changed_by, OLD.changed_at) IS DISTINCT FROM (NEW.changed_by, NEW.changed_at))
    EXECUTE FUNCTION balsam_refuse_stamp();
CREATE TRIGGER tasks_record_change
    AFTER UPDATE OF args, environ_vars, user_workdir, app_id, input_files ON tasks
    FOR EACH ROW
    WHEN ((OLD.args, OLD.environ_vars, OLD.user_workdir, OLD.app_id, OLD.input_files)
          IS DISTINCT FROM (NEW.args, NEW.environ_vars, NEW.user_workdir, NEW.app_id,
                            NEW.input_files))
    EXECUTE FUNCTION balsam_record_change('task', 'args', 'environ_vars', 'user_workdir',
                                          'app_id', 'input_files');
CREATE TRIGGER tasks_record_deletion AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_record_deletion(
        'task', 'name', 'workflow', 'state', 'owner', 'app_id', 'args', 'environ_vars',
        'user_workdir', 'input_files', 'changed_by', 'changed_at');
