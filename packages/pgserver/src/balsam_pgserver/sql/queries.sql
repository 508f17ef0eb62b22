-- Named queries of balsam-pgserver.

-- name: connections
-- Client sessions of the project database, oldest first.
SELECT pid, usename AS user, client_addr::text AS client, application_name AS app, state,
       backend_start
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
ORDER BY backend_start;
