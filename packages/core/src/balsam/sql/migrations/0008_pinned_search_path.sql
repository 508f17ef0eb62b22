-- Every function of the schema runs with a fixed search_path. Without one, a trigger resolves
-- unqualified names (task_transitions, task_states, pg_roles...) through the search_path of the
-- session that fired it, and a collaborator's temporary table of the same name (pg_temp is
-- searched first unless it is listed) switches a check off: a temporary task_transitions allowing
-- every move, for instance. pg_temp comes last, after the catalog and the schema.
--
-- CREATE OR REPLACE FUNCTION resets a function's settings: every later definition states
-- SET search_path = pg_catalog, public, pg_temp again (a test fails for any function without it).

-- 0001's release trigger, replaced by balsam_release_finished in 0002 and called by nothing.
DROP FUNCTION balsam_release_children();

ALTER FUNCTION balsam_check_transition() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_record_event() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_record_insert_event() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_notify_runnable() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_check_initial() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_check_cycles() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_parents_added() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_release(bigint[], text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_release_finished() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_parents_removed() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_sync_with_parents() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_notify_kill() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION balsam_check_batch_job_state() SET search_path = pg_catalog, public, pg_temp;
