-- Trust: whose tasks a user's launchers run. A launcher of user U runs a task only if its owner,
-- the last user who changed it and the last user who changed its app are all trusted by U:
-- U, balsam_admin, the users U trusts here, and those named by the launcher's --trust option
-- (balsam.claim.trusted_users). Nobody else is trusted by default.
--
-- Row-level security: everyone reads every row; a user adds and removes only their own
-- (truster = session_user). Each grant and withdrawal is recorded in changes (entity 'trust',
-- field: the truster, new_value or old_value: the trustee).

CREATE TABLE trust (
    truster text NOT NULL DEFAULT session_user,
    trustee text NOT NULL
        CHECK (trustee ~ '^[a-z_][a-z0-9_]{0,62}$' AND left(trustee, 3) <> 'pg_'),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (truster, trustee),
    CHECK (trustee <> truster)
);

ALTER TABLE trust ENABLE ROW LEVEL SECURITY;
CREATE POLICY trust_read ON trust FOR SELECT USING (true);
CREATE POLICY trust_grant ON trust FOR INSERT
    WITH CHECK (truster = session_user AND granted_at = now());
CREATE POLICY trust_withdraw ON trust FOR DELETE USING (truster = session_user);

CREATE FUNCTION balsam_record_trust() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO changes (entity, field, new_value, changed_by, changed_at)
        VALUES ('trust', NEW.truster, NEW.trustee, session_user, clock_timestamp());
    ELSE
        INSERT INTO changes (entity, field, old_value, changed_by, changed_at)
        VALUES ('trust', OLD.truster, OLD.trustee, session_user, clock_timestamp());
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION balsam_record_trust() FROM PUBLIC;

CREATE TRIGGER trust_record AFTER INSERT OR DELETE ON trust
    FOR EACH ROW EXECUTE FUNCTION balsam_record_trust();

-- Why a launcher trusting the users in `trusted` must not run a task, or NULL if it may: for the
-- launcher's claim queries, e.g. "AND balsam_untrusted(%(trusted)s, t.owner, t.changed_by,
-- t.app_id) IS NULL". Scalar arguments, not the row: a whole-row argument would detoast every
-- candidate's data.
CREATE FUNCTION balsam_untrusted(trusted text[], task_owner text, task_changed_by text,
                                 task_app_id bigint)
    RETURNS text LANGUAGE sql STABLE
    SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT CASE
        WHEN trusted IS NULL THEN 'nobody is trusted'
        WHEN NOT task_owner = ANY (trusted) THEN format('owned by %s', task_owner)
        WHEN NOT task_changed_by = ANY (trusted) THEN format('changed by %s', task_changed_by)
        ELSE (SELECT format('its app %s was changed by %s', a.name, a.changed_by) FROM apps a
              WHERE a.id = task_app_id AND NOT a.changed_by = ANY (trusted))
    END
$$;
