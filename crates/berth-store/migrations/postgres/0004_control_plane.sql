-- The control plane's catalogue: customers and API tokens (stored hashed), what agents report
-- (heartbeats, templates), offerings, instances (an order becomes one), operation events (the
-- stage list), the nonces of signed requests (shared by every replica) and idempotency keys.
-- Offerings and instances keep their request as JSON the server validates; the store keeps
-- only what it filters, joins or fences on as columns.
CREATE TABLE customers (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE TABLE api_tokens (
    token_hash TEXT    PRIMARY KEY,
    role       TEXT    NOT NULL CHECK (role IN ('operator', 'provider', 'customer')),
    subject    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT  NOT NULL
);
CREATE TABLE agent_status (
    agent_id   TEXT    PRIMARY KEY REFERENCES agents (id),
    seen_at    BIGINT  NOT NULL,
    report     TEXT    NOT NULL
);
CREATE TABLE agent_templates (
    agent_id    TEXT    NOT NULL REFERENCES agents (id),
    backend     TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    reported_at BIGINT  NOT NULL,
    PRIMARY KEY (agent_id, backend, template_id)
);
CREATE TABLE offerings (
    id           TEXT    PRIMARY KEY,
    provider_id  TEXT    NOT NULL REFERENCES providers (id),
    body         TEXT    NOT NULL,
    withdrawn_at BIGINT,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX offerings_provider ON offerings (provider_id);
CREATE TABLE instances (
    id          TEXT    PRIMARY KEY,
    provider_id TEXT    NOT NULL REFERENCES providers (id),
    customer_id TEXT    NOT NULL REFERENCES customers (id),
    offering_id TEXT    NOT NULL REFERENCES offerings (id),
    status      TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE INDEX instances_provider ON instances (provider_id, status);
CREATE INDEX instances_customer ON instances (customer_id);
CREATE TABLE operation_events (
    operation_id TEXT    NOT NULL,
    seq          BIGINT  NOT NULL,
    at           BIGINT  NOT NULL,
    event        TEXT    NOT NULL,
    PRIMARY KEY (operation_id, seq)
);
CREATE TABLE nonces (
    keyid      TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL,
    PRIMARY KEY (keyid, nonce)
);
CREATE INDEX nonces_expiry ON nonces (expires_at);
CREATE TABLE idempotency_keys (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    status      BIGINT,
    response    TEXT,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);
