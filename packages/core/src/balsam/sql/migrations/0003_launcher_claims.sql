-- Claiming and recovery: each launcher declares how long it may go without a heartbeat before
-- others presume it dead, and the claim queries get indexes in the order they read.

ALTER TABLE launchers
    ADD COLUMN heartbeat_timeout interval NOT NULL DEFAULT interval '60 seconds'
        CHECK (heartbeat_timeout > interval '0');

-- Tasks that need nodes, best first for the default policy (largest, then longest) when no
-- workflow filter narrows the scan (tasks_claimable serves the filtered case).
CREATE INDEX tasks_claim_order ON tasks (num_nodes DESC, wall_time_minutes DESC, id)
    WHERE launcher_id IS NULL
      AND state IN ('READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY');

-- Tasks whose run is over but whose post-processing nobody holds (their launcher stopped).
CREATE INDEX tasks_post_claimable ON tasks (id)
    WHERE launcher_id IS NULL
      AND state IN ('RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT', 'POSTPROCESSED');
