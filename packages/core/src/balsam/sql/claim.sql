-- Claiming, heartbeats and recovery (balsam.claim). Every update a launcher makes to a task
-- checks "launcher_id = %(launcher)s", so a launcher presumed dead cannot touch a task claimed
-- since by another.

-- name: launcher_session
-- Exactly-once rests on claims and results surviving a server crash once acknowledged, even on
-- a server tuned to trade durability for speed; and the launcher hears of new work and kills.
SET synchronous_commit TO on;
LISTEN balsam_tasks;
LISTEN balsam_kill;

-- name: claim_session
-- A launcher's connection that does not listen (its claims).
SET synchronous_commit TO on;

-- name: register_launcher
-- %(trust)s: the users named by the launcher's --trust option (shown to others, see 0045);
-- %(stops_at)s: when it stops, epoch seconds (NULL: no limit known; see 0072).
INSERT INTO launchers (batch_job_id, hostname, pid, job_mode, wf_filter, num_nodes,
                       heartbeat_timeout, trust, stops_at)
VALUES (%(batch_job_id)s, %(hostname)s, %(pid)s, %(job_mode)s, %(wf_filter)s, %(num_nodes)s,
        make_interval(secs => %(heartbeat_timeout)s), %(trust)s::text[],
        to_timestamp(%(stops_at)s::float8))
RETURNING *;

-- name: heartbeat
-- Returns no row once the launcher has ended or been presumed dead.
UPDATE launchers SET heartbeat_at = now()
WHERE id = %(launcher)s AND ended_at IS NULL
RETURNING id;

-- name: end_launcher
UPDATE launchers SET ended_at = now(), end_reason = %(reason)s
WHERE id = %(launcher)s AND ended_at IS NULL
RETURNING id;

-- name: lock_live_launcher
-- Held for the whole claim: a reaper's UPDATE of this row waits until the claim commits.
SELECT id FROM launchers WHERE id = %(launcher)s AND ended_at IS NULL FOR SHARE;

-- name: unended_launchers
-- What balsam.liveness judges a launcher by, for every launcher whose row says it runs: its
-- heartbeat's age, its batch job's state (ended_at: the scheduler confirmed the end), and how
-- long the server has been up (nobody could heartbeat while it was down). Server clock.
SELECT l.id, l.heartbeat_at,
       date_part('epoch', now() - l.heartbeat_at)::float8 AS heartbeat_age,
       date_part('epoch', l.heartbeat_timeout)::float8 AS heartbeat_timeout,
       b.state AS batch_state, b.ended_at IS NOT NULL AS batch_over,
       coalesce(b.state_message, '') AS batch_message,
       date_part('epoch', now() - pg_postmaster_start_time())::float8 AS server_uptime
FROM launchers l
LEFT JOIN batch_jobs b ON b.id = l.batch_job_id
WHERE l.ended_at IS NULL;

-- name: mark_dead_launchers
-- End the launchers balsam.liveness found dead, each with its reason, unless another reaper
-- holds the row or (%(seen)s not NULL: presumed dead for silence) it has heartbeat since.
WITH verdict AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(reasons)s::text[], %(seen)s::timestamptz[])
        AS v (id, reason, seen)
), dead AS (
    SELECT l.id, v.reason
    FROM launchers l JOIN verdict v ON v.id = l.id
    WHERE l.ended_at IS NULL AND (v.seen IS NULL OR l.heartbeat_at = v.seen)
    FOR UPDATE OF l SKIP LOCKED
)
UPDATE launchers l
SET ended_at = now(), end_reason = 'presumed dead: ' || dead.reason
FROM dead WHERE l.id = dead.id
RETURNING l.id, dead.reason;

