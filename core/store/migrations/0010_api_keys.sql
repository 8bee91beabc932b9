-- API keys (issue 17): a user's bearer secrets for the REST API. Only an HMAC-SHA256 of each
-- key is stored, keyed with the workspace's secret file (<store>.api-secret); `shown` is the
-- key's first characters, enough to recognise it in a list. A key may be limited to one
-- deployment. Revoked keys stay listed (who revoked them, when).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    shown TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    deployment_id TEXT,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP,
    revoked_by TEXT
);
