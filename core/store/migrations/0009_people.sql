-- People (issue 16): local accounts, login sessions, failed-login counters, project
-- collaborators with a role, datasets owned by a project, audit entries about something other
-- than a deployment. The first admin of an existing workspace is created by
-- users.ensure_admin at the next start, which also makes it the owner of every project.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,     -- lower case, [a-z0-9._-]; never contains ':'
    display_name TEXT NOT NULL,
    email TEXT,                        -- maps an OIDC login (st.login) to this account
    password_hash TEXT,                -- argon2id PHC string; NULL: no local password
    role TEXT NOT NULL,                -- admin | member
    disabled BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP,
    password_changed_at TIMESTAMP
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,               -- SHA-256 of the token; the token itself is never stored
    user_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,   -- for the idle limit
    expires_at TIMESTAMP NOT NULL,     -- the absolute limit
    client TEXT NOT NULL DEFAULT '',
    ended_at TIMESTAMP,
    end_reason TEXT
);

CREATE TABLE login_failures (
    key TEXT PRIMARY KEY,              -- 'user:<name as typed>' or 'client:<address>'
    failures INTEGER NOT NULL,
    last_failed_at TIMESTAMP NOT NULL,
    blocked_until TIMESTAMP
);

CREATE TABLE collaborators (
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,                -- owner | editor | viewer
    added_by TEXT NOT NULL,
    added_at TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, user_id)
);

ALTER TABLE datasets ADD COLUMN project_id TEXT;
UPDATE datasets SET project_id = coalesce(
    (SELECT min(e.project_id) FROM experiments e WHERE e.dataset_id = datasets.id),
    'prj_default');

-- What an entry is about when it is not a deployment: 'user bob', 'project Demo'.
ALTER TABLE audit_log ADD COLUMN subject TEXT DEFAULT '';
UPDATE audit_log SET subject = '' WHERE subject IS NULL;

-- A run keeps its project, so who may read it is known after its deployment is deleted.
ALTER TABLE runs ADD COLUMN project_id TEXT;
UPDATE runs SET project_id = (SELECT d.project_id FROM deployments d WHERE d.id = runs.deployment_id);
