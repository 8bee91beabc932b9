-- Ground truth: sets of true labels a user added to a deployment, keyed by the prediction key.
-- The labels themselves are an immutable Parquet file (key TEXT, label) under
-- labels/<deployment_id>/; this row points at it. A later set overrides an earlier one for
-- the keys they share.
CREATE TABLE ground_truth (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    deployment_name TEXT NOT NULL,
    path TEXT NOT NULL,                -- workspace-relative Parquet file
    source TEXT NOT NULL,              -- JSON: the source block the labels were read from
    key_column TEXT NOT NULL,          -- the source's key column
    label_column TEXT NOT NULL,        -- the source's label column
    rows BIGINT NOT NULL,              -- labels stored (rows with a label)
    counts TEXT NOT NULL,              -- JSON: matched, unmatched, without label, at upload
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
