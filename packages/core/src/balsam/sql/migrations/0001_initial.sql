-- Core schema: apps, tasks and their DAG, the state history, batch jobs and launchers.
-- Every state change is checked against task_transitions and recorded in task_events by triggers,
-- so the rules hold for every client, not only for balsam's Python code.

CREATE TABLE task_states (
    state text PRIMARY KEY,
    initial boolean NOT NULL DEFAULT false,
    final boolean NOT NULL DEFAULT false,
    runnable boolean NOT NULL DEFAULT false
);

CREATE TABLE task_transitions (
    from_state text NOT NULL REFERENCES task_states (state) ON DELETE CASCADE,
    to_state text NOT NULL REFERENCES task_states (state) ON DELETE CASCADE,
    PRIMARY KEY (from_state, to_state)
);

CREATE TABLE apps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name <> ''),
    executable text NOT NULL CHECK (executable <> ''),
    description text NOT NULL DEFAULT '',
    preprocess text NOT NULL DEFAULT '',
    postprocess text NOT NULL DEFAULT '',
    envscript text NOT NULL DEFAULT '',
    owner text NOT NULL DEFAULT current_user,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE batch_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text NOT NULL DEFAULT current_user,
    scheduler text NOT NULL,
    scheduler_id text,
    project text NOT NULL DEFAULT '',
    queue text NOT NULL DEFAULT '',
    num_nodes integer NOT NULL CHECK (num_nodes >= 1),
    wall_time_minutes integer NOT NULL CHECK (wall_time_minutes >= 1),
    job_mode text NOT NULL DEFAULT 'mpi' CHECK (job_mode IN ('mpi', 'serial')),
    wf_filter text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'submitted', 'queued', 'running', 'finished', 'failed', 'cancelled')),
    state_message text NOT NULL DEFAULT '',
    script_path text NOT NULL DEFAULT '',
    extra jsonb NOT NULL DEFAULT '{}',
    submitted_at timestamptz,
    started_at timestamptz,
    ended_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_jobs_state ON batch_jobs (state);

CREATE TABLE launchers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_job_id bigint REFERENCES batch_jobs (id) ON DELETE SET NULL,
    owner text NOT NULL DEFAULT current_user,
    hostname text NOT NULL,
    pid integer NOT NULL,
    job_mode text NOT NULL CHECK (job_mode IN ('mpi', 'serial')),
    wf_filter text NOT NULL DEFAULT '',
    num_nodes integer NOT NULL CHECK (num_nodes >= 1),
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    end_reason text NOT NULL DEFAULT ''
);
CREATE INDEX launchers_alive ON launchers (heartbeat_at) WHERE ended_at IS NULL;

CREATE TABLE tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    workflow text NOT NULL DEFAULT '',
    app_id bigint NOT NULL REFERENCES apps (id) ON DELETE RESTRICT,
    args text NOT NULL DEFAULT '',
    data jsonb NOT NULL DEFAULT '{}',
    user_workdir text,
    description text NOT NULL DEFAULT '',
    wall_time_minutes integer NOT NULL DEFAULT 1 CHECK (wall_time_minutes >= 0),
    num_nodes integer NOT NULL DEFAULT 1 CHECK (num_nodes >= 1),
    ranks_per_node integer NOT NULL DEFAULT 1 CHECK (ranks_per_node >= 1),
    threads_per_rank integer NOT NULL DEFAULT 1 CHECK (threads_per_rank >= 1),
    threads_per_core integer NOT NULL DEFAULT 1 CHECK (threads_per_core >= 1),
    cpu_affinity text NOT NULL DEFAULT 'none',
    node_packing_count integer NOT NULL DEFAULT 1 CHECK (node_packing_count >= 1),
    environ_vars jsonb NOT NULL DEFAULT '{}',
    input_files text NOT NULL DEFAULT '',
    post_error_handler boolean NOT NULL DEFAULT false,
    post_timeout_handler boolean NOT NULL DEFAULT false,
    auto_timeout_retry boolean NOT NULL DEFAULT true,
    state text NOT NULL DEFAULT 'CREATED' REFERENCES task_states (state),
    state_message text NOT NULL DEFAULT '',
    owner text NOT NULL DEFAULT current_user,
    launcher_id bigint REFERENCES launchers (id) ON DELETE SET NULL,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz NOT NULL DEFAULT now()
);
-- The claim query scans only unclaimed runnable tasks.
CREATE INDEX tasks_claimable ON tasks (workflow, num_nodes DESC, wall_time_minutes DESC, id)
    WHERE launcher_id IS NULL
      AND state IN ('READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY', 'RUN_DONE',
                    'RUN_ERROR', 'RUN_TIMEOUT', 'POSTPROCESSED');
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_workflow_name ON tasks (workflow, name);
CREATE INDEX tasks_launcher ON tasks (launcher_id) WHERE launcher_id IS NOT NULL;
CREATE INDEX tasks_app ON tasks (app_id);

