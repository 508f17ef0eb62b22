-- What a task asks of its nodes beyond cores, as legacy Balsam's BalsamJob did:
--   * gpus_per_rank: devices each rank gets to itself (0-1024; 0: none, and on a launcher with
--     GPUs it sees none); the launcher never gives one device to two tasks;
--   * mpi_flags: extra arguments for the MPI launcher, before the executable (as args, they split
--     like a shell command line; at most 65536 bytes);
--   * coschedule_num_nodes: idle nodes reserved beside the task's num_nodes in mpi mode (0-100000),
--     named to the task in BALSAM_COSCHEDULED_NODES (a database or a server of its own).
-- mpi_flags change what a launcher executes (an MPI launcher's options can run anything): like
-- args they stamp changed_by/changed_at and are recorded in changes, so that the trust a launcher
-- places in a task's last writer covers them (0050's triggers, restated with mpi_flags;
-- conditions field by field, as 0050's).

ALTER TABLE tasks
    ADD COLUMN gpus_per_rank integer NOT NULL DEFAULT 0
        CONSTRAINT tasks_gpus_per_rank_check CHECK (gpus_per_rank BETWEEN 0 AND 1024),
    ADD COLUMN mpi_flags text NOT NULL DEFAULT ''
        CONSTRAINT tasks_mpi_flags_check CHECK (octet_length(mpi_flags) <= 65536),
    ADD COLUMN coschedule_num_nodes integer NOT NULL DEFAULT 0
        CONSTRAINT tasks_coschedule_num_nodes_check
        CHECK (coschedule_num_nodes BETWEEN 0 AND 100000);

DROP TRIGGER tasks_stamp_change ON tasks;
DROP TRIGGER tasks_stamp_forged ON tasks;
DROP TRIGGER tasks_record_change ON tasks;
DROP TRIGGER tasks_record_deletion ON tasks;

CREATE TRIGGER tasks_stamp_change
    BEFORE UPDATE OF args, environ_vars, user_workdir, app_id, input_files, mpi_flags, changed_by,
        changed_at ON tasks
    FOR EACH ROW
    WHEN (OLD.args IS DISTINCT FROM NEW.args
          OR OLD.environ_vars IS DISTINCT FROM NEW.environ_vars
          OR OLD.user_workdir IS DISTINCT FROM NEW.user_workdir
          OR OLD.app_id IS DISTINCT FROM NEW.app_id
          OR OLD.input_files IS DISTINCT FROM NEW.input_files
          OR OLD.mpi_flags IS DISTINCT FROM NEW.mpi_flags)
    EXECUTE FUNCTION balsam_stamp_change();
CREATE TRIGGER tasks_stamp_forged BEFORE UPDATE OF changed_by, changed_at ON tasks
    FOR EACH ROW
    WHEN (NOT (OLD.args IS DISTINCT FROM NEW.args
               OR OLD.environ_vars IS DISTINCT FROM NEW.environ_vars
               OR OLD.user_workdir IS DISTINCT FROM NEW.user_workdir
               OR OLD.app_id IS DISTINCT FROM NEW.app_id
               OR OLD.input_files IS DISTINCT FROM NEW.input_files
               OR OLD.mpi_flags IS DISTINCT FROM NEW.mpi_flags)
          AND (OLD.changed_by IS DISTINCT FROM NEW.changed_by
               OR OLD.changed_at IS DISTINCT FROM NEW.changed_at))
    EXECUTE FUNCTION balsam_refuse_stamp();
CREATE TRIGGER tasks_record_change
    AFTER UPDATE OF args, environ_vars, user_workdir, app_id, input_files, mpi_flags ON tasks
    FOR EACH ROW
    WHEN (OLD.args IS DISTINCT FROM NEW.args
          OR OLD.environ_vars IS DISTINCT FROM NEW.environ_vars
          OR OLD.user_workdir IS DISTINCT FROM NEW.user_workdir
          OR OLD.app_id IS DISTINCT FROM NEW.app_id
          OR OLD.input_files IS DISTINCT FROM NEW.input_files
          OR OLD.mpi_flags IS DISTINCT FROM NEW.mpi_flags)
    EXECUTE FUNCTION balsam_record_change('task', 'args', 'environ_vars', 'user_workdir',
                                          'app_id', 'input_files', 'mpi_flags');
CREATE TRIGGER tasks_record_deletion AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_record_deletion(
        'task', 'name', 'workflow', 'state', 'owner', 'app_id', 'args', 'environ_vars',
        'user_workdir', 'input_files', 'mpi_flags', 'changed_by', 'changed_at');
