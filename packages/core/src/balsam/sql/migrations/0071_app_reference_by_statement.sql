-- tasks.app_id names an app: checked once per statement instead of once per row. The foreign
-- key's check of each new row was a quarter of a bulk insert's server time. Its guarantees stay:
-- - new tasks (and a task given another app) name apps that exist, which the check locks
--   FOR KEY SHARE, as the foreign key did, so that they cannot go before the transaction ends;
-- - an app that tasks name is not removed (was ON DELETE RESTRICT), nor given another id, nor
--   truncated away from them.
-- A foreign key's RESTRICT sees rows committed after the remover's snapshot (a crosscheck);
-- a trigger sees them only at READ COMMITTED, where each statement takes a new snapshot after
-- waiting for the row locks above: apps are removed at READ COMMITTED (balsam always does).
-- The errors keep the foreign key's SQLSTATE (foreign_key_violation) and say what to do.
ALTER TABLE tasks DROP CONSTRAINT tasks_app_id_fkey;

CREATE FUNCTION balsam_check_task_apps() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    wanted bigint[];
    missing bigint;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        wanted := ARRAY[NEW.app_id];
    ELSE
        SELECT array_agg(DISTINCT n.app_id) INTO wanted FROM new_rows n;
    END IF;
    PERFORM FROM apps WHERE id = ANY (wanted) ORDER BY id FOR KEY SHARE;
    SELECT w INTO missing FROM unnest(wanted) AS w
    WHERE NOT EXISTS (SELECT FROM apps WHERE id = w) LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'no app %: a task names an app that exists (tasks.app_id)', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_app_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_task_apps();
CREATE TRIGGER tasks_app_update AFTER UPDATE OF app_id ON tasks
    FOR EACH ROW WHEN (OLD.app_id IS DISTINCT FROM NEW.app_id)
    EXECUTE FUNCTION balsam_check_task_apps();

CREATE FUNCTION balsam_refuse_used_apps() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    used record;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'apps are removed or renumbered in READ COMMITTED transactions only (to '
            'see every task that names them)' USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        SELECT t.app_id AS id, t.id AS task_id INTO used FROM tasks t LIMIT 1;
    ELSIF TG_LEVEL = 'ROW' THEN
        SELECT t.app_id AS id, t.id AS task_id INTO used FROM tasks t
        WHERE t.app_id = OLD.id LIMIT 1;
    ELSE
        SELECT o.id, t.id AS task_id INTO used FROM old_rows o JOIN tasks t ON t.app_id = o.id
        LIMIT 1;
    END IF;
    IF used.id IS NOT NULL THEN
        RAISE EXCEPTION 'app % is used by task % (and maybe others): remove those tasks first',
            used.id, used.task_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER apps_used_delete AFTER DELETE ON apps
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_refuse_used_apps();
CREATE TRIGGER apps_used_renumber AFTER UPDATE OF id ON apps
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION balsam_refuse_used_apps();
CREATE TRIGGER apps_used_truncate AFTER TRUNCATE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_refuse_used_apps();
