-- Incremental sources: the files each run scored. A file counts as seen only through a
-- succeeded run (joined on runs.status), so a failed run's files are scored again next time.
-- A file is identified by its path (workspace-relative, or absolute outside the workspace),
-- size and modification time: a stat, where a content hash would read every file of the
-- glob at every run.
CREATE TABLE run_files (
    run_id TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, path)
);
CREATE INDEX run_files_deployment ON run_files (deployment_id);
