-- The agent's own transcript of a conversation (Claude Code's session
-- file), saved after each turn: a node that never ran the conversation,
-- or one whose agent lost its files, restores it before resuming.
CREATE TABLE transcripts (
    session_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    agent TEXT NOT NULL,
    -- The absolute working folder it was written in (Claude Code names
    -- the file after it).
    folder TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    node_id TEXT
);
