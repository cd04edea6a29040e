-- Bounded lists: pages in creation order, read from an index.
CREATE INDEX instances_customer_page ON instances (customer_id, created_at, id);
CREATE INDEX instances_provider_page ON instances (provider_id, created_at, id);
CREATE INDEX instances_page ON instances (created_at, id);
CREATE INDEX offerings_page ON offerings (provider_id, created_at, id);
-- Expired idempotency keys are swept by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- An account's own quotas (NULL: the server's default), set by an operator.
CREATE TABLE quotas (
    account_id        TEXT   PRIMARY KEY,
    instances         BIGINT,
    pending_instances BIGINT,
    offerings         BIGINT,
    tokens            BIGINT,
    updated_at        BIGINT NOT NULL
);

-- API tokens may expire (NULL: until revoked).
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
