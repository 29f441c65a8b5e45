-- Permission approvals: a team's agent asked to use a tool and its team
-- says `grantPermission: ask`. Pending until someone decides, the timeout
-- passes or the process is gone (then `expired`; never left pending).
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    session_id TEXT NOT NULL,
    turn_id TEXT,
    tool_name TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,            -- pending | allowed | denied | expired
    reason TEXT,
    updated_input TEXT,
    decided_by TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER
);
CREATE INDEX approvals_status ON approvals (status, created_at);
CREATE INDEX approvals_team ON approvals (team, created_at);
