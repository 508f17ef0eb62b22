-- Running failed work again (balsam.triage).

-- name: retryable_tasks
-- Unclaimed tasks in the given error states, among the given ids (NULL: all), whose cause (that
-- of their last run error or timeout, else their own message) contains the given text.
SELECT t.id
FROM tasks t
WHERE t.state = ANY(%(states)s::text[]) AND t.launcher_id IS NULL
  AND (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
  AND (%(cause)s::text IS NULL
       OR strpos(lower(balsam_failure_cause(coalesce(
              (SELECT e.message FROM task_events e
               WHERE e.task_id = t.id AND e.to_state IN ('RUN_ERROR', 'RUN_TIMEOUT')
               ORDER BY e.id DESC LIMIT 1),
              t.state_message))), lower(%(cause)s::text)) > 0)
ORDER BY t.id;

-- name: retry_tasks
-- Back to READY through the state machine (FAILED, RUN_ERROR and RUN_TIMEOUT may go there),
-- unless a launcher holds the task meanwhile.
UPDATE tasks SET state = %(state)s, state_message = %(message)s
WHERE id = ANY(%(ids)s::bigint[]) AND launcher_id IS NULL
  AND state IN ('FAILED', 'RUN_ERROR', 'RUN_TIMEOUT')
RETURNING id;
