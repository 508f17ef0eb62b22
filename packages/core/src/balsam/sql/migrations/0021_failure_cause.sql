-- The cause of a failure, as its message says it, in one place for every reader (failures by
-- cause, the info column of 'balsam ls', 'balsam retry --cause'): the launcher writes
-- "exit 3: line | line | last line" (the last lines of the output), so the cause is
-- "exit 3: last line"; a duration in the head ("stopped after 12.5s") is dropped so that equal
-- causes group together; at most 300 characters.
CREATE FUNCTION balsam_failure_cause(message text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, public, pg_temp AS $$
SELECT left(CASE WHEN p.detail <> ''
                 THEN p.head || ': ' || btrim(regexp_replace(p.detail, '^.*( \| |\n)', ''))
                 WHEN p.head <> '' THEN btrim(regexp_replace(p.head, '^.*\n', ''))
                 ELSE '(no message)' END, 300)
FROM (SELECT regexp_replace(split_part(m, ': ', 1), ' after [0-9.]+s$', '') AS head,
             CASE WHEN strpos(m, ': ') > 0 THEN substr(m, strpos(m, ': ') + 2) ELSE '' END
                 AS detail
      FROM (SELECT btrim(coalesce(message, '')) AS m) AS msg) AS p
$$;