-- name: recover_claims
-- Give back claims their launcher cannot finish: all a dead launcher's (run after
-- mark_dead_launchers, in the same transaction but a later statement, so that it sees every
-- claim those launchers committed; one statement: a row a launcher moved meanwhile is re-read
-- and still released), or, with %(ids)s, those a live launcher holds but does not know about
-- (their commit was acknowledged but lost, or never acknowledged). A RUNNING task restarts if it
-- may, else times out; its message is "launcher N " followed by its launcher's %(whys)s.
UPDATE tasks t
SET state = CASE WHEN t.state <> 'RUNNING' THEN t.state
                 WHEN t.auto_timeout_retry AND NOT t.post_timeout_handler THEN 'RESTART_READY'
                 ELSE 'RUN_TIMEOUT' END,
    state_message = CASE WHEN t.state = 'RUNNING'
                         THEN format('launcher %%s %%s', t.launcher_id, d.why)
                         ELSE t.state_message END,
    launcher_id = NULL
FROM unnest(%(launchers)s::bigint[], %(whys)s::text[]) AS d (launcher, why)
WHERE t.launcher_id = d.launcher
  AND (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
RETURNING t.id, t.state;

-- name: lock_run_candidates
-- Unclaimed tasks that need nodes, best first for the default policy, locked for this claim.
-- Only tasks the launcher trusts (%(trusted)s: balsam.claim.trusted_users): their owner, the
-- last user who changed them and the last user who changed their app. The same rule as the SQL
-- function balsam_untrusted (0010), written out: a function with a pinned search_path is never
-- inlined, and calling it for each candidate made this query 15-55% slower (48 candidates).
-- The apps a launcher does not trust are read once per query (a hashed subplan): an array of
-- them (`<> ALL (ARRAY(...))`) made the planner leave the claim-order index for a sort of every
-- task. Measured on 48 candidates: about 0.1 ms more than without trust.
SELECT t.*, (SELECT coalesce(array_agg(p.parent_id ORDER BY p.parent_id), '{}')
             FROM task_parents p WHERE p.child_id = t.id) AS parent_ids
FROM tasks t
WHERE t.launcher_id IS NULL
  AND t.owner = ANY(%(trusted)s::text[])
  AND t.changed_by = ANY(%(trusted)s::text[])
  AND t.app_id NOT IN (SELECT a.id FROM apps a WHERE NOT a.changed_by = ANY(%(trusted)s::text[]))
  AND t.state IN ('READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY')
  AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
  AND (%(workflow_part)s::text IS NULL OR strpos(t.workflow, %(workflow_part)s::text) > 0)
  AND t.num_nodes + t.coschedule_num_nodes <= %(max_nodes)s
  AND (NOT %(serial)s OR (t.num_nodes = 1 AND t.ranks_per_node = 1
                          AND t.coschedule_num_nodes = 0))
  AND t.gpus_per_rank * t.ranks_per_node <= %(max_gpus)s
  AND t.wall_time_minutes <= %(max_wall_minutes)s
ORDER BY t.num_nodes DESC, t.wall_time_minutes DESC, t.id
LIMIT %(limit)s
FOR NO KEY UPDATE SKIP LOCKED;

-- name: lock_post_candidates
-- Unclaimed tasks whose run is over and which still need post-processing, oldest first; only
-- those the launcher trusts, as lock_run_candidates.
SELECT t.*, (SELECT coalesce(array_agg(p.parent_id ORDER BY p.parent_id), '{}')
             FROM task_parents p WHERE p.child_id = t.id) AS parent_ids
FROM tasks t
WHERE t.launcher_id IS NULL
  AND t.owner = ANY(%(trusted)s::text[])
  AND t.changed_by = ANY(%(trusted)s::text[])
  AND t.app_id NOT IN (SELECT a.id FROM apps a WHERE NOT a.changed_by = ANY(%(trusted)s::text[]))
  AND t.state IN ('RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT', 'POSTPROCESSED')
  AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
  AND (%(workflow_part)s::text IS NULL OR strpos(t.workflow, %(workflow_part)s::text) > 0)
ORDER BY t.id
LIMIT %(limit)s
FOR NO KEY UPDATE SKIP LOCKED;

-- name: claim_tasks
UPDATE tasks SET launcher_id = %(launcher)s
WHERE id = ANY(%(ids)s::bigint[]) AND launcher_id IS NULL
RETURNING id;

-- name: move_tasks
-- Claim-checked batch transition with one message and one time (epoch seconds, or NULL for the
-- database's clock) per task. A time is kept after the task's previous change (by a microsecond
-- at least, which also tells migration 0006's trigger it was given). Rows already in the target
-- state match too, so a retry after a lost connection is harmless.
UPDATE tasks t
SET state = %(to_state)s, state_message = m.message,
    state_changed_at = CASE WHEN t.state = %(to_state)s OR m.at IS NULL THEN t.state_changed_at
                            ELSE greatest(to_timestamp(m.at),
                                          t.state_changed_at + interval '1 microsecond') END
FROM unnest(%(ids)s::bigint[], %(messages)s::text[], %(ats)s::float8[]) AS m (id, message, at)
WHERE t.id = m.id
  AND t.launcher_id = %(launcher)s
  AND t.state IN (%(from_state)s, %(to_state)s)
RETURNING t.id;

-- name: mark_running
-- Claim-checked start of a run: counts the attempt once, even when retried. Times as move_tasks.
UPDATE tasks t
SET state = 'RUNNING',
    attempts = t.attempts + CASE WHEN t.state = 'RUNNING' THEN 0 ELSE 1 END,
    state_message = m.message,
    state_changed_at = CASE WHEN t.state = 'RUNNING' OR m.at IS NULL THEN t.state_changed_at
                            ELSE greatest(to_timestamp(m.at),
                                          t.state_changed_at + interval '1 microsecond') END
FROM unnest(%(ids)s::bigint[], %(messages)s::text[], %(ats)s::float8[]) AS m (id, message, at)
WHERE t.id = m.id
  AND t.launcher_id = %(launcher)s
  AND t.state IN ('PREPROCESSED', 'RESTART_READY', 'RUNNING')
RETURNING t.id, t.attempts;

-- name: release_tasks
-- Never a RUNNING task: a run leaves through its outcome or the recovery rule (recover_claims).
UPDATE tasks SET launcher_id = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND launcher_id = %(launcher)s AND state <> 'RUNNING'
RETURNING id;

-- name: release_all_tasks
-- A launcher ending gives back everything it holds; a task it never saw end is RUN_TIMEOUT.
UPDATE tasks t
SET state = CASE WHEN t.state = 'RUNNING' THEN 'RUN_TIMEOUT' ELSE t.state END,
    state_message = CASE WHEN t.state = 'RUNNING'
                         THEN format('launcher %%s ended while it ran', t.launcher_id)
                         ELSE t.state_message END,
    launcher_id = NULL
WHERE t.launcher_id = %(launcher)s
RETURNING t.id, t.state;

-- name: owned_tasks
SELECT id, state FROM tasks WHERE launcher_id = %(launcher)s;

-- name: held_states
-- Claim-checked: only the tasks of %(ids)s this launcher still holds.
SELECT id, state, state_message, attempts FROM tasks
WHERE id = ANY(%(ids)s::bigint[]) AND launcher_id = %(launcher)s;

-- name: apps_by_id
-- Read with each claim, in its transaction: the launcher runs the apps as read here (and judges
-- their changed_by again before it runs them).
SELECT * FROM apps WHERE id = ANY(%(ids)s::bigint[]);

-- name: parents_of
-- The parents of each task, for stage-in and BALSAM_PARENT_IDS.
SELECT p.child_id, t.id, t.name, t.workflow, t.user_workdir
FROM task_parents p JOIN tasks t ON t.id = p.parent_id
WHERE p.child_id = ANY(%(ids)s::bigint[])
ORDER BY p.child_id, t.id;

-- name: work_remaining
-- Whether a launcher with these limits may still get work: a task it could claim now, a task it
-- holds, or a task awaiting an ancestor that is still live (runnable, claimed or running). Tasks
-- it does not trust (%(trusted)s, as lock_run_candidates) are not work for it.
WITH RECURSIVE matching AS (
    SELECT t.id, t.state, t.launcher_id, t.num_nodes, t.ranks_per_node, t.wall_time_minutes,
           t.coschedule_num_nodes, t.gpus_per_rank
    FROM tasks t
    WHERE t.state NOT IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED')
      AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
      AND (%(workflow_part)s::text IS NULL OR strpos(t.workflow, %(workflow_part)s::text) > 0)
      AND (t.launcher_id = %(launcher)s
           OR (t.owner = ANY(%(trusted)s::text[])
               AND t.changed_by = ANY(%(trusted)s::text[])
               AND t.app_id NOT IN (SELECT a.id FROM apps a
                                    WHERE NOT a.changed_by = ANY(%(trusted)s::text[]))))
), ancestors (id) AS (
    SELECT p.parent_id FROM task_parents p JOIN matching m ON m.id = p.child_id
    WHERE m.state IN ('CREATED', 'AWAITING_PARENTS')
    UNION
    SELECT p.parent_id FROM task_parents p JOIN ancestors a ON a.id = p.child_id
)
SELECT EXISTS (
           SELECT 1 FROM matching m
           WHERE m.launcher_id = %(launcher)s
              OR (m.launcher_id IS NULL
                  AND m.state IN ('RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT', 'POSTPROCESSED'))
              OR (m.launcher_id IS NULL
                  AND m.state IN ('READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY')
                  AND m.num_nodes + m.coschedule_num_nodes <= %(max_nodes)s
                  AND (NOT %(serial)s OR (m.num_nodes = 1 AND m.ranks_per_node = 1
                                          AND m.coschedule_num_nodes = 0))
                  AND m.gpus_per_rank * m.ranks_per_node <= %(max_gpus)s
                  AND m.wall_time_minutes <= %(max_wall_minutes)s))
    OR EXISTS (
           SELECT 1 FROM ancestors a JOIN tasks t ON t.id = a.id
           WHERE t.state NOT IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED', 'CREATED',
                                 'AWAITING_PARENTS')) AS remaining;

-- name: ended_launchers_with_claims
-- Launchers that have ended yet still hold tasks: none, unless claims were written around the
-- protocol (by hand, or a bug). The reaper gives their claims back too (recover_claims).
SELECT DISTINCT t.launcher_id AS id
FROM tasks t JOIN launchers l ON l.id = t.launcher_id
WHERE l.ended_at IS NOT NULL
ORDER BY 1;

-- name: unclaimed_work
-- Unclaimed runnable tasks grouped by size (co-scheduled nodes count): the work a new batch job
-- would find.
SELECT t.num_nodes + t.coschedule_num_nodes AS num_nodes, t.node_packing_count,
       count(*) AS tasks
FROM tasks t JOIN task_states s ON s.state = t.state
WHERE s.runnable AND t.launcher_id IS NULL
  AND (%(wf_filter)s = '' OR t.workflow = %(wf_filter)s)
GROUP BY 1, t.node_packing_count;

-- name: held_elsewhere
-- The launchers (live by their rows) other than this one holding a task this launcher could
-- take (and trusts) once they are reaped (a RUNNING one is restarted, the others are given back as
-- they are). A --consume-all launcher waits for the suspect ones (judged by unended_launchers).
SELECT l.id
FROM launchers l
WHERE l.ended_at IS NULL AND l.id <> %(launcher)s
  AND EXISTS (
      SELECT 1 FROM tasks t
      WHERE t.launcher_id = l.id
        AND t.state NOT IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED')
        AND t.owner = ANY(%(trusted)s::text[])
        AND t.changed_by = ANY(%(trusted)s::text[])
        AND t.app_id NOT IN (SELECT a.id FROM apps a
                             WHERE NOT a.changed_by = ANY(%(trusted)s::text[]))
        AND (%(workflow)s::text IS NULL OR t.workflow = %(workflow)s::text)
        AND (%(workflow_part)s::text IS NULL OR strpos(t.workflow, %(workflow_part)s::text) > 0)
        AND (t.state NOT IN ('RUNNING', 'READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY')
             OR (t.num_nodes <= %(max_nodes)s
                 AND (NOT %(serial)s OR (t.num_nodes = 1 AND t.ranks_per_node = 1))
                 AND t.wall_time_minutes <= %(max_wall_minutes)s)));
