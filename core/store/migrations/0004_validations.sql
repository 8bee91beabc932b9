-- Validations: a deployment version scored on a labelled dataset (a run of trigger
-- "validation"), with the report built from that run's results; and the promotion gate's
-- per-deployment thresholds.
CREATE TABLE validations (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    deployment_name TEXT NOT NULL,     -- kept so a report stays readable after a delete
    version_id TEXT NOT NULL,          -- the deployment version validated
    version_number INTEGER NOT NULL,
    main_model_id TEXT NOT NULL,
    challenger_model_id TEXT,
    run_id TEXT NOT NULL,              -- the run that scored the data
    dataset_path TEXT NOT NULL,        -- as the user gave it (workspace-relative or absolute)
    dataset_sha256 TEXT NOT NULL,      -- of the file, or of the sorted files of a glob
    label_column TEXT NOT NULL,
    status TEXT NOT NULL,              -- queued | succeeded | failed
    error TEXT,
    report TEXT NOT NULL DEFAULT '{}', -- JSON: metrics, confusion/residuals, latency, slices
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);

CREATE TABLE gate_thresholds (
    deployment_id TEXT PRIMARY KEY,
    max_metric_drop DOUBLE NOT NULL,   -- accuracy, F1, ROC-AUC, R2: absolute (0.01 = 1 point)
    max_error_increase DOUBLE NOT NULL,-- MAE, RMSE: relative (0.01 = 1 %)
    latency_budget_ms DOUBLE NOT NULL, -- single-row p99
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
