-- Instances placed on a chosen agent (the dashboard's wizard, `berth instance create`): no
-- offering, and for a provider's own machines no customer. Every operation of such an instance
-- is claimable only by that agent (operations.agent_id). SQLite cannot drop NOT NULL in place:
-- the table is rebuilt (nothing references it).
CREATE TABLE instances_new (
    id          TEXT    PRIMARY KEY,
    provider_id TEXT    NOT NULL REFERENCES providers (id),
    customer_id TEXT    REFERENCES customers (id),
    offering_id TEXT    REFERENCES offerings (id),
    agent_id    TEXT    REFERENCES agents (id),
    status      TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
INSERT INTO instances_new (id, provider_id, customer_id, offering_id, status, request, state, created_at, updated_at)
    SELECT id, provider_id, customer_id, offering_id, status, request, state, created_at, updated_at FROM instances;
DROP TABLE instances;
ALTER TABLE instances_new RENAME TO instances;
CREATE INDEX instances_provider ON instances (provider_id, status);
CREATE INDEX instances_customer ON instances (customer_id);
ALTER TABLE operations ADD COLUMN agent_id TEXT;
