-- PostgreSQL 16 and later reserve `reserved_connections` slots (set by balsam at every start)
-- for roles with pg_use_reserved_connections: give them to the member role, so that members keep
-- room beside the administrator's `superuser_reserved_connections`. PostgreSQL 15 has no such
-- setting (see docs/security.md, "The network"); there, and on a server user that may not grant
-- it, this does nothing.
DO $$
DECLARE
    member text := (SELECT rolname FROM pgserver_roles WHERE kind = 'member');
BEGIN
    IF member IS NOT NULL
       AND to_regrole('pg_use_reserved_connections') IS NOT NULL
       AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT pg_use_reserved_connections TO %I', member);
    END IF;
END $$;
