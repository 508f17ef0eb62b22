-- When a launcher stops (its --time-limit-minutes, or the end of its batch job less a margin;
-- NULL: no limit known). A launcher claims only tasks whose wall time fits in what it has left;
-- the column lets others see it, so that 'balsam ls' can say which READY tasks no live launcher
-- has the time to run.

ALTER TABLE launchers ADD COLUMN stops_at timestamptz;
