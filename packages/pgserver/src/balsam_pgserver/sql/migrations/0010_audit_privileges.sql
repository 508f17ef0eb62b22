-- The audit trail is written by the database's own triggers only (core migrations 0008-0012):
--   * members lose INSERT on task_events (0001 granted it) and never get to write changes;
--   * trust: members add and withdraw their own rows (row-level security), never update them;
--   * balsam_dag_lock is read only (no member can LOCK it); members and the owner take the
--     DAG's lock through balsam_lock_dag(), which viewers may not execute;
--   * task_events no longer needs 0001's forged-user check: its triggers write session_user
--     themselves (running as the schema's owner, for whom that check would refuse them).
-- pgserver_refuse_forged_user pins its search_path like every function of the schema: a
-- member's temporary pg_roles claiming they are a superuser no longer switches the check off.

ALTER FUNCTION pgserver_refuse_forged_user() SET search_path = pg_catalog, public, pg_temp;

DROP TRIGGER task_events_db_user_insert ON task_events;
DROP TRIGGER task_events_db_user_update ON task_events;

DO $$
DECLARE
    member text := (SELECT rolname FROM pgserver_roles WHERE kind = 'member');
BEGIN
    IF member IS NULL THEN
        RETURN;  -- no roles on this server (see 0001)
    END IF;
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON task_events, changes, '
                   'balsam_dag_lock FROM %I', member);
    EXECUTE format('REVOKE UPDATE, TRUNCATE ON trust FROM %I', member);
    EXECUTE format('GRANT INSERT, DELETE ON trust TO %I', member);
    EXECUTE format('GRANT EXECUTE ON FUNCTION balsam_lock_dag() TO %I', member);
END $$;
