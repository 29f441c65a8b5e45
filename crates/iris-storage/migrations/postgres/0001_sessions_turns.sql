-- PostgreSQL version of sqlite/0001_sessions_turns.sql (and so on for every
-- migration here): INTEGER is BIGINT (flags stay 0/1), REAL is DOUBLE
-- PRECISION, and foreign keys are DEFERRABLE INITIALLY IMMEDIATE so a
-- transaction that re-keys rows can SET CONSTRAINTS ALL DEFERRED.

-- Sessions: one conversation between a caller and a team. The id is the
-- agent's own session id (Claude's --session-id / --resume).
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    from_team     TEXT NOT NULL,
    to_team       TEXT NOT NULL,
    is_default    BIGINT NOT NULL DEFAULT 0,
    fork_of       TEXT,
    started       BIGINT NOT NULL DEFAULT 0,
    message_count BIGINT NOT NULL DEFAULT 0,
    process_state TEXT NOT NULL DEFAULT 'stopped',
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX sessions_default_pair ON sessions (from_team, to_team) WHERE is_default = 1;
CREATE INDEX sessions_to_team ON sessions (to_team);

-- Turns: one user message and everything the agent emitted until its result.
CREATE TABLE turns (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
    from_team      TEXT NOT NULL,
    to_team        TEXT NOT NULL,
    kind           TEXT NOT NULL DEFAULT 'message',
    status         TEXT NOT NULL,
    request        TEXT NOT NULL,
    response       TEXT,
    error          TEXT,
    tool_uses      TEXT,
    usage          TEXT,
    cost_usd       DOUBLE PRECISION,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    completed_at   BIGINT,
    events_dropped BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX turns_session ON turns (session_id, created_at);
CREATE INDEX turns_to_team ON turns (to_team, created_at);
CREATE INDEX turns_status ON turns (status);

-- Raw agent events of a turn, bounded per turn.
CREATE TABLE turn_events (
    turn_id TEXT NOT NULL REFERENCES turns (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (turn_id, seq)
);
