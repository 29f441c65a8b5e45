-- Who sent each message (the caller's identity: `key:…`, `user:…`,
-- `agent:…`, `local`), for the history; NULL for turns from before.
ALTER TABLE turns ADD COLUMN caller TEXT;

-- Jobs: a turn handed to a team with `execute`, kept until it ends and its
-- webhooks are written. The turn (same id) holds status, request, result.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY REFERENCES turns (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
    team            TEXT NOT NULL,
    priority        TEXT NOT NULL,           -- high | normal | low
    timeout_ms      BIGINT,                  -- the running turn's limit
    callback        TEXT,                    -- JSON {url, method, headers, secret}
    caller          TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT,                    -- SHA-256 of the request, for Idempotency-Key
    attempts        BIGINT NOT NULL DEFAULT 1,
    -- Its end was written with its webhook deliveries: nothing left to do.
    notified        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (caller, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_open ON jobs (notified, created_at);

-- Webhook subscriptions managed by admins.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,               -- JSON array of event names or "*"
    secret      TEXT NOT NULL,
    active      BIGINT NOT NULL DEFAULT 1,
    description TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One payload to one destination, tried until it is delivered or the
-- attempts run out. The body is signed at each attempt with the secret of
-- its webhook (or of the job's callback, or the server's).
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT,                    -- NULL for a job's callback
    job_id          TEXT,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    method          TEXT NOT NULL,
    headers         TEXT,                    -- JSON object
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,           -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- Attempts allowed in all; a manual redelivery grants another round.
    max_attempts    BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    response_status BIGINT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
    n               BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    response_status BIGINT,
    error           TEXT,
    PRIMARY KEY (delivery_id, n)
);
