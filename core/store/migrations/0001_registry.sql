-- Projects, datasets and the model registry (project > experiment > version > model).
-- No FOREIGN KEY clauses: DuckDB forbids updating a row that a foreign key references, which
-- would block renames and status changes later, so core/registry.py checks references instead.
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,            -- demo | upload | path
    source TEXT NOT NULL,          -- demo name, original file name, or path/glob
    snapshot_path TEXT NOT NULL,   -- Parquet snapshot, relative to the workspace
    sha256 TEXT NOT NULL,
    n_rows BIGINT NOT NULL,
    columns TEXT NOT NULL,         -- JSON list of {name, dtype}
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE experiments (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    target TEXT NOT NULL,
    task TEXT NOT NULL,            -- binary | multiclass | regression
    features TEXT NOT NULL,        -- JSON list of column names
    key_column TEXT,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE versions (
    id TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    dataset_id TEXT NOT NULL,
    settings TEXT NOT NULL,        -- JSON: features, key, algorithms, split, seed
    created_at TIMESTAMP NOT NULL,
    UNIQUE (experiment_id, number)
);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    version_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    task TEXT NOT NULL,
    origin TEXT NOT NULL,          -- trained | imported
    params TEXT NOT NULL,          -- JSON
    metrics TEXT NOT NULL,         -- JSON, holdout metrics
    schema TEXT NOT NULL,          -- JSON, input schema
    profile TEXT NOT NULL,         -- JSON, training profile
    artifact_path TEXT NOT NULL,   -- relative to the workspace
    artifact_format TEXT NOT NULL, -- joblib | skops
    trusted_types TEXT NOT NULL,   -- JSON list the user approved at import (skops)
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    train_seconds DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Every experiment belongs to a project: a default one always exists.
INSERT INTO projects VALUES ('prj_default', 'Default', 'The project experiments go to unless another is chosen.', now() AT TIME ZONE 'UTC');
