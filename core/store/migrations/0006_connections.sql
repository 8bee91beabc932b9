-- PostgreSQL connections, per project; pipelines' postgres sources and sinks name one.
-- The password is never stored in plain text: either the name of an environment variable
-- (password_kind 'env') or a Fernet token encrypted with the workspace key, a file beside
-- the store that never enters it (password_kind 'encrypted'); 'none' for trust/peer auth.
CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    database TEXT NOT NULL,
    user_name TEXT NOT NULL,
    sslmode TEXT NOT NULL,             -- disable | allow | prefer | require | verify-ca | verify-full
    password_kind TEXT NOT NULL,       -- env | encrypted | none
    password_ref TEXT NOT NULL,        -- the variable's name, the Fernet token, or ''
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (project_id, name)
);
