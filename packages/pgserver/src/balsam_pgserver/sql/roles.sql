-- Named queries of balsam-pgserver: project roles and their members.

-- name: project_roles
-- The database's member and viewer roles (see migration 0001_roles.sql).
SELECT kind, rolname FROM pgserver_roles;

-- name: role_info
-- One role of the cluster, or no row.
SELECT rolname, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = %(name)s;

-- name: role_memberships
-- The project roles (kinds) a login role belongs to.
SELECT r.kind
FROM pgserver_roles r
JOIN pg_auth_members m ON m.roleid = to_regrole(r.rolname)
WHERE m.member = to_regrole(%(name)s)
ORDER BY r.kind;

-- name: project_users
-- Who may use the project: superusers (the owner) and members of its roles, with their sessions.
SELECT u.rolname AS name,
       CASE WHEN u.rolsuper THEN 'superuser' ELSE k.kind END AS role,
       (SELECT count(*) FROM pg_stat_activity a
        WHERE a.usename = u.rolname AND a.datname = current_database()
          AND a.pid <> pg_backend_pid()) AS sessions
FROM pg_roles u
LEFT JOIN LATERAL (
    SELECT min(r.kind) AS kind
    FROM pgserver_roles r JOIN pg_auth_members m ON m.roleid = to_regrole(r.rolname)
    WHERE m.member = u.oid
) k ON true
WHERE u.rolcanlogin AND (u.rolsuper OR k.kind IS NOT NULL)
ORDER BY u.rolsuper DESC, u.rolname;

-- name: terminate_sessions
-- End every session of a user who was just dropped (the owner is a superuser and may).
SELECT count(pg_terminate_backend(pid)) AS ended
FROM pg_stat_activity WHERE usename = %(name)s;

