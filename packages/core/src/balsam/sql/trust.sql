-- Named queries of trust (migration 0010_trust.sql): whose tasks a user's launchers run.
-- Row-level security keeps writes to the session user's own rows.

-- name: session_user
SELECT session_user AS name;

-- name: login_roles
-- Which of the given names are users of this server (login roles).
SELECT rolname FROM pg_roles WHERE rolname = ANY(%(names)s::text[]) AND rolcanlogin;

-- name: add_trust
-- The session user trusts these users; returns those not trusted before.
INSERT INTO trust (trustee) SELECT unnest(%(users)s::text[])
ON CONFLICT DO NOTHING
RETURNING trustee;

-- name: remove_trust
DELETE FROM trust WHERE truster = session_user AND trustee = ANY(%(users)s::text[])
RETURNING trustee;

-- name: list_trust
SELECT truster, trustee, granted_at FROM trust ORDER BY truster, trustee;

-- name: trusted_by_session_user
SELECT session_user AS me,
       coalesce((SELECT array_agg(trustee ORDER BY trustee) FROM trust
                 WHERE truster = session_user), '{}') AS trustees;
