-- Which node runs each team's processes: a lease on the database's clock
-- with a fencing token that grows each time it changes hands.
CREATE TABLE team_leases (
    team TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
