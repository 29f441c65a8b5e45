-- The nodes of a cluster (several `iris serve` on one database): each
-- writes its heartbeat here, and a node's work carries its id, so a node
-- that starts again recovers its own work and nobody else's.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    advertise_url TEXT,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at BIGINT
);
-- The node that ran the turn, asked for the approval, ran the process
-- (NULL: written before nodes had ids, or by a one-shot command).
ALTER TABLE turns ADD COLUMN node_id TEXT;
ALTER TABLE approvals ADD COLUMN node_id TEXT;
ALTER TABLE sessions ADD COLUMN node_id TEXT;
