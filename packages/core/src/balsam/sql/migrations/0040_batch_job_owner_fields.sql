-- What a batch job's row tells its owner's tools to act on (the scheduler id that `balsam queue
-- --kill` cancels, the script it submitted) is changed by that owner alone: a member rewriting
-- another user's scheduler_id would otherwise aim the owner's kill at any process of the owner.
-- The tools also check the id against the owner's private record of what they submitted.

CREATE FUNCTION balsam_batch_job_owner_fields() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF session_user::text IS DISTINCT FROM OLD.owner THEN
        RAISE EXCEPTION 'only % may change the scheduler id or script of batch job % (% is not its owner)',
            OLD.owner, OLD.id, session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER batch_jobs_owner_fields BEFORE UPDATE OF scheduler_id, script_path ON batch_jobs
    FOR EACH ROW
    WHEN (NEW.scheduler_id IS DISTINCT FROM OLD.scheduler_id
          OR NEW.script_path IS DISTINCT FROM OLD.script_path)
    EXECUTE FUNCTION balsam_batch_job_owner_fields();
