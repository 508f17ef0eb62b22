-- The audit triggers of 0009 again, their conditions written field by field: PostgreSQL stores a
-- row comparison ((a, b) IS DISTINCT FROM (c, d)) as nested ORs, which a schema dump prints as
-- nested parentheses that read back as one flat OR, so docs/schema.sql would not build the same
-- catalog. Same names (BEFORE triggers fire in name order), same events, same meaning.

DROP TRIGGER apps_stamp_change ON apps;
DROP TRIGGER apps_stamp_forged ON apps;
DROP TRIGGER apps_record_change ON apps;
DROP TRIGGER tasks_stamp_change ON tasks;
DROP TRIGGER tasks_stamp_forged ON tasks;
DROP TRIGGER tasks_record_change ON tasks;

CREATE TRIGGER apps_stamp_change
    BEFORE UPDATE OF executable, preprocess, postprocess, envscript, changed_by, changed_at ON apps
    FOR EACH ROW
    WHEN (OLD.executable IS DISTINCT FROM NEW.executable
          OR OLD.preprocess IS DISTINCT FROM NEW.preprocess
          OR OLD.postprocess IS DISTINCT FROM NEW.postprocess
          OR OLD.envscript IS DISTINCT FROM NEW.envscript)
    EXECUTE FUNCTION balsam_stamp_change();
CREATE TRIGGER apps_stamp_forged BEFORE UPDATE OF changed_by, changed_at ON apps
    FOR EACH ROW
    WHEN (NOT (OLD.executable IS DISTINCT FROM NEW.executable
               OR OLD.preprocess IS DISTINCT FROM NEW.preprocess
               OR OLD.postprocess IS DISTINCT FROM NEW.postprocess
               OR OLD.envscript IS DISTINCT FROM NEW.envscript)
          AND (OLD.changed_by IS DISTINCT FROM NEW.changed_by
               OR OLD.changed_at IS DISTINCT FROM NEW.changed_at))
    EXECUTE FUNCTION balsam_refuse_stamp();
CREATE TRIGGER apps_record_change
    AFTER UPDATE OF executable, preprocess, postprocess, envscript ON apps
    FOR EACH ROW
    WHEN (OLD.executable IS DISTINCT FROM NEW.executable
          OR OLD.preprocess IS DISTINCT FROM NEW.preprocess
          OR OLD.postprocess IS DISTINCT FROM NEW.postprocess
          OR OLD.envscript IS DISTINCT FROM NEW.envscript)
    EXECUTE FUNCTION balsam_record_change('app', 'executable', 'preprocess', 'postprocess',
                                          'envscript');

CREATE TRIGGER tasks_stamp_change
    BEFORE UPDATE OF args, environ_vars, user_workdir, app_id, input_files, changed_by, changed_at
    ON tasks
    FOR EACH ROW
    WHEN (OLD.args IS DISTINCT FROM NEW.args
          OR OLD.environ_vars IS DISTINCT FROM NEW.environ_vars
          OR OLD.user_workdir IS DISTINCT FROM NEW.user_workdir
          OR OLD.app_id IS DISTINCT FROM NEW.app_id
          OR OLD.input_files IS DISTINCT FROM NEW.input_files)
    EXECUTE FUNCTION balsam_stamp_change();
CREATE TRIGGER tasks_stamp_forged BEFORE UPDATE OF changed_by, changed_at ON tasks
    FOR EACH ROW
    WHEN (NOT (OLD.args IS DISTINCT FROM NEW.args
               OR OLD.environ_vars IS DISTINCT FROM NEW.environ_vars
               OR OLD.user_workdir IS DISTINCT FROM NEW.user_workdir
               OR OLD.app_id IS DISTINCT FROM NEW.app_id
               OR OLD.input_files IS DISTINCT FROM NEW.input_files)
          AND (OLD.changed_by IS DISTINCT FROM NEW.changed_by
               OR OLD.changed_at IS DISTINCT FROM NEW.changed_at))
    EXECUTE FUNCTION balsam_refuse_stamp();
CREATE TRIGGER tasks_record_change
    AFTER UPDATE OF args, environ_vars, user_workdir, app_id, input_files ON tasks
    FOR EACH ROW
    WHEN (OLD.args IS DISTINCT FROM NEW.args
          OR OLD.environ_vars IS DISTINCT FROM NEW.environ_vars
          OR OLD.user_workdir IS DISTINCT FROM NEW.user_workdir
          OR OLD.app_id IS DISTINCT FROM NEW.app_id
          OR OLD.input_files IS DISTINCT FROM NEW.input_files)
    EXECUTE FUNCTION balsam_record_change('task', 'args', 'environ_vars', 'user_workdir',
                                          'app_id', 'input_files');
