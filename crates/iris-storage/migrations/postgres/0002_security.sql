-- API keys: only the SHA-256 of a key is stored; `prefix` is its start,
-- shown in listings and accepted by `iris key revoke|rotate`.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,          -- JSON array
    teams         TEXT,                   -- JSON array; NULL: every team
    rate_limit    TEXT,                   -- "100/min"; NULL: the default
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    usage_count   BIGINT NOT NULL DEFAULT 0,
    rotated_to    TEXT
);

-- People. Passwords are argon2id PHC strings; backup codes are SHA-256 hashes.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    email          TEXT UNIQUE,
    password_hash  TEXT NOT NULL,
    roles          TEXT NOT NULL,          -- JSON array
    scopes         TEXT NOT NULL,          -- JSON array: extra scopes
    teams          TEXT,                   -- JSON array; NULL: every team
    status         TEXT NOT NULL,          -- active | disabled
    failed_logins  BIGINT NOT NULL DEFAULT 0,
    locked_until   BIGINT,
    mfa_secret     TEXT,
    mfa_enabled    BIGINT NOT NULL DEFAULT 0,
    backup_codes   TEXT NOT NULL DEFAULT '[]',
    token_version  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    last_login_at  BIGINT
);

-- Refresh tokens (hashed). A family is one login; reusing a spent token
-- revokes the whole family.
CREATE TABLE refresh_tokens (
    hash        TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
    family      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- The audit trail: `seq` is contiguous; each record's `hash` covers its
-- fields and the previous record's hash.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    id          TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    actor       TEXT,
    actor_kind  TEXT,
    action      TEXT NOT NULL,
    resource    TEXT,
    team        TEXT,
    result      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);

-- Where the retained chain starts (after pruning) and where it ends, so a
-- removed first or last record is noticed.
CREATE TABLE audit_anchor (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    first_seq   BIGINT NOT NULL,
    first_prev  TEXT NOT NULL,
    last_seq    BIGINT NOT NULL,
    last_hash   TEXT NOT NULL
);

-- Secrets and counters of the auth layer (the JWT signing secret, the
-- revision other processes watch to reload their caches).
CREATE TABLE auth_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
