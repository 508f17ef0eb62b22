-- Bounds on what apps and tasks hold, so that bad input fails at the door, for every client,
-- instead of at run time (or in every reader: a 900-deep data value crashed `ls --json`). The
-- same numbers are in balsam.models (the API refuses first, with a message naming the limit):
--   names (task name, workflow, app name, cpu_affinity): 256 characters;
--   paths (user_workdir): 4096 bytes; other text (args, commands, descriptions): 65536 bytes;
--   data and environ_vars: JSON objects, nested at most 32 levels, at most 1 MiB as text;
--   num_nodes 1-100000, ranks_per_node 1-10000, threads_per_rank 1-10000, threads_per_core
--   1-64, node_packing_count 1-10000, wall_time_minutes 0-525600 (a year; 1 for batch jobs).
-- CHECK constraints are evaluated for every new row version, even when a launcher only moves a
-- task's state: they stay cheap (octet_length reads a toasted value's size without fetching it).
-- JSON is checked by triggers, only when it is written.

ALTER TABLE tasks
    DROP CONSTRAINT tasks_wall_time_minutes_check,
    DROP CONSTRAINT tasks_num_nodes_check,
    DROP CONSTRAINT tasks_ranks_per_node_check,
    DROP CONSTRAINT tasks_threads_per_rank_check,
    DROP CONSTRAINT tasks_threads_per_core_check,
    DROP CONSTRAINT tasks_node_packing_count_check,
    ADD CONSTRAINT tasks_wall_time_minutes_check CHECK (wall_time_minutes BETWEEN 0 AND 525600),
    ADD CONSTRAINT tasks_num_nodes_check CHECK (num_nodes BETWEEN 1 AND 100000),
    ADD CONSTRAINT tasks_ranks_per_node_check CHECK (ranks_per_node BETWEEN 1 AND 10000),
    ADD CONSTRAINT tasks_threads_per_rank_check CHECK (threads_per_rank BETWEEN 1 AND 10000),
    ADD CONSTRAINT tasks_threads_per_core_check CHECK (threads_per_core BETWEEN 1 AND 64),
    ADD CONSTRAINT tasks_node_packing_count_check CHECK (node_packing_count BETWEEN 1 AND 10000),
    ADD CONSTRAINT tasks_name_check CHECK (char_length(name) <= 256),
    ADD CONSTRAINT tasks_workflow_check CHECK (char_length(workflow) <= 256),
    ADD CONSTRAINT tasks_cpu_affinity_check CHECK (char_length(cpu_affinity) <= 256),
    ADD CONSTRAINT tasks_user_workdir_check CHECK (octet_length(user_workdir) <= 4096),
    ADD CONSTRAINT tasks_args_check CHECK (octet_length(args) <= 65536),
    ADD CONSTRAINT tasks_description_check CHECK (octet_length(description) <= 65536),
    ADD CONSTRAINT tasks_input_files_check CHECK (octet_length(input_files) <= 65536);

ALTER TABLE apps
    DROP CONSTRAINT apps_name_check,
    DROP CONSTRAINT apps_executable_check,
    ADD CONSTRAINT apps_name_check CHECK (name <> '' AND char_length(name) <= 256),
    ADD CONSTRAINT apps_executable_check
        CHECK (executable <> '' AND octet_length(executable) <= 65536),
    ADD CONSTRAINT apps_description_check CHECK (octet_length(description) <= 65536),
    ADD CONSTRAINT apps_preprocess_check CHECK (octet_length(preprocess) <= 65536),
    ADD CONSTRAINT apps_postprocess_check CHECK (octet_length(postprocess) <= 65536),
    ADD CONSTRAINT apps_envscript_check CHECK (octet_length(envscript) <= 65536);

ALTER TABLE batch_jobs
    DROP CONSTRAINT batch_jobs_num_nodes_check,
    DROP CONSTRAINT batch_jobs_wall_time_minutes_check,
    ADD CONSTRAINT batch_jobs_num_nodes_check CHECK (num_nodes BETWEEN 1 AND 100000),
    ADD CONSTRAINT batch_jobs_wall_time_minutes_check
        CHECK (wall_time_minutes BETWEEN 1 AND 525600);

ALTER TABLE launchers
    DROP CONSTRAINT launchers_num_nodes_check,
    ADD CONSTRAINT launchers_num_nodes_check CHECK (num_nodes BETWEEN 1 AND 100000);

-- A container 32 levels below the top (the top is level 0): nested more than 32 levels deep.
CREATE FUNCTION balsam_too_deep() RETURNS jsonpath LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT 'strict $.**{32} ? (@.type() == "object" || @.type() == "array")'::jsonpath
$$;

-- What is wrong with a task's data or environ_vars, or NULL.
CREATE FUNCTION balsam_json_problem(value jsonb, field text) RETURNS text LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT CASE
        WHEN jsonb_typeof(value) <> 'object'
            THEN format('%s must be a JSON object, not %s', field, jsonb_typeof(value))
        WHEN jsonb_path_exists(value, balsam_too_deep())
            THEN format('%s is nested more than 32 levels deep', field)
        WHEN octet_length(value::text) > 1048576
            THEN format('%s is larger than 1 MiB (%s bytes as JSON)', field,
                        octet_length(value::text))
    END
$$;

-- New tasks, once per statement: the common case (small objects) is decided by built-in
-- functions alone, and balsam_json_problem only names the problem of the first bad row.
CREATE FUNCTION balsam_check_new_json() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    deep constant jsonpath := balsam_too_deep();
    bad record;
BEGIN
    SELECT n.data, n.environ_vars INTO bad FROM new_rows n
    WHERE jsonb_typeof(n.data) <> 'object' OR jsonb_typeof(n.environ_vars) <> 'object'
       OR jsonb_path_exists(n.data, deep) OR jsonb_path_exists(n.environ_vars, deep)
       OR octet_length(n.data::text) > 1048576 OR octet_length(n.environ_vars::text) > 1048576
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%', coalesce(balsam_json_problem(bad.data, 'data'),
                                      balsam_json_problem(bad.environ_vars, 'environ_vars'))
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- A task's data or environ_vars changed.
CREATE FUNCTION balsam_check_json() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    problem text := coalesce(balsam_json_problem(NEW.data, 'data'),
                             balsam_json_problem(NEW.environ_vars, 'environ_vars'));
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_json_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_check_new_json();
CREATE TRIGGER tasks_json_update BEFORE UPDATE OF data, environ_vars ON tasks
    FOR EACH ROW
    WHEN ((OLD.data, OLD.environ_vars) IS DISTINCT FROM (NEW.data, NEW.environ_vars))
    EXECUTE FUNCTION balsam_check_json();
