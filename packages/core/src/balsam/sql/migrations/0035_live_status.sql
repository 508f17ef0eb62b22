-- Live status (balsam web and other monitors): changes to tasks, dependencies, launchers and batch
-- jobs are announced on the channel `balsam_events` (payload: the table's name), and workflow
-- progress is counted from a small index instead of the whole table.

-- Tasks per workflow and state (balsam.monitor.workflow_progress): an index-only scan of a small,
-- deduplicated index instead of a scan of every row (about half the time at a million tasks).
CREATE INDEX tasks_workflow_state ON tasks (workflow, state);

-- One notification per statement that changed rows (a statement changing none, such as an idle
-- launcher's empty claim, says nothing), and per session at most one per table every 200 ms: a
-- launcher writing a thousand moves a second, statement by statement, sends at most five. A
-- listener that hears one looks again a little later (after the 200 ms) to see what the quiet
-- period held back. The time of the session's last notification is kept in a session setting
-- (undone with the transaction, like the notification itself, if it rolls back).
CREATE FUNCTION balsam_notify_change() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    setting text := 'balsam.notified_' || TG_TABLE_NAME;
    last_text text := current_setting(setting, true);
    now_s float8 := date_part('epoch', clock_timestamp());
BEGIN
    IF last_text IS NOT NULL AND last_text <> '' AND now_s - last_text::float8 < 0.2
            AND now_s >= last_text::float8 THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM changed_rows) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('balsam_events', TG_TABLE_NAME);
    PERFORM set_config(setting, now_s::text, false);
    RETURN NULL;
END $$;

DO $$
DECLARE
    tab text;
BEGIN
    FOREACH tab IN ARRAY ARRAY['tasks', 'task_parents', 'launchers', 'batch_jobs'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS changed_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION balsam_notify_change()',
                       tab || '_announce_insert', tab);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS changed_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION balsam_notify_change()',
                       tab || '_announce_update', tab);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS changed_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION balsam_notify_change()',
                       tab || '_announce_delete', tab);
    END LOOP;
END $$;
