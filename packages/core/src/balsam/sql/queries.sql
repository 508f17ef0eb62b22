-- Named queries of balsam-core. Format: "-- name: NAME" then an optional "-- description" line.

-- name: upsert_state
-- Sync one row of task_states from balsam.states.
INSERT INTO task_states (state, initial, final, runnable)
VALUES (%(state)s, %(initial)s, %(final)s, %(runnable)s)
ON CONFLICT (state) DO UPDATE
SET initial = EXCLUDED.initial, final = EXCLUDED.final, runnable = EXCLUDED.runnable;

-- name: delete_transitions
DELETE FROM task_transitions;

-- name: insert_transitions
-- Insert the allowed transitions given as two parallel arrays.
INSERT INTO task_transitions (from_state, to_state)
SELECT * FROM unnest(%(from_states)s::text[], %(to_states)s::text[]);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS balsam_migrations (
    package text NOT NULL,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (package, name)
);

-- name: applied_migrations
SELECT name FROM balsam_migrations WHERE package = %(package)s;

-- name: record_migration
INSERT INTO balsam_migrations (package, name) VALUES (%(package)s, %(name)s);
