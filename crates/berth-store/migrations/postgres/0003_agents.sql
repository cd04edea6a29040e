-- Providers, their agents (Ed25519 public keys) and the single-use, expiring enrollment tokens
-- that bind an agent's key to a provider. Tokens are stored only as SHA-256 hashes.
CREATE TABLE providers (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE TABLE enrollment_tokens (
    token_hash  TEXT    PRIMARY KEY,
    provider_id TEXT    NOT NULL REFERENCES providers (id),
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT,
    created_at  BIGINT  NOT NULL
);
CREATE TABLE agents (
    id          TEXT    PRIMARY KEY,
    provider_id TEXT    NOT NULL REFERENCES providers (id),
    name        TEXT    NOT NULL,
    public_key  TEXT    NOT NULL UNIQUE,
    revoked_at  BIGINT,
    created_at  BIGINT  NOT NULL
);
