-- Browser sessions of the dashboard: made by signing in with an API token, stored only as the
-- hash of their secret, ending at expires_at, at sign-out, or when their token is revoked.
CREATE TABLE sessions (
    session_hash TEXT    PRIMARY KEY,
    token_hash   TEXT    NOT NULL REFERENCES api_tokens (token_hash),
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
