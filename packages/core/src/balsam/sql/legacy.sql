-- Named queries of the legacy models (balsam.core.models): the query subset of legacy Balsam's
-- BalsamJob and ApplicationDefinition. {where}, {order} and {columns} are composed with
-- psycopg.sql from the models' whitelists of columns (balsam.core.lookups); values are
-- parameters. A NULL limit means all rows.

-- name: legacy_job_rows
SELECT t.*, a.name AS app_name
FROM tasks t JOIN apps a ON a.id = t.app_id
WHERE {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s;

-- name: legacy_job_values
SELECT {columns}
FROM tasks t JOIN apps a ON a.id = t.app_id
WHERE {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s;

-- name: legacy_job_count
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks t JOIN apps a ON a.id = t.app_id
    WHERE {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s
) s;

-- name: legacy_app_rows
SELECT a.* FROM apps a
WHERE {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s;

-- name: legacy_app_values
SELECT {columns} FROM apps a
WHERE {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s;

-- name: legacy_app_count
SELECT count(*) AS n FROM (
    SELECT 1 FROM apps a
    WHERE {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s
) s;
