-- Schedules: one row per cron slot a worker has decided (queued a run for, or skipped).
-- The primary key makes each slot of a deployment decided exactly once, however many workers
-- compute it. The schedule itself (cron, timezone, paused, policies) lives in
-- deployments.schedule (JSON), so promotion copies it with the rest of the deployment.
CREATE TABLE schedule_slots (
    deployment_id TEXT NOT NULL,
    slot_at TIMESTAMP NOT NULL,        -- the cron slot, naive UTC
    deployment_name TEXT NOT NULL,
    outcome TEXT NOT NULL,             -- queued | skipped
    run_id TEXT,                       -- the run queued for the slot (NULL when skipped)
    note TEXT NOT NULL DEFAULT '',     -- why skipped, or catch-up details
    decided_at TIMESTAMP NOT NULL,
    PRIMARY KEY (deployment_id, slot_at)
);
