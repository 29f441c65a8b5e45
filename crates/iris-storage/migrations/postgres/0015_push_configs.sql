-- A2A push notification configs: where each state change of a task (a
-- turn) is POSTed, with the client's token and credential.
CREATE TABLE push_configs (
    id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    team TEXT NOT NULL,
    url TEXT NOT NULL,
    token TEXT,
    auth_scheme TEXT,
    auth_credentials TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, id)
);
