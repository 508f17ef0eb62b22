-- Batch jobs: the status sync reads launchers by batch job, and an ended batch job keeps its
-- outcome whoever writes to the table (SQLSTATE BA001, like task transitions).

CREATE INDEX launchers_batch_job ON launchers (batch_job_id) WHERE batch_job_id IS NOT NULL;

CREATE FUNCTION balsam_check_batch_job_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state IN ('finished', 'failed', 'cancelled') AND NEW.state IS DISTINCT FROM OLD.state THEN
        RAISE EXCEPTION 'batch job %: % -> % is not allowed (it has ended)', OLD.id, OLD.state,
            NEW.state USING ERRCODE = 'BA001';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER batch_jobs_check_state BEFORE UPDATE OF state ON batch_jobs
    FOR EACH ROW EXECUTE FUNCTION balsam_check_batch_job_state();
