-- Keys a customer saves on their account: SSH public keys to pick at order time, and the age
-- public key their machines' credentials are sealed to. Public halves only.
CREATE TABLE customer_keys (
    id          TEXT    PRIMARY KEY,
    customer_id TEXT    NOT NULL REFERENCES customers (id),
    kind        TEXT    NOT NULL CHECK (kind IN ('ssh', 'age')),
    name        TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX customer_keys_customer ON customer_keys (customer_id, created_at);
