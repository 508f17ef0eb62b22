-- Data staging, as legacy Balsam had it: stage_in_url is fetched into a task's working directory
-- before its preprocess step (READY -> STAGED_IN), and the files of its working directory that
-- match stage_out_files (glob patterns, space separated) are sent to stage_out_url after its
-- postprocess step (POSTPROCESSED -> JOB_FINISHED). A launcher carries out the transfers as its
-- own user, so these fields are part of what it would execute: changing them stamps changed_by
-- and records a row in changes, like args (0009; separate triggers, named to fire right after
-- tasks_stamp_change and before tasks_stamp_forged; conditions field by field, as 0050's).
-- URLs are at most 4096 bytes (a path).

ALTER TABLE tasks
    ADD COLUMN stage_in_url text NOT NULL DEFAULT '',
    ADD COLUMN stage_out_url text NOT NULL DEFAULT '',
    ADD COLUMN stage_out_files text NOT NULL DEFAULT '',
    ADD CONSTRAINT tasks_stage_in_url_check CHECK (octet_length(stage_in_url) <= 4096),
    ADD CONSTRAINT tasks_stage_out_url_check CHECK (octet_length(stage_out_url) <= 4096),
    ADD CONSTRAINT tasks_stage_out_files_check CHECK (octet_length(stage_out_files) <= 65536);

CREATE TRIGGER tasks_stamp_change_staging
    BEFORE UPDATE OF stage_in_url, stage_out_url, stage_out_files ON tasks
    FOR EACH ROW
    WHEN (OLD.stage_in_url IS DISTINCT FROM NEW.stage_in_url
          OR OLD.stage_out_url IS DISTINCT FROM NEW.stage_out_url
          OR OLD.stage_out_files IS DISTINCT FROM NEW.stage_out_files)
    EXECUTE FUNCTION balsam_stamp_change();

CREATE TRIGGER tasks_record_change_staging
    AFTER UPDATE OF stage_in_url, stage_out_url, stage_out_files ON tasks
    FOR EACH ROW
    WHEN (OLD.stage_in_url IS DISTINCT FROM NEW.stage_in_url
          OR OLD.stage_out_url IS DISTINCT FROM NEW.stage_out_url
          OR OLD.stage_out_files IS DISTINCT FROM NEW.stage_out_files)
    EXECUTE FUNCTION balsam_record_change('task', 'stage_in_url', 'stage_out_url',
                                          'stage_out_files');
