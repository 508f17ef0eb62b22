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
-- Who may use the project: superusers (balsam_admin, or an external server's administrator) and
-- members of its roles, with their sessions.
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
-- End every session of a user who was just dropped (run as balsam_admin).
SELECT count(pg_terminate_backend(pid)) AS ended
FROM pg_stat_activity WHERE usename = %(name)s;


-- name: whoami
-- The connected role, and whether it is a superuser.
SELECT current_user AS name, rolsuper FROM pg_roles WHERE rolname = current_user;

-- name: split_admin
-- Turn a project made before the admin split, whose owner was the cluster's bootstrap
-- superuser, into the split: that role, with everything it owns, becomes {admin} (no password:
-- peer over the socket only) and the owner gets a new everyday role, a plain member keeping the
-- owner's password (a SCRAM verifier does not depend on the role's name). A role cannot be
-- renamed by its own session, hence the temporary session user. Run as the owner, in one
-- transaction.
CREATE ROLE balsam_split_tmp SUPERUSER;
SET SESSION AUTHORIZATION balsam_split_tmp;
ALTER ROLE {owner} RENAME TO {admin};
ALTER ROLE {admin} PASSWORD NULL;
CREATE ROLE {owner} LOGIN PASSWORD {verifier} IN ROLE {member};
RESET SESSION AUTHORIZATION;
DROP ROLE balsam_split_tmp;

-- name: own_verifier
SELECT rolpassword FROM pg_authid WHERE rolname = current_user;

-- name: end_other_sessions
-- After the split: the owner's other sessions still run as the renamed role; end them, so that
-- they reconnect (launchers do) as the owner's everyday role.
SELECT count(pg_terminate_backend(pid)) AS ended
FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid();