CREATE TABLE task_parents (
    parent_id bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    child_id bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id),
    CHECK (parent_id <> child_id)
);
CREATE INDEX task_parents_child ON task_parents (child_id);

CREATE TABLE task_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    from_state text,
    to_state text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_user text NOT NULL DEFAULT current_user,
    launcher_id bigint,
    message text NOT NULL DEFAULT ''
);
CREATE INDEX task_events_task ON task_events (task_id, id);
CREATE INDEX task_events_at ON task_events (at);

-- A forbidden transition raises SQLSTATE BA001, which the Python layer maps to InvalidTransition.
CREATE FUNCTION balsam_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM task_states WHERE state = NEW.state AND initial) THEN
            RAISE EXCEPTION 'a task cannot be created in state %', NEW.state USING ERRCODE = 'BA001';
        END IF;
    ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
        IF NOT EXISTS (SELECT 1 FROM task_transitions
                       WHERE from_state = OLD.state AND to_state = NEW.state) THEN
            RAISE EXCEPTION 'task %: % -> % is not an allowed transition', OLD.id, OLD.state, NEW.state
                USING ERRCODE = 'BA001';
        END IF;
        NEW.state_changed_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_check_transition BEFORE INSERT OR UPDATE OF state ON tasks
    FOR EACH ROW EXECUTE FUNCTION balsam_check_transition();

CREATE FUNCTION balsam_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_events (task_id, from_state, to_state, launcher_id, message)
    SELECT n.id, o.state, n.state, n.launcher_id, n.state_message
    FROM new_rows n LEFT JOIN old_rows o ON o.id = n.id
    WHERE o.id IS NULL OR o.state IS DISTINCT FROM n.state;
    RETURN NULL;
END $$;

CREATE FUNCTION balsam_record_insert_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_events (task_id, from_state, to_state, launcher_id, message)
    SELECT n.id, NULL, n.state, n.launcher_id, n.state_message FROM new_rows n;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_events_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_record_event();
CREATE TRIGGER tasks_events_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_record_insert_event();

-- New runnable work wakes idle launchers (LISTEN balsam_tasks); polling remains the fallback.
CREATE FUNCTION balsam_notify_runnable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n JOIN task_states s ON s.state = n.state
               WHERE s.runnable AND n.launcher_id IS NULL) THEN
        PERFORM pg_notify('balsam_tasks', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_notify_runnable();
CREATE TRIGGER tasks_notify_update AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_notify_runnable();

-- DAG: edges that would close a cycle raise BA002 naming the path. Edits are serialised by an
-- advisory lock so two concurrent transactions cannot each add half of a cycle.
CREATE FUNCTION balsam_check_cycle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    path bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('balsam_task_parents'));
    WITH RECURSIVE walk (id, trail) AS (
        SELECT NEW.child_id, ARRAY[NEW.parent_id, NEW.child_id]
        UNION ALL
        SELECT p.child_id, w.trail || p.child_id
        FROM task_parents p JOIN walk w ON p.parent_id = w.id
        WHERE NOT p.child_id = ANY (w.trail[2:])
    )
    SELECT trail INTO path FROM walk WHERE id = NEW.parent_id LIMIT 1;
    IF path IS NOT NULL THEN
        RAISE EXCEPTION 'dependency % -> % would create a cycle: %', NEW.parent_id, NEW.child_id,
            array_to_string(path, ' -> ') USING ERRCODE = 'BA002';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER task_parents_no_cycle BEFORE INSERT ON task_parents
    FOR EACH ROW EXECUTE FUNCTION balsam_check_cycle();

-- When tasks finish, children whose parents have all finished become READY.
CREATE FUNCTION balsam_release_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks c SET state = 'READY', state_message = 'all parents finished'
    WHERE c.state = 'AWAITING_PARENTS'
      AND c.id IN (SELECT p.child_id FROM task_parents p JOIN new_rows n ON n.id = p.parent_id
                   WHERE n.state = 'JOB_FINISHED')
      AND NOT EXISTS (SELECT 1 FROM task_parents p2 JOIN tasks t ON t.id = p2.parent_id
                      WHERE p2.child_id = c.id AND t.state <> 'JOB_FINISHED');
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_release_children AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_release_children();
