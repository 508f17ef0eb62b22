-- Project roles: a member role (read and write apps, tasks, dependencies, batch jobs, launchers;
-- no DDL, no role management) and a viewer role (read only). Collaborators' login roles are
-- granted one of them by `balsam server --add-user`.
--
-- Roles are global to a PostgreSQL cluster while grants belong to one database, so the roles are
-- named after the database (`balsam_member` for the embedded cluster's `balsam` database): several
-- projects sharing one external server each get their own pair. The names are recorded in
-- pgserver_roles, so a database cloned from a template keeps using the roles its grants name.
-- A server user without CREATEROLE (some external servers) gets no roles: the owner then manages
-- access on that server by hand, and `--add-user` says so.

CREATE TABLE pgserver_roles (
    kind text PRIMARY KEY CHECK (kind IN ('member', 'viewer')),
    rolname text NOT NULL UNIQUE
);

DO $$
DECLARE
    kind text;
    role text;
    existing record;
BEGIN
    IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'balsam: % may not create roles; member and viewer roles not created',
            current_user;
        RETURN;
    END IF;
    FOREACH kind IN ARRAY ARRAY['member', 'viewer'] LOOP
        role := left(current_database(), 55) || '_' || kind;
        SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb INTO existing
        FROM pg_roles WHERE rolname = role;
        IF NOT FOUND THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role);
        ELSIF existing.rolcanlogin OR existing.rolsuper OR existing.rolcreaterole
                OR existing.rolcreatedb THEN
            RAISE EXCEPTION 'role % already exists with privileges a balsam % role must not have',
                role, kind;
        END IF;
        INSERT INTO pgserver_roles (kind, rolname) VALUES (kind, role);
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), role);
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', role);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', role);
        EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', role);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO %I',
                       role);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO %I',
                       role);
        IF kind = 'member' THEN
            -- Members write every table (views stay read only) except the state machine
            -- (task_states, task_transitions), the schema's bookkeeping (balsam_migrations,
            -- pgserver_roles) and the audit trail, which only grows (triggers write it).
            EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), role);
            EXECUTE (SELECT format('GRANT INSERT, UPDATE, DELETE ON %s TO %I',
                                   string_agg(c.oid::regclass::text, ', '), role)
                     FROM pg_class c
                     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                       AND c.relname NOT IN ('task_states', 'task_transitions', 'task_events',
                                             'balsam_migrations', 'pgserver_roles'));
            EXECUTE format('GRANT INSERT ON task_events TO %I', role);
            EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO %I', role);
            -- Tables of later migrations (plugins' own tables) are read-write for members; a
            -- migration adding a table or view they must not write revokes it from the role
            -- named in pgserver_roles.
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public '
                           'GRANT INSERT, UPDATE, DELETE ON TABLES TO %I', role);
            EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public '
                           'GRANT USAGE ON SEQUENCES TO %I', role);
        END IF;
    END LOOP;
    -- Least privilege: nobody else may connect, nobody but the owner creates objects (PostgreSQL
    -- 15 already revokes CREATE on public from PUBLIC; older servers did not).
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
END $$;

-- Rows record who created them (owner, db_user default to current_user). A collaborator cannot
-- forge another user's name on insert or change it later; superusers (the project owner) can,
-- for imports. Inserts are checked once per statement (a row trigger would slow bulk COPY down);
-- the update triggers fire only when a statement sets the column.
CREATE FUNCTION pgserver_refuse_forged_user() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    claimed text;
    forged bigint;
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NEW;
    END IF;
    IF TG_LEVEL = 'ROW' THEN
        claimed := to_jsonb(NEW) ->> TG_ARGV[0];
    ELSE
        EXECUTE format('SELECT %I FROM new_rows WHERE %I IS DISTINCT FROM current_user LIMIT 1',
                       TG_ARGV[0], TG_ARGV[0]) INTO claimed;
        GET DIAGNOSTICS forged = ROW_COUNT;
        IF forged = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'permission denied: %.% records who wrote the row; it must be % (not %)',
        TG_TABLE_NAME, TG_ARGV[0], current_user, claimed
        USING ERRCODE = 'insufficient_privilege';
END $$;

DO $$
DECLARE
    target record;
BEGIN
    FOR target IN SELECT * FROM (VALUES ('apps', 'owner'), ('tasks', 'owner'),
                                        ('batch_jobs', 'owner'), ('launchers', 'owner'),
                                        ('task_events', 'db_user')) AS t (tab, col) LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgserver_refuse_forged_user(%L)',
                       target.tab || '_' || target.col || '_insert', target.tab, target.col);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OF %I ON %I FOR EACH ROW '
                       'WHEN (NEW.%I IS DISTINCT FROM OLD.%I) '
                       'EXECUTE FUNCTION pgserver_refuse_forged_user(%L)',
                       target.tab || '_' || target.col || '_update', target.col, target.tab,
                       target.col, target.col, target.col);
    END LOOP;
END $$;
