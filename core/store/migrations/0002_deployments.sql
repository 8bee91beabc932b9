-- Deployments, their versions, runs and the audit log.
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,         -- the URL name; a deleted deployment frees it
    project_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    environment TEXT NOT NULL,         -- staging | production
    access TEXT NOT NULL,              -- public | instance | project
    pipeline TEXT NOT NULL,            -- JSON: source, transforms, sinks, label column
    schedule TEXT NOT NULL,            -- JSON: cron, timezone, paused (empty until scheduled)
    report TEXT NOT NULL,              -- JSON: report settings
    current_version_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE deployment_versions (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    main_model_id TEXT NOT NULL,
    challenger_model_id TEXT,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (deployment_id, number)
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    deployment_name TEXT NOT NULL,     -- kept so a run stays readable after a delete
    version_id TEXT NOT NULL,          -- the deployment version it was queued for
    trigger TEXT NOT NULL,             -- manual | schedule | api-batch | validation
    status TEXT NOT NULL,              -- queued | running | succeeded | failed | cancelled
    source_override TEXT,              -- JSON source block replacing the pipeline's, or NULL
    pipeline TEXT NOT NULL,            -- JSON: the pipeline as it was when queued
    progress DOUBLE NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    lease_owner TEXT,
    lease_expires_at TIMESTAMP,
    attempt INTEGER NOT NULL DEFAULT 0,
    rows_in BIGINT,
    rows_out BIGINT,
    summary TEXT NOT NULL DEFAULT '{}', -- JSON: metrics, quality, class balance, timings
    queued_by TEXT NOT NULL,
    queued_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    purged_at TIMESTAMP
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    logged_at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,              -- deploy | promote | rollback | delete | purge | pipeline
    deployment_id TEXT,
    deployment_name TEXT NOT NULL,
    before TEXT,                       -- JSON
    after TEXT,                        -- JSON
    reason TEXT NOT NULL DEFAULT ''
);
